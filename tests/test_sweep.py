"""Sweep definitions and the launcher without a cluster: expansion, validation, plan, idempotence."""

import csv
import json
from pathlib import Path

import pytest

from da.launch import load_sweep, plan, submit_sweep
from da.launch.submit import load_profile, sbatch_script, executor_parameters


def test_shipped_sweeps_expand_to_hashed_runs():
    sweep = load_sweep("ablation")
    cfgs = sweep.configs(out="/x")
    assert len(cfgs) == 2 * 3 * 3 * 3
    assert len({c.config_hash() for c in cfgs}) == len(cfgs)
    assert [c.config_hash() for c in cfgs] == [c.config_hash() for c in load_sweep("ablation").configs(out="/x")]
    assert len(sweep.stage1_configs(out="/x")) == 1  # one stage-1 model serves every two-stage run


def test_bad_sweep_files_name_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: {methd: [coral]}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown config field\(s\) in grid: methd"):
        load_sweep(bad)
    bad.write_text("grid: {method: [dan]}\n")
    with pytest.raises(ValueError, match="--method 'dan' is not valid"):
        load_sweep(bad)
    with pytest.raises(FileNotFoundError, match="known sweeps: .*ablation"):
        load_sweep("nope")


def test_sweep_variants_expand_in_order_and_are_checked(tmp_path):
    path = tmp_path / "v.yaml"
    path.write_text("base: {selection: bnm}\n"
                    "variants: [{method: source_only}, {method: im, prior: em}, {method: source_only, "
                    "target_labeled_fraction: 1.0}]\n"
                    "grid: {cls_loss: [ce]}\nseeds: [0, 1]\n")
    cfgs = load_sweep(path).configs()
    assert [(c.method, c.prior, c.target_labeled_fraction, c.seed) for c in cfgs] == [
        ("source_only", "", 0.0, 0), ("source_only", "", 0.0, 1), ("im", "em", 0.0, 0), ("im", "em", 0.0, 1),
        ("source_only", "", 1.0, 0), ("source_only", "", 1.0, 1)]
    assert all(c.selection == "bnm" for c in cfgs)
    # a variant's own seeds run instead of the sweep's
    path.write_text("variants: [{method: source_only}, {method: im, seeds: [3, 4]}]\nseeds: [0]\n")
    assert [(c.method, c.seed) for c in load_sweep(path).configs()] == [("source_only", 0), ("im", 3), ("im", 4)]
    for text, message in (("variants: [{method: im}]\ngrid: {method: [coral]}\n", "method set both in grid and in variants"),
                          ("variants: [{methd: im}]\n", r"unknown config field\(s\) in variants\[0\]: methd"),
                          ("variants: [{method: im, prior: nope}]\n", "variants.prior: --prior 'nope' is not valid"),
                          ("variants: {method: im}\n", "variants must be a list of mappings"),
                          ("variants: [{seed: 1}]\n", "give seeds under 'seeds'"),
                          ("variants: [{seeds: 1}]\n", r"variants\[0\].seeds must be a non-empty list of integers"),
                          ("seeds: [0, one]\n", "seeds must be a non-empty list of integers")):
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_sweep(path)


def test_gap_sweeps_name_their_selection_and_reference():
    for name in ("gap", "gap_shifted"):  # gap_warm: the same methods from a trained classifier
        cfgs = load_sweep(name).configs(out="/x")
        assert {c.selection for c in cfgs} == {"bnm"} and {c.seed for c in cfgs} == {0, 1, 2}
        reference = [c for c in cfgs if c.target_labeled_fraction == 1.0]
        assert len(reference) == 3 and {c.method for c in reference} == {"source_only"}
        assert {"source_only", "shot", "im", "mcc", "cbst", "coral"} <= {c.method for c in cfgs}
    assert {c.target for c in load_sweep("gap_shifted").configs()} == {"RSSCN7-LT"}


def test_profiles_and_sbatch_header(tmp_path):
    gpu = load_profile("gpu")
    params = executor_parameters(gpu, "slurm")
    assert params["slurm_partition"] == gpu["partition"] and params["gpus_per_node"] == gpu["gpus_per_node"]
    header = sbatch_script(params, tmp_path / "%j", n_tasks=50)
    assert f"#SBATCH --partition={gpu['partition']}" in header
    assert f"#SBATCH --gpus-per-node={gpu['gpus_per_node']}" in header
    assert f"#SBATCH --time={gpu['timeout_min']}" in header
    assert f"#SBATCH --array=0-49%{gpu['array_parallelism']}" in header
    with pytest.raises(FileNotFoundError, match="known profiles: .*gpu"):
        load_profile("nope")
    # --dry-run shows the whole script: the setup lines too, as the job will run them
    local = load_profile("local")
    script = sbatch_script(executor_parameters(local, "slurm"), tmp_path / "%j", n_tasks=2)
    assert all(line in script for line in local["setup"]) and "submitit.core._submit" in script


def test_sweeps_and_profiles_by_shipped_name_or_by_path(tmp_path):
    import shutil

    import da.launch
    from da.launch.submit import PROFILES_DIR
    from da.launch.sweep import SWEEPS_DIR

    # shipped inside the package (setup.cfg package_data), so names work in a non-editable install too
    package = Path(da.launch.__file__).parent
    assert SWEEPS_DIR.parent == package and (SWEEPS_DIR / "main.yaml").is_file()
    assert PROFILES_DIR.parent == package and (PROFILES_DIR / "gpu.yaml").is_file()
    # a path: with a suffix, or with a folder in it
    (tmp_path / "conf").mkdir()
    shutil.copy(SWEEPS_DIR / "main.yaml", tmp_path / "conf" / "mine")
    shutil.copy(PROFILES_DIR / "gpu.yaml", tmp_path / "my_cluster.yml")
    mine = load_sweep(str(tmp_path / "conf" / "mine"))
    assert mine.name == "mine" and [c.config_hash() for c in mine.configs()] == [
        c.config_hash() for c in load_sweep("main").configs()]
    assert load_profile(str(tmp_path / "my_cluster.yml")) == load_profile("gpu")
    with pytest.raises(FileNotFoundError, match=r"unknown name; known sweeps: .*main.*or give the path of a sweep"):
        load_sweep("mian")
    with pytest.raises(FileNotFoundError, match=r"unknown name; known profiles: gpu, local .*or give the path"):
        load_profile("gpus")
    with pytest.raises(FileNotFoundError, match=r"sweep .*missing.yaml: no such file"):
        load_sweep(tmp_path / "missing.yaml")
    with pytest.raises(FileNotFoundError, match=r"profile .*nope/gpu: no such file"):
        load_profile(str(tmp_path / "nope" / "gpu"))


def test_without_sbatch_a_profile_still_dry_runs_its_script_and_a_real_submission_stops(tmp_path, monkeypatch,
                                                                                         capsys):
    """Issue 31: with no sbatch on PATH, --profile gpu --dry-run quietly planned a local run and printed no
    script; a dry run needs no Slurm, and a real submission must not run the GPU sweep on this machine."""
    from da.scripts.sweep import main

    monkeypatch.setenv("PATH", str(tmp_path / "no_slurm_here"))  # a machine without Slurm
    runs = tmp_path / "runs"
    common = ["--sweep", str(tiny_sweep_file(tmp_path)), "--out", str(runs), "--data-root", str(tmp_path)]
    assert main(common + ["--profile", "gpu", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "array job(s) on cluster slurm" in out
    assert "#SBATCH --partition=gpu" in out and "#SBATCH --gpus-per-node=1" in out and "module load cuda" in out
    assert "sbatch is not on PATH here; --profile gpu (a Slurm profile) would submit the script below" in out
    for extra, asked in ((["--profile", "gpu"], "--profile gpu (a Slurm profile)"),
                         (["--cluster", "slurm"], "--cluster slurm")):
        with pytest.raises(SystemExit):
            main(common + extra)
        err = capsys.readouterr().err
        assert f"{asked} needs Slurm, but sbatch is not on PATH; nothing was submitted" in err
        assert "--cluster local" in err and "--profile local" in err
    assert not runs.exists()  # nothing was planned into run directories, nothing ran here
    # asking for this machine is obeyed, and the default without a profile says where the runs go
    assert main(common + ["--profile", "gpu", "--cluster", "local", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert "on cluster local" in out and "#SBATCH" not in out and "sbatch is not on PATH" not in out + err
    assert main(common + ["--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert "on cluster local" in out and "note: sbatch is not on PATH, so the runs go to this machine" in err


@pytest.mark.parametrize("text,message", [
    ("partition: \"debug\\nrm -rf /tmp/x\"\n", "partition holds a control character"),
    ("setup:\n  - \"echo a\\necho b\"\n", "setup holds a control character"),
    ("setup: \"echo a\"\n", "setup must be a list of shell lines"),
    ("additional_parameters: {comment: \"a\\nb\"}\n", "additional_parameters holds a control character"),
])
def test_profiles_refuse_control_characters(tmp_path, text, message):
    path = tmp_path / "evil.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"profile {path}: {message}"):
        load_profile(str(path))


TINY_BASE = dict(weights="none", img_size=32, batch_size=8, epochs=1, stage1_epochs=1, max_steps_per_epoch=2,
                 num_workers=0, val_fraction=0.25, eval_batch_size=64)


def tiny_sweep_file(tmp_path, grid="{stages: [1, 2], method: [source_only, coral]}", seeds="[0]"):
    path = tmp_path / "tiny.yaml"
    path.write_text(f"base: {json.dumps(TINY_BASE)}\ngrid: {grid}\nseeds: {seeds}\n")
    return path


@pytest.mark.slow  # an end-to-end run: the default suite stays under 10 minutes on 2 slow cores
def test_debug_cluster_runs_everything_then_nothing(tiny_root, tmp_path):
    sweep = load_sweep(tiny_sweep_file(tmp_path))
    kw = dict(out=str(tmp_path / "runs"), data_root=str(tiny_root), progress=False)
    first = submit_sweep(sweep, cluster="debug", wait=True, **kw)
    assert (first["submit_stage1"], first["submit_stage2"]) == (1, 4)
    states = [r.state for r in plan(sweep, **kw)]
    assert states == ["done"] * 5
    again = submit_sweep(sweep, cluster="debug", wait=True, **kw)
    assert (again["submit_stage1"], again["submit_stage2"], again["done"]) == (0, 0, 5)
    rows = list(csv.DictReader((tmp_path / "runs" / "index.csv").open()))
    assert sorted(r["run"] for r in rows) == sorted(r.run_dir.name for r in plan(sweep, **kw))
    assert {r["status"] for r in rows} == {"done"} and all(r["target_test_accuracy"] for r in rows if r["stage"] == "2")


def test_a_job_receives_every_setting_of_its_config():
    """Submitted runs are rebuilt from a payload in the job: a method's declared settings must travel with it, or
    a sweep over mcc_weight would run the default weight under another run's name."""
    from da.config import RunConfig
    from da.launch.submit import job_payload

    cfg = RunConfig(method="mcc+aad", mcc_weight=2.0, aad_k=3, snd_temperature=0.1, mmd_kernel_scales=(1.0, 2.0))
    back = RunConfig.from_dict(job_payload(cfg))
    assert back == cfg and back.config_hash() == cfg.config_hash()
    assert (back.mcc_weight, back.aad_k, back.snd_temperature) == (2.0, 3, 0.1)
