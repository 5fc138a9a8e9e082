"""Runs that say where they came from: a log per run directory, the environment and the data in the record,
--deterministic, --print-config, TensorBoard hparams, progress off a terminal, and <out>/index.csv."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import yaml

from da.cli import config_from_args
from da.config import RunConfig
from da.rundir import CHECKPOINT_FILE, CONFIG_FILE, DONE_FILE, FAILED_FILE, LOCK_FILE, LOG_FILE, RECORD_FILE
from da.runindex import INDEX_FILE, update_index
from da.train import run_experiment
from da.train.seeding import set_deterministic
from da.utils.io import atomic_write_json, exclusive_lock

REPO = Path(__file__).resolve().parents[1]


def tiny_cfg(root, out, **kw) -> RunConfig:
    base = dict(data_root=str(root), out=str(out), weights="none", img_size=32, batch_size=8, epochs=2,
                stage1_epochs=1, max_steps_per_epoch=2, num_workers=0, progress=False, eval_batch_size=64,
                val_fraction=0.25, stages=1, method="coral")
    base.update(kw)
    return RunConfig(**base)


def hparams_events(logdir: Path) -> dict:
    """The hparams plugin's session-start info (hyperparameters) from TensorBoard event files."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    found = {}
    for path in logdir.rglob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "hparams":
                    continue
                data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                if data.HasField("session_start_info"):
                    for k, v in data.session_start_info.hparams.items():
                        found[k] = v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
                if data.HasField("experiment"):
                    found["_metrics"] = [m.name.tag for m in data.experiment.metric_infos]
    return found


def test_run_keeps_its_log_environment_data_hparams_and_index(tiny_root, tmp_path):
    try:
        path = Path(run_experiment(tiny_cfg(tiny_root, tmp_path, deterministic=True)))
    finally:
        set_deterministic(False)  # a process-wide switch: later tests run with torch's defaults
    record = json.loads(path.read_text())
    run_dir = path.parent
    env = record["environment"]
    assert env["torch"] == torch.__version__.split("+")[0] or env["torch"] == torch.__version__
    assert env["deterministic_algorithms"] is True and env["cudnn_deterministic"] is True
    assert env["torch_threads"] == torch.get_num_threads() and env["python"] == sys.version.split()[0]
    assert set(env) >= {"torchvision", "timm", "numpy", "pillow", "cuda", "cudnn", "gpu"}
    assert set(record["data"]["AID"]["images_per_class"].values()) == {4}  # the AID classes RSSCN7's map uses
    assert record["data"]["RSSCN7"]["image_sizes"] == {"36x36": 56}
    assert record["data"]["RSSCN7"]["official"] == {"images": 2800, "image_size": 400}

    log = (run_dir / LOG_FILE).read_text()
    assert "epoch 1/2" in log and "epoch 2/2" in log and "environment: python" in log
    assert "data RSSCN7: 56 images in 7 classes, sizes {'36x36': 56}" in log
    assert "data RSSCN7 is not the official release: 56 files in its class folders" in log

    hp = hparams_events(run_dir / "tb")
    assert hp["method"] == "coral" and hp["seed"] == 0 and hp["stage"] == 2
    assert "hparam/target_test_accuracy" in hp["_metrics"]

    rows = list(csv.DictReader((tmp_path / INDEX_FILE).open()))
    assert [(r["run"], r["status"], r["method"], r["source"], r["target"]) for r in rows] == [
        (run_dir.name, "done", "coral", "AID", "RSSCN7")]
    assert float(rows[0]["target_test_accuracy"]) == pytest.approx(record["target_test"]["accuracy"], abs=1e-4)


def test_a_dataset_that_differs_from_its_release_is_warned_about_once_per_run(tmp_path, caplog):
    """Issue 31: a two-stage run printed each dataset's mismatch twice per stage (scan's warning and the
    engine's log line) and AID again in stage 2.  Now the screen gets one DatasetMismatchWarning per dataset;
    each stage's log.txt still keeps its line."""
    import logging
    import warnings

    from conftest import make_folder_dataset
    from da.data.folder import DatasetMismatchWarning
    from da.data.registry import AID, RSSCN7

    root = tmp_path / "data"  # a folder of its own: no other test has been warned about it in this process
    make_folder_dataset(root, "AID", list(AID.classes), 4, size=32)
    make_folder_dataset(root, "RSSCN7", list(RSSCN7.classes), 8, size=32)
    with warnings.catch_warnings(record=True) as seen, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")  # Python's own once-per-place rule must not be what hides repeats
        path = Path(run_experiment(tiny_cfg(root, tmp_path / "runs", stages=2, epochs=1,
                                                    compile_prefix=False)))
    mismatch = [str(w.message).split(" under ")[0] for w in seen if issubclass(w.category, DatasetMismatchWarning)]
    assert sorted(mismatch) == ["dataset AID", "dataset RSSCN7"]
    assert not [r for r in caplog.records if "not the official release" in r.getMessage()]  # no second copy
    logs = {d.name.split("-")[0]: (d / LOG_FILE).read_text() for d in (tmp_path / "runs").glob("stage*")}
    assert "data AID is not the official release: 120 files" in logs["stage1"]
    assert "data AID is not the official release: 120 files" in logs["stage2"]
    assert "data RSSCN7 is not the official release: 56 files" in logs["stage2"]
    assert path.parent.name.startswith("stage2-")


def _fake_run(out: Path, name: str, files: dict[str, str], method: str = "mmd") -> Path:
    d = out / name
    d.mkdir(parents=True)
    cfg = RunConfig(method=method).to_dict()
    atomic_write_json(d / CONFIG_FILE, {"config": cfg, "stage": 2})
    for f, text in files.items():
        (d / f).write_text(text)
    return d


def test_index_statuses_and_concurrent_updates_lose_no_row(tmp_path):
    record = {"config": RunConfig(method="coral").to_dict(), "stage": 2, "epochs": [{}, {}], "selected_epoch": 2,
              "selection": "bnm", "target_test": {"accuracy": 0.5}, "source_val": {"accuracy": 0.9},
              "wall_time_s": 3.0, "finished_at": 0}
    for i in range(12):
        _fake_run(tmp_path, f"stage2-done{i:02d}", {RECORD_FILE: json.dumps(record), DONE_FILE: ""})
    _fake_run(tmp_path, "stage2-failed", {FAILED_FILE: "boom"})
    _fake_run(tmp_path, "stage2-interrupted", {CHECKPOINT_FILE: ""})
    _fake_run(tmp_path, "stage2-submitted", {"submitted.json": "{}"})
    running = _fake_run(tmp_path, "stage2-running", {})
    (tmp_path / "cache").mkdir()  # not a run directory
    with exclusive_lock(running / LOCK_FILE):
        threads = [threading.Thread(target=update_index, args=(tmp_path,)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    rows = {r["run"]: r for r in csv.DictReader((tmp_path / INDEX_FILE).open())}
    assert len(rows) == 16
    assert {r["status"] for k, r in rows.items() if "done" in k} == {"done"}
    assert rows["stage2-done00"]["target_test_accuracy"] == "0.5000" and rows["stage2-done00"]["method"] == "coral"
    assert [rows[k]["status"] for k in ("stage2-failed", "stage2-interrupted", "stage2-submitted", "stage2-running")] \
        == ["failed", "interrupted", "submitted", "running"]
    update_index(tmp_path)  # the lock is free now: no longer running, and nothing to resume
    assert {r["run"]: r for r in csv.DictReader((tmp_path / INDEX_FILE).open())}["stage2-running"]["status"] == "started"


def test_print_config_is_the_resolved_config_and_reads_back(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("lr: 0.02\nepochs: 7\n")
    with pytest.raises(SystemExit) as stop:
        config_from_args(["--preset", "smoke", "--config", str(tmp_path / "c.yaml"), "--epochs", "9",
                          "--print-config"], "t")
    assert stop.value.code == 0
    text = capsys.readouterr().out
    printed = yaml.safe_load(text)
    assert (printed["img_size"], printed["lr"], printed["epochs"]) == (64, 0.02, 9)  # preset < file < flag
    (tmp_path / "printed.yaml").write_text(text)
    again = config_from_args(["--config", str(tmp_path / "printed.yaml")], "t")
    assert again.config_hash() in text.splitlines()[0] and again.epochs == 9


# a whole run in a subprocess: the slow tests' (the fast suite keeps the log test above)
@pytest.mark.slow
def test_progress_off_a_terminal_is_one_line_per_epoch(tiny_root, tmp_path):
    """With stderr in a file (every Slurm job), no carriage-return progress updates, one log line per epoch."""
    cmd = [sys.executable, str(REPO / "experiments" / "run.py"), "--data-root", str(tiny_root), "--out",
           str(tmp_path), "--weights", "none", "--img-size", "32", "--batch-size", "8", "--epochs", "3",
           "--stages", "1", "--max-steps-per-epoch", "4", "--num-workers", "0", "--val-fraction", "0.25"]
    with open(tmp_path / "job.err", "w") as err:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, (tmp_path / "job.err").read_text()[-2000:]
    text = (tmp_path / "job.err").read_text()
    assert "\r" not in text and "it/s" not in text
    assert [line.split("stage 2 ")[1][:9] for line in text.splitlines() if "stage 2 epoch" in line] == [
        "epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert len(text) < 20_000


def test_a_failed_job_shows_in_the_index(tiny_root, tmp_path):
    from da.launch.submit import RunJob
    from da.rundir import run_dir_for

    cfg = tiny_cfg(tmp_path / "no-data", tmp_path / "runs")
    with pytest.raises(FileNotFoundError, match="not found"):
        RunJob()(cfg.to_dict(), 2)
    assert (run_dir_for(cfg, 2) / FAILED_FILE).read_text().startswith("FileNotFoundError: dataset AID")
    rows = list(csv.DictReader((tmp_path / "runs" / INDEX_FILE).open()))
    assert [(r["run"], r["status"], r["stage"]) for r in rows] == [(run_dir_for(cfg, 2).name, "failed", "2")]


def test_a_run_that_fails_before_training_is_failed_in_the_index_until_a_rerun_finishes(tiny_root, tmp_path, capsys):
    """da-run with weights that do not fit (not through a job): the run directory exists, and the index said
    "started" for ever; it says "failed", and the next attempt clears it."""
    from da.scripts.run import main
    from da.rundir import run_dir_for

    bad = tmp_path / "weights.pt"
    torch.save({"model": {"stages.0.conv.weight": torch.zeros(1)}}, bad)
    cfg = tiny_cfg(tiny_root, tmp_path / "runs", weights=str(bad))
    argv = ["--config", str(tmp_path / "c.yaml")]
    (tmp_path / "c.yaml").write_text(json.dumps(cfg.to_dict()))
    assert main(argv) == 2 and "error:" in capsys.readouterr().err
    run_dir = run_dir_for(cfg, 2)
    assert (run_dir / FAILED_FILE).read_text().startswith(("WeightsError", "ValueError", "RuntimeError"))
    rows = {r["run"]: r["status"] for r in csv.DictReader((tmp_path / "runs" / INDEX_FILE).open())}
    assert rows[run_dir.name] == "failed"


def test_archiving_never_replaces_a_committed_record_and_copies_whole_directories(tmp_path):
    """archive_runs.py: a run archived already is left alone; the same configuration trained again (another
    record) keeps the archived record, which committed runs cite; a new run appears with its files, never half."""
    from da.rundir import FEATURES_FILE, archive_run

    def finished(name, record):
        d = tmp_path / "runs" / name
        d.mkdir(parents=True)
        (d / RECORD_FILE).write_text(json.dumps(record))
        (d / CONFIG_FILE).write_text("{}")
        (d / DONE_FILE).write_text("done\n")
        (d / CHECKPOINT_FILE).write_bytes(b"weights")
        return d

    dest = tmp_path / "results" / "runs"
    first = finished("stage1-aaa", {"source_val": 0.9045})
    assert archive_run(first, dest) == "copied"
    assert sorted(p.name for p in (dest / "stage1-aaa").iterdir()) == sorted([RECORD_FILE, CONFIG_FILE, DONE_FILE])
    assert archive_run(first, dest) == "same"
    (first / FEATURES_FILE).write_bytes(b"npz")
    assert archive_run(first, dest, features=True) == "same" and (dest / "stage1-aaa" / FEATURES_FILE).exists()
    again = tmp_path / "elsewhere"
    (again / "stage1-aaa").mkdir(parents=True)
    for f in (RECORD_FILE, CONFIG_FILE, DONE_FILE):
        (again / "stage1-aaa" / f).write_text((first / f).read_text())
    (again / "stage1-aaa" / RECORD_FILE).write_text(json.dumps({"source_val": 0.9055}))  # trained again
    assert archive_run(again / "stage1-aaa", dest) == "kept"
    assert json.loads((dest / "stage1-aaa" / RECORD_FILE).read_text()) == {"source_val": 0.9045}
    broken = finished("stage2-bbb", {"x": 1})
    (broken / CONFIG_FILE).unlink()  # a copy that fails halfway leaves nothing behind
    with pytest.raises(FileNotFoundError):
        archive_run(broken, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["stage1-aaa"]
