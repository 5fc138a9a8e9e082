"""RunConfig: rebuilding from dicts, checks that name the flag, and the MixUp/CutMix rule."""

import pytest

from da.config import ConfigError, RunConfig


def test_from_dict_round_trips_tuples_and_defaults_missing_fields():
    cfg = RunConfig(mmd_kernel_scales=(1.0, 2.0), rank_validators=("snd", "dev"), method="dann")
    back = RunConfig.from_dict(cfg.to_dict())  # JSON turns tuples into lists
    assert back == cfg and back.config_hash() == cfg.config_hash()
    assert isinstance(back.mmd_kernel_scales, tuple) and isinstance(back.rank_validators, tuple)
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("selection", "rank_validators")}
    assert RunConfig.from_dict(old).selection == "source_acc"


@pytest.mark.parametrize("strategy,cache_views,ok", [
    ("linear", 0, True), ("partial:2", 0, True), ("full", 2, True), ("gradual", 2, True),
    ("linear", 2, False), ("partial:2", 1, False)])
def test_mixup_is_refused_only_with_a_cached_prefix(strategy, cache_views, ok):
    cfg = RunConfig(strategy=strategy, cache_views=cache_views, mixup_alpha=0.2)
    if ok:
        cfg.validate()
    else:
        with pytest.raises(ValueError, match="set --cache-views 0"):
            cfg.validate()


def test_method_widths_must_be_positive():
    with pytest.raises(ValueError, match="--dann-hidden must be >= 1"):
        RunConfig(method="dann", dann_hidden=0).validate()


@pytest.mark.parametrize("fields,message", [
    ({"freeze_bn": "false"}, "--freeze-bn expects true or false, got 'false'"),
    ({"epochs": 2.5}, "--epochs expects an integer, got 2.5"),
    ({"lr": "1e-3"}, "--lr expects a number, got '1e-3' (a string: YAML 1.1"),
    ({"batch_size": 8.5}, "--batch-size expects an integer, got 8.5"),
    ({"method": None}, "--method expects text, got None"),
    ({"max_steps_per_epoch": -1}, "--max-steps-per-epoch must be >= 0, got -1"),
    ({"patience": -1}, "--patience must be >= 0, got -1"),
    ({"clip_grad_norm": float("nan")}, "--clip-grad-norm must be a finite number, got nan"),
    ({"img_size": 1}, "--img-size must be >= 32, got 1"),
    ({"lr": float("inf")}, "--lr must be a finite number, got inf"),
    ({"warmup_epochs": float("nan")}, "--warmup-epochs must be a finite number"),
    ({"eval_batch_size": 0}, "--eval-batch-size must be >= 1, got 0"),
    ({"seed": True}, "--seed expects an integer, got True"),
    ({"mmd_kernel_scales": (1.0, -2.0)}, "--mmd-kernel-scales must all be > 0"),
    ({"rank_validators": ()}, "--rank-validators expects a non-empty list of texts"),
])
def test_every_field_is_checked_for_type_and_range(fields, message):
    from da.config import ConfigError

    with pytest.raises(ConfigError) as info:
        RunConfig(**fields).validate()
    assert message in str(info.value) and info.value.field == next(iter(fields))


def test_errors_name_the_file_and_key_or_the_flag(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 2.5\n")

    def run(*args):
        return subprocess.run([sys.executable, str(REPO / "experiments" / "run.py"), *args, "--out", str(tmp_path)],
                              capture_output=True, text=True, timeout=120)

    res = run("--config", str(cfg))
    assert res.returncode == 2 and f"--config {cfg}, key epochs: --epochs expects an integer, got 2.5" in res.stderr
    res = run("--config", str(cfg), "--epochs", "3", "--lr", "inf")
    assert res.returncode == 2 and "error: --lr must be a finite number, got inf" in res.stderr
    assert not any(tmp_path.glob("stage*"))  # nothing was created


def test_sweep_errors_name_the_file_and_key(tmp_path):
    from da.launch import load_sweep

    bad = tmp_path / "s.yaml"
    bad.write_text("base: {freeze_bn: 'no'}\ngrid: {method: [coral]}\n")
    with pytest.raises(ValueError, match=r"s.yaml: base.freeze_bn: --freeze-bn expects true or false, got 'no'"):
        load_sweep(bad)


def test_revised_fields_keep_earlier_runs_where_they_were():
    """memory_format and compile_prefix (issue 15) change float rounding, so they are hashed, except at the
    behaviour that came before them: earlier run directories keep their names, and an earlier record reads
    back with the behaviour it ran with, not today's defaults."""
    today = RunConfig()
    assert (today.memory_format, today.compile_prefix) == ("channels_last", True)
    assert {"memory_format", "compile_prefix"} <= set(today.hashed_dict())
    legacy = today.replace(memory_format="auto", compile_prefix=False)
    assert not {"memory_format", "compile_prefix"} & set(legacy.hashed_dict())
    old_record = {k: v for k, v in legacy.to_dict().items() if k not in ("memory_format", "compile_prefix")}
    assert RunConfig.from_record(old_record).config_hash() == legacy.config_hash()
    assert RunConfig.from_dict(old_record).config_hash() == today.config_hash() != legacy.config_hash()
    assert RunConfig.from_record(today.to_dict()) == today  # a record that has them keeps them
    with pytest.raises(ValueError, match="--memory-format 'nhwc' is not valid; choose from 'channels_last'"):
        RunConfig(memory_format="nhwc").validate()


@pytest.mark.parametrize("slurm, affinity, expected", [
    (None, range(16), 8),     # a big machine: capped
    (None, range(2), 1),      # this 2-core machine: one worker beside the main process
    (None, [5], 0),           # one CPU: load in the main process
    ("6", range(64), 5),      # a Slurm job's own allocation wins over what the node has
    ("", range(4), 3),        # empty or invalid: the affinity decides
    ("two", range(4), 3),
])
def test_num_workers_auto_follows_the_allocation(monkeypatch, slurm, affinity, expected):
    import os

    from da.config import resolve_num_workers

    if slurm is None:
        monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    else:
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", slurm)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(affinity), raising=False)
    assert RunConfig().num_workers == -1
    assert resolve_num_workers(RunConfig().num_workers) == expected
    for explicit in (0, 3, 12):  # --num-workers N: taken as given, even beyond the allocation
        assert resolve_num_workers(explicit) == explicit


def test_num_workers_is_checked_and_never_moves_a_run_directory():
    from da.cli import config_from_args
    from da.config import ConfigError

    assert RunConfig(num_workers=-1).validate() and RunConfig(num_workers=0).validate()
    with pytest.raises(ConfigError, match="--num-workers must be >= 0, or -1 for one per allotted CPU"):
        RunConfig(num_workers=-2).validate()
    # the hash of runs made when the default was 2 workers
    assert RunConfig(num_workers=2).config_hash() == RunConfig().config_hash() == RunConfig(num_workers=7).config_hash()
    assert config_from_args(["--num-workers", "3"], "test").num_workers == 3


def test_build_run_resolves_auto_workers_where_it_runs(monkeypatch, tiny_root, tmp_path):
    import os

    from da.train.setup import build_run, load_splits

    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    cfg = RunConfig(data_root=str(tiny_root), out=str(tmp_path), weights="none", img_size=32, batch_size=8,
                    stages=1, cache_views=0, num_workers=-1, progress=False, val_fraction=0.25)
    run = build_run(cfg, 2, load_splits(cfg, 2), None)
    assert run.data.source.num_workers == 3 and run.data.target_eval.num_workers == 3


def test_stage1_lr_shares_stage1_across_stage2_learning_rates():
    from da.config import ConfigError, stage1_config

    base = RunConfig(method="mcc", stage1_lr=1e-3)
    assert base.config_hash() == RunConfig(method="mcc").config_hash()  # equal to lr: the same run as before
    other = base.replace(lr=3e-3)
    assert stage1_config(other).config_hash() == stage1_config(base).config_hash()
    assert stage1_config(other).lr == 1e-3 and other.config_hash() != base.config_hash()
    # without it, stage 1 follows lr (the behaviour every earlier record has)
    assert stage1_config(RunConfig(lr=3e-3)).lr == 3e-3
    with pytest.raises(ConfigError, match="stage1-lr must be >= 0"):
        RunConfig(stage1_lr=-1.0).validate()


# --------------------------------------------------------------- settings declared by methods (da.settings)
def test_a_setting_its_method_does_not_read_cannot_split_runs():
    """mmd's, coral's and im's settings were hashed in every run before they were declared: they stay in every
    hash (committed run directories keep their names) but at their default where no method of the run reads
    them, so a DANN run no longer depends on MMD's kernel scales."""
    dann = RunConfig(method="dann")
    assert dann.hashed_dict()["mmd_kernel_scales"] == [0.125, 0.25, 0.5, 1.0, 2.0]
    assert RunConfig(method="dann", mmd_kernel_scales=(1.0,), im_weight=2.0).config_hash() == dann.config_hash()
    assert RunConfig(method="mmd", mmd_kernel_scales=(1.0,)).config_hash() != RunConfig(method="mmd").config_hash()
    # ent and shot read im's weight through their base class
    for method in ("im", "ent", "shot", "coral+ent"):
        assert RunConfig(method=method, im_weight=2.0).config_hash() != RunConfig(method=method).config_hash(), method


def test_declarations_are_refused_twice_and_checked_at_declaration():
    from da.settings import Setting, declare

    with pytest.raises(ValueError, match="'mcc_weight' of other is declared already by mcc"):
        declare("other", "method", [Setting("mcc_weight", float, 1.0, "x")])
    with pytest.raises(ValueError, match="default 'a' is not a"):
        declare("other", "method", [Setting("other_weight", float, "a", "x")])
    with pytest.raises(ValueError, match="must be >= 0"):
        declare("other", "method", [Setting("other_weight", float, -1.0, "x", low=0)])
    from da.settings import SETTINGS

    assert "other_weight" not in SETTINGS


def test_stage1_keeps_exactly_the_fields_marked_stage1():
    from da.config import config_fields, stage1_config

    marked = {f.name for f in config_fields() if f.metadata.get("stage1")}
    assert {"img_size", "backbone", "lr", "split_seed", "stage1"} <= marked
    assert not any("setting" in f.metadata for f in config_fields() if f.name in marked)  # no method shapes stage 1
    base = stage1_config(RunConfig()).config_hash()
    assert stage1_config(RunConfig(method="mcc", mcc_weight=3.0, epochs=9, seed=4)).config_hash() == base
    assert stage1_config(RunConfig(img_size=96)).config_hash() != base
    assert stage1_config(RunConfig(stage1_lr=0.01)).lr == 0.01


def test_dataset_names_are_spelled_as_the_registry_does():
    """--target rsscn7 used to train a second copy of an existing run under another hash, and tables then split
    'RSSCN7' and 'rsscn7': a registered name is one spelling, one hash."""
    typed = RunConfig(stage1="aid", source="Aid", target="rsscn7").validate()
    assert (typed.stage1, typed.source, typed.target) == ("AID", "AID", "RSSCN7")
    assert typed.config_hash() == RunConfig().validate().config_hash()
    assert RunConfig(target="rsscn7-lt").validate().target == "RSSCN7-LT"
    assert RunConfig(target="folder:/x/y", stages=1).target == "folder:/x/y"


def test_target_batch_size_moves_a_run_only_where_it_changes_the_batches():
    mcc = RunConfig(method="mcc")
    assert RunConfig(method="mcc", target_batch_size=32).config_hash() == mcc.config_hash()  # = batch_size
    assert RunConfig(method="mcc", target_batch_size=16).config_hash() != mcc.config_hash()
    assert RunConfig(method="mcc", target_batch_size=16).target_batch == 16 and mcc.target_batch == 32
    # source-only and the reference draw no unlabelled target batch
    assert (RunConfig(method="source_only", target_batch_size=16).config_hash()
            == RunConfig(method="source_only").config_hash())
    with pytest.raises(ConfigError, match="--target-batch-size must be >= 0"):
        RunConfig(method="mcc", target_batch_size=-1).validate()


def test_the_linear_mmd_estimator_refuses_unequal_batches_before_anything_runs():
    with pytest.raises(ConfigError, match="--mmd-estimator linear pairs each source image with a target image"):
        RunConfig(method="mmd+mcc", mmd_estimator="linear", target_batch_size=16).validate()
    RunConfig(method="mmd", mmd_estimator="linear", target_batch_size=32).validate()
    RunConfig(method="mmd", target_batch_size=16).validate()  # the quadratic estimator takes any two sizes
