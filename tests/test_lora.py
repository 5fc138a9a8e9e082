"""LoRA as a fine-tuning strategy (issue 32, da/models/lora.py): the base weights do not move, the adapted model
starts as the base model (B = 0), the merged weights give the unmerged model's outputs, a LoRA stage 2 shares
its partial:K stage 1, and a finished LoRA run is read by export, prediction and evaluation as any other."""

import json

import pytest
import torch

from da.config import ConfigError, RunConfig, stage1_config
from da.models import apply_strategy, build_model, build_optimizer, frozen_prefix_length, param_groups
from da.models.lora import count_parameters, merged_state_dict, target_names
from da.train import run_experiment

ARCH = "timm:tf_efficientnet_lite0"


def _model(strategy="lora:3:4", seed=0, **lora):
    torch.manual_seed(seed)
    model = build_model(ARCH, 5, weights="none", bottleneck_dim=16)
    apply_strategy(model, strategy, **lora)
    return model


def test_adapted_layers_are_the_ungrouped_convolutions_and_linear_layers_of_the_last_k_stages():
    model = build_model(ARCH, 5, weights="none")
    n = len(model.stages)
    names = target_names(model, range(n - 3, n))
    modules = dict(model.named_modules())
    assert names and all(int(name.split(".")[1]) >= n - 3 for name in names)
    assert all(modules[name].groups == 1 for name in names if isinstance(modules[name], torch.nn.Conv2d))
    depthwise = [name for name, m in modules.items() if isinstance(m, torch.nn.Conv2d) and m.groups > 1
                 and name.startswith(f"stages.{n - 3}")]
    assert depthwise and not set(depthwise) & set(names)  # peft cannot merge into them: left frozen
    # Lite0's ungrouped convolutions there are all 1x1; a ResNet's 3x3 ones are left out by "pointwise"
    resnet = build_model("timm:test_resnet", 5, weights="none")
    n = len(resnet.stages)
    every, pointwise = target_names(resnet, range(n - 2, n)), target_names(resnet, range(n - 2, n), "pointwise")
    kernels = {name: m.kernel_size for name, m in resnet.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert set(pointwise) < set(every) and {kernels[p] for p in pointwise if p in kernels} == {(1, 1)}
    assert (3, 3) in {kernels[p] for p in every if p in kernels}


def test_starts_as_the_base_model_and_only_adapters_and_head_move():
    x = torch.randn(4, 3, 48, 48)
    base = _model("linear")
    model = _model("lora:3:4")  # same seed: the same base weights, then the adapters
    base.eval(), model.eval()
    with torch.no_grad():
        assert torch.equal(base(x)[0], model(x)[0])  # B = 0: the update is exactly zero
    counts = count_parameters(model)
    head = sum(p.numel() for p in model.head.parameters())
    assert counts["trainable"] == counts["adapters"] + head and 0 < counts["adapters"] < counts["total"] // 10
    before = {k: v.clone() for k, v in model.state_dict().items()}
    groups = param_groups(model, lr=1e-2, backbone_lr_factor=0.1)
    assert [g["name"] for g in groups] == ["backbone_decay", "backbone_no_decay", "adapter_decay", "head_decay",
                                           "head_no_decay"]
    adapter = next(g for g in groups if g["name"] == "adapter_decay")
    assert adapter["lr"] == 1e-2 and all(p.requires_grad for p in adapter["params"])
    opt = build_optimizer("adamw", groups, lr=1e-2, weight_decay=0.01)
    model.train()
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(x)[0], torch.tensor([0, 1, 2, 3]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    moved = {k for k in after if not torch.equal(after[k], before[k])}
    # every frozen weight and every BatchNorm statistic of the backbone bit-equal; adapters and head moved
    assert all(".lora_" in k or k.startswith("head.") for k in moved), sorted(moved)[:5]
    assert any(".lora_B." in k for k in moved) and any(k.startswith("head.") for k in moved)


def test_merged_weights_give_the_unmerged_models_outputs():
    model = _model("lora:3:4", lora_alpha=8.0)
    for name, p in model.named_parameters():
        if ".lora_B." in name:
            torch.nn.init.normal_(p, std=0.05)  # an adapter that has trained
    merged = merged_state_dict(model)
    assert not any("lora_" in k or "base_layer" in k for k in merged)
    plain = build_model(ARCH, 5, weights="none", bottleneck_dim=16)
    plain.load_state_dict(merged)  # the base structure and names: strict loading
    x = torch.randn(3, 3, 48, 48)
    model.eval(), plain.eval()
    with torch.no_grad():
        a, b = model(x)[0], plain(x)[0]
        assert not torch.equal(a, _model("linear")(x)[0])  # the adapters changed the function
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_config_forms_and_a_shared_stage1():
    lora = RunConfig(strategy="lora:3:8", stage1_strategy="partial:3")
    assert stage1_config(lora).config_hash() == stage1_config(RunConfig()).config_hash()
    assert stage1_config(RunConfig(strategy="lora:3:8")).config_hash() != stage1_config(RunConfig()).config_hash()
    # '' and the run's own strategy are the same run
    assert RunConfig(stage1_strategy="partial:3").config_hash() == RunConfig().config_hash()
    assert RunConfig(strategy="lora:3:8").config_hash() != RunConfig(strategy="lora:3:4").config_hash()
    for kw, field in ((dict(strategy="lora:3"), "strategy"), (dict(strategy="lora:3:0"), "strategy"),
                      (dict(stage1_strategy="half"), "stage1_strategy"),
                      (dict(lora_alpha=16.0), "lora_alpha"),  # a LoRA setting without a LoRA strategy
                      (dict(strategy="lora:3:8", lora_targets="depthwise"), "lora_targets"),
                      (dict(strategy="lora:3:8", lora_dropout=1.0), "lora_dropout")):
        with pytest.raises(ConfigError) as err:
            RunConfig(**kw).validate()
        assert err.value.field == field
    model = _model("lora:2:4")
    assert frozen_prefix_length(model, "lora:2:4") == len(model.stages) - 2


def test_a_lora_run_is_read_as_any_other_and_records_its_parameters(tiny_root, tmp_path):
    from da.deploy.evaluate import evaluate_run
    from da.deploy.load import load_run

    # no prefix cache: the record's accuracy is then computed in float32 as the evaluation's
    cfg = RunConfig(data_root=str(tiny_root), out=str(tmp_path), weights="none", img_size=32, batch_size=8, epochs=2,
                    stage1_epochs=1, max_steps_per_epoch=2, num_workers=0, eval_batch_size=64, val_fraction=0.25,
                    method="source_only", strategy="lora:3:4", stage1_strategy="partial:3", cache_views=0, lr=0.05)
    record = json.loads(open(run_experiment(cfg)).read())
    params = record["parameters"]
    assert 0 < params["adapters"] < params["trainable"] < params["total"]
    from da.results.strategies import parameter_counts
    assert parameter_counts(record["config"], len(record["classes"])) == params  # what the tables compute
    run = load_run(tmp_path / f"stage2-{cfg.config_hash()}")  # best_model.pt: merged, the base structure
    scored, _ = evaluate_run(run, "RSSCN7", tiny_root, split="test")
    assert scored["metrics"]["accuracy"] == pytest.approx(record["target_test"]["accuracy"], abs=1e-9)


@pytest.mark.slow
def test_the_benchmark_runs_and_reports_each_strategy_beside_partial(tiny_root, tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    out = tmp_path / "lora.txt"
    res = subprocess.run([sys.executable, str(REPO / "experiments" / "bench_lora.py"), "--data-root", str(tiny_root),
                          "--steps", "1", "--repeats", "1", "--batch-size", "4", "--img-size", "32", "--no-memory", "--cache-root", str(tmp_path / "runs"),
                          "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = {line.split()[0]: line.split() for line in out.read_text().splitlines() if line.startswith(("partial", "lora"))}
    assert set(rows) == {"partial:3", "lora:3:4", "lora:3:16"} and rows["partial:3"][2] == "1.00x"
    adapters = {s: int(r[4].replace(",", "")) for s, r in rows.items() if s.startswith("lora")}
    assert 0 < adapters["lora:3:4"] * 4 == adapters["lora:3:16"]  # A and B both grow with the rank


def test_committed_strategy_table_and_what_results_readme_says_of_it(tmp_path):
    """results/lora/tables/strategies.md regenerates from the committed records, and the numbers the results
    README quotes are the table's and the benchmark's."""
    import warnings

    from conftest import REPO
    from da.results.load import load_runs
    from da.results.strategies import render_strategy_table, strategy_table

    committed = (REPO / "results" / "lora" / "tables" / "strategies.md").read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = load_runs(REPO / "results" / "lora" / "runs", strict=True)
    table = strategy_table(runs)
    caption = committed.split("\n\n")[0]
    assert render_strategy_table(table, caption) == committed
    lora = table[table["strategy"] != "partial:3"]
    diffs = sorted(round(p.mean, 1) for p in lora["paired"])
    assert diffs[0] == -1.3 and diffs[-1] == -0.7 and not any(p.excludes_zero for p in lora["paired"])
    ratio = table["trainable"].max() / table.loc[table["strategy"] == "lora:3:4", "trainable"].iloc[0]
    text = " ".join((REPO / "results" / "README.md").read_text().split())
    assert f"LoRA trains {ratio:.1f} times fewer parameters" in text
    assert "every LoRA row is 0.7 to 1.3 points below partial:3" in text
    bench = (REPO / "results" / "benchmarks" / "lora.txt").read_text()
    rows = {line.split()[0]: line.split() for line in bench.splitlines() if line.startswith(("partial:3 ", "lora:3:4 "))
            and "x" in line}
    assert f"takes {rows['lora:3:4'][2][:-1]}x the time of partial:3's ({rows['lora:3:4'][1]} against " \
           f"{rows['partial:3'][1]} s" in text
    assert f"checkpoint is {rows['lora:3:4'][5]} MB against {rows['partial:3'][5]} MB" in text
    sizes = {line.split()[0]: line.split()[5] for line in bench.splitlines() if line.startswith(("partial:3 ", "lora:"))
             and "x" in line}
    assert (f"{sizes['lora:3:4']} MB at rank 4 and {sizes['lora:3:16']} MB at rank 16, against {sizes['partial:3']} MB "
            f"for `partial:3`") in text
    rss = [int(line.split()[1]) / 1000 for line in bench.splitlines() if line.startswith(("partial:3 ", "lora:"))
           and line.rstrip().endswith("MB") and "x" not in line]
    assert len(rss) == 3 and f"({min(rss):.2f} to {max(rss):.2f} GB for the three" in text
