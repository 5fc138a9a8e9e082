"""The training engine and the two-stage runner on tiny generated AID/RSSCN7 look-alikes."""

import json
import math

import pytest
import torch

from da import records
from da.config import RunConfig, stage1_config
from da.data.registry import RSSCN7
from da.train import NonFiniteLossError, run_dir_for, run_experiment, train_stage
from da.train import checkpoint
from da.rundir import BEST_FILE, CHECKPOINT_FILE



def tiny_cfg(root, out, **kw) -> RunConfig:
    base = dict(data_root=str(root), out=str(out), weights="none", img_size=32, batch_size=8, epochs=3,
                stage1_epochs=1, max_steps_per_epoch=2, num_workers=0, progress=False, eval_batch_size=64,
                val_fraction=0.25)
    base.update(kw)
    return RunConfig(**base)


def load(path):
    return json.loads(open(path).read())


def test_two_stage_run_record_contract_and_stage1_reuse(tiny_root, tmp_path, capsys):
    cfg = tiny_cfg(tiny_root, tmp_path, method="coral")
    path = run_experiment(cfg)
    rec = records.load_record(path)
    assert rec["stage"] == 2 and rec["config_hash"] == cfg.config_hash() and rec["seed"] == 0
    assert len(rec["epochs"]) == 3 and rec["config"]["method"] == "coral"
    # the reported numbers are those of the epoch chosen on source validation accuracy alone
    val = [e["source_val"]["accuracy"] for e in rec["epochs"]]
    assert rec["selected_epoch"] == val.index(max(val)) + 1
    chosen = rec["epochs"][rec["selected_epoch"] - 1]
    assert rec["target_test"]["accuracy"] == chosen["target_test"]["accuracy"]
    assert set(rec["target_test"]) >= {"accuracy", "macro_f1", "per_class", "confusion"}
    assert list(rec["target_test"]["per_class"]) == list(RSSCN7.classes)
    assert sum(map(sum, rec["target_test"]["confusion"])) == rec["split_sizes"]["target_test"]
    # every epoch keeps its confusion matrix (tables at an epoch chosen after training); the kept one is the record's
    assert all(sum(map(sum, e["target_test"]["confusion"])) == rec["split_sizes"]["target_test"] for e in rec["epochs"])
    assert rec["epochs"][rec["selected_epoch"] - 1]["target_test"]["confusion"] == rec["target_test"]["confusion"]
    tgt = [e["target_test"]["accuracy"] for e in rec["epochs"]]
    assert rec["oracle"]["target_test"]["accuracy"] == max(tgt)
    assert "coral" in rec["epochs"][0]["loss"] and rec["images_per_s"] > 0
    assert rec["torch_threads"] == torch.get_num_threads()
    assert rec["peak_memory_mb"]["rss"] > 100 and rec["peak_memory_mb"]["cuda_allocated"] is None
    assert rec["init_weights"].endswith(BEST_FILE) and rec["prefix_stages_cached"] > 0
    s1_dir = run_dir_for(stage1_config(cfg), 1)
    assert records.is_done(s1_dir) and str(s1_dir) in rec["init_weights"]
    assert capsys.readouterr().out.count("stage 1: training") == 1
    # a second method with the same stage-1 settings reuses stage 1
    s1_record = (s1_dir / records.RECORD_FILE).read_bytes()
    run_experiment(cfg.replace(method="mmd", seed=1))
    assert "stage 1: reused" in capsys.readouterr().out
    assert (s1_dir / records.RECORD_FILE).read_bytes() == s1_record
    # the frozen-prefix cache was computed once and then read back
    assert all(load(run_dir_for(cfg.replace(method="mmd", seed=1), 2) / "record.json")["cache_hits"].values())


def _metrics(rec):
    return [(e["loss"], e["source_val"], e["target_test"]) for e in rec["epochs"]], rec["target_test"]


@pytest.mark.slow  # an end-to-end run: the default suite stays under 10 minutes on 2 slow cores
def test_same_seed_same_numbers(tiny_root, tmp_path):
    a = load(run_experiment(tiny_cfg(tiny_root, tmp_path / "a", method="mmd+im", stages=1)))
    b = load(run_experiment(tiny_cfg(tiny_root, tmp_path / "b", method="mmd+im", stages=1)))
    c = load(run_experiment(tiny_cfg(tiny_root, tmp_path / "c", method="mmd+im", stages=1, seed=5)))
    assert _metrics(a) == _metrics(b)
    assert _metrics(a) != _metrics(c)


class Kill(Exception):
    pass


def killed_then_resumed(cfg) -> dict:
    """Train ``cfg``'s stage 2, killed after its first epoch, then again from its checkpoint: the record."""

    def kill_after_first(epoch):
        if epoch == 1:
            raise Kill()

    with pytest.raises(Kill):
        train_stage(cfg, stage=2, on_epoch_end=kill_after_first)
    run_dir = run_dir_for(cfg, 2)
    assert not records.is_done(run_dir) and (run_dir / CHECKPOINT_FILE).exists()
    return load(train_stage(cfg, stage=2))


@pytest.mark.parametrize("strategy,cache_views", [("partial:3", 2), ("full", 0), ("gradual", 0),
                                                  pytest.param("lora:3:4", 2, marks=pytest.mark.slow)])
def test_resume_is_bit_identical(tiny_root, tmp_path, strategy, cache_views):
    kw = dict(method="coral+im", stages=1, strategy=strategy, cache_views=cache_views, dropout=0.2)
    ref_path = train_stage(tiny_cfg(tiny_root, tmp_path / "ref", **kw), stage=2)

    cfg = tiny_cfg(tiny_root, tmp_path / "cut", **kw)
    rec = killed_then_resumed(cfg)
    run_dir = run_dir_for(cfg, 2)
    ref = load(ref_path)
    assert rec["resumed"] == 1
    assert _metrics(rec) == _metrics(ref)
    a = checkpoint.load(run_dir / BEST_FILE)["model"]
    b = checkpoint.load(run_dir_for(tiny_cfg(tiny_root, tmp_path / "ref", **kw), 2) / BEST_FILE)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # an end-to-end run: the default suite stays under 10 minutes on 2 slow cores
def test_checkpoint_leaves_out_frozen_weights_and_resume_checks_them(tiny_root, tmp_path):
    cfg = tiny_cfg(tiny_root, tmp_path, method="source_only", stages=1, strategy="partial:2", cache_views=2)

    def kill_after_first(epoch):
        if epoch == 1:
            raise Kill()

    with pytest.raises(Kill):
        train_stage(cfg, stage=2, on_epoch_end=kill_after_first)
    path = run_dir_for(cfg, 2) / CHECKPOINT_FILE
    ckpt = checkpoint.load(path)
    from da.train.setup import build_run, load_splits

    run = build_run(cfg, 2, load_splits(cfg, 2), None)
    trained = {n for n, p in run.model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in run.model.named_parameters() if not p.requires_grad}
    assert trained and frozen and trained <= set(ckpt["model"]) and not frozen & set(ckpt["model"])
    assert {n for n, _ in run.model.named_buffers()} <= set(ckpt["model"])  # BatchNorm statistics move
    ckpt["frozen_digest"] = "0" * 64  # as if the weights the run starts from had been replaced
    checkpoint.save(path, ckpt)
    with pytest.raises(RuntimeError, match=f"frozen weights this run starts from .* remove {run_dir_for(cfg, 2)}"):
        train_stage(cfg, stage=2)


@pytest.mark.slow  # an end-to-end run: the default suite stays under 10 minutes on 2 slow cores
def test_nonfinite_loss_names_step_and_terms_and_keeps_checkpoint(tiny_root, tmp_path, monkeypatch):
    from da.methods.coral import CoralMethod

    cfg = tiny_cfg(tiny_root, tmp_path, method="coral", stages=1)
    real = CoralMethod.forward
    calls = {"n": 0}

    def poisoned(self, out):
        calls["n"] += 1
        terms = real(self, out)
        return {k: v * float("nan") for k, v in terms.items()} if calls["n"] == 4 else terms  # epoch 2, step 2

    monkeypatch.setattr(CoralMethod, "forward", poisoned)
    saved = {}

    def remember(epoch):
        saved[epoch] = (run_dir_for(cfg, 2) / CHECKPOINT_FILE).read_bytes()

    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 2.*coral=nan.*checkpoint .*checkpoint.pt is intact"):
        train_stage(cfg, stage=2, on_epoch_end=remember)
    assert (run_dir_for(cfg, 2) / CHECKPOINT_FILE).read_bytes() == saved[1]
    assert checkpoint.load(run_dir_for(cfg, 2) / CHECKPOINT_FILE)["state"]["epoch"] == 1
    assert not records.is_done(run_dir_for(cfg, 2))


@pytest.mark.slow  # an end-to-end run: the default suite stays under 10 minutes on 2 slow cores
def test_early_stopping_on_source_validation(tiny_root, tmp_path):
    # a frozen backbone, no bottleneck BatchNorm and lr 1e-9: nothing changes, so the source-val accuracy never improves after epoch 1
    rec = load(run_experiment(tiny_cfg(tiny_root, tmp_path, method="source_only", stages=1, epochs=6, patience=2,
                                       lr=1e-9, strategy="linear", bottleneck_dim=0)))
    assert rec["stopped_early"] and len(rec["epochs"]) == 3 and rec["selected_epoch"] == 1


@pytest.mark.slow  # an end-to-end run: the default suite stays under 10 minutes on 2 slow cores
def test_labeled_target_fraction_and_losses(tiny_root, tmp_path):
    rec = load(run_experiment(tiny_cfg(tiny_root, tmp_path, method="mmd", cls_loss="focal", stages=1,
                                       target_labeled_fraction=0.5, class_weighting="effective",
                                       schedule="restarts", warmup_epochs=0.5, source_sampling="class_balanced")))
    assert {"cls", "mmd", "target_cls"} <= set(rec["epochs"][0]["loss"])
    assert rec["config"]["source_sampling"] == "class_balanced"
    assert rec["split_sizes"]["target_labeled"] > 0
    assert all(math.isfinite(v) for e in rec["epochs"] for v in e["loss"].values())


@pytest.mark.parametrize("memory_format, compile_prefix, expect_cl", [
    pytest.param("channels_last", True, True, marks=pytest.mark.slow), ("auto", False, False)])
def test_memory_format_reaches_the_model_and_every_cached_batch(tiny_root, tmp_path, memory_format, compile_prefix,
                                                                expect_cl):
    from da.train.setup import build_run, load_splits

    cfg = tiny_cfg(tiny_root, tmp_path, method="coral", stages=1, memory_format=memory_format,
                   compile_prefix=compile_prefix)
    run = build_run(cfg, 2, load_splits(cfg, 2), None)
    conv = next(m for m in run.model.stages.modules()  # a weight whose two layouts differ
                if isinstance(m, torch.nn.Conv2d) and m.in_channels // m.groups > 1 and m.kernel_size[0] > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) == expect_cl
    assert run.data.start > 0  # a cached prefix
    for batches in (run.data.source, run.data.target, run.data.source_eval, run.data.target_eval):
        x, _ = next(iter(batches.epoch(0)))
        assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last) == expect_cl


@pytest.mark.slow  # an end-to-end run: the default suite stays under 10 minutes on 2 slow cores
def test_peak_memory_is_the_process_own_not_its_launcher():
    """getrusage's maxrss of a child counts its launcher's memory at fork (it survives exec); the record's
    peak (VmHWM) does not: a small run launched by a big process reports a small peak."""
    import subprocess
    import sys

    # 1.5 GB in the launcher: more than the child's own peak, which imports torch with da (about 0.6 GB)
    code = ("import numpy as np, resource, subprocess, sys; big = np.ones(1500 * 2**20 // 8); "
            "out = subprocess.run([sys.executable, '-c', 'from da.records import peak_memory_mb; "
            "import resource; print(peak_memory_mb()[\"rss\"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)'], "
            "capture_output=True, text=True, check=True).stdout; print(out)")
    child_peak, child_maxrss = map(float, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                         check=True).stdout.split())
    assert child_maxrss > 1500  # the launcher's 1.5 GB, inherited
    assert 0 < child_peak < 1000  # an interpreter that imported da.records (and with da, torch)


@pytest.mark.parametrize("cache_views", [pytest.param(2, marks=pytest.mark.slow), 0])
def test_target_batch_size_sets_the_unlabelled_target_batch_only(tiny_root, tmp_path, cache_views):
    from da.train.setup import build_run, load_splits

    cfg = tiny_cfg(tiny_root, tmp_path, method="mcc", stages=1, target_batch_size=4, cache_views=cache_views,
                   strategy="partial:2", target_labeled_fraction=0.5)
    run = build_run(cfg, 2, load_splits(cfg, 2), None)
    x_s, _ = next(iter(run.data.source.epoch(0)))
    x_t, idx = next(iter(run.data.target.epoch(0)))
    x_l, _ = next(iter(run.data.target_labeled.epoch(0)))
    assert (len(x_s), len(x_t), len(idx), len(x_l)) == (8, 4, 4, 8)
    if not cache_views:
        return
    # a whole run trains on them (the joint forward splits 8 + 4, labelled target images on their own)
    record = load(train_stage(cfg, stage=2))
    steps = cfg.epochs * cfg.max_steps_per_epoch
    assert record["images_per_s"] > 0 and len(record["epochs"]) == cfg.epochs
    assert math.isclose(record["images_per_s"] * record["train_time_s"], steps * (8 + 4), rel_tol=0.05)
