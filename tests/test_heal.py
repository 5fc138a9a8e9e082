"""Heal instead of crash: damaged checkpoints and caches, leftovers of killed writes, a stage 1 that lost its
model, a full disk, unwritable outputs, a damaged submission file, dataset names that try to leave --out."""

import subprocess
import sys

import pytest
import torch

from conftest import REPO
from da.rundir import BEST_FILE, CHECKPOINT_FILE, SUBMITTED_FILE, run_dir_for
from da.train import checkpoint, run_experiment, train_stage
from test_engine import Kill, _metrics, load, tiny_cfg


def _interrupted(cfg):
    def stop(epoch):
        if epoch == 1:
            raise Kill()

    with pytest.raises(Kill):
        train_stage(cfg, stage=2, on_epoch_end=stop)
    return run_dir_for(cfg, 2)


@pytest.mark.slow  # an end-to-end run: the default suite stays under 10 minutes on 2 slow cores
def test_damaged_checkpoint_restarts_the_run_and_stale_temporaries_go(tiny_root, tmp_path, capsys):
    kw = dict(method="coral", stages=1, epochs=2)
    ref = load(train_stage(tiny_cfg(tiny_root, tmp_path / "ref", **kw), stage=2))
    cfg = tiny_cfg(tiny_root, tmp_path / "cut", **kw)
    run_dir = _interrupted(cfg)
    data = (run_dir / CHECKPOINT_FILE).read_bytes()
    (run_dir / CHECKPOINT_FILE).write_bytes(data[: len(data) // 3])  # a write cut short by the disk
    (run_dir / ".checkpoint.pt.x1y2.tmp").write_bytes(b"\0" * 1000)  # a write cut short by a kill
    rec = load(train_stage(cfg, stage=2))
    assert "is damaged" in capsys.readouterr().out
    assert rec["resumed"] == 0 and _metrics(rec) == _metrics(ref)  # started over, same numbers
    assert not list(run_dir.rglob(".*.tmp")) and (run_dir / "checkpoint.damaged").exists()


@pytest.mark.slow  # an end-to-end run: the default suite stays under 10 minutes on 2 slow cores
def test_damaged_cache_is_rebuilt(tiny_root, tmp_path):
    cfg = tiny_cfg(tiny_root, tmp_path, method="source_only", stages=1, epochs=1)
    first = load(train_stage(cfg, stage=2))
    used = sorted((tmp_path / "cache").glob("*.pt"))
    assert used and not any(first["cache_hits"].values())
    for c in used:
        c.write_bytes(b"not a checkpoint")
    again = load(train_stage(cfg.replace(method="ent"), stage=2))  # same seed, same prefix: the same cache files
    assert not any(again["cache_hits"][k] for k in first["cache_hits"])  # each damaged file was computed again
    for c in used:
        assert isinstance(checkpoint.load(c)["feats"], torch.Tensor), c


@pytest.mark.slow  # an end-to-end run: the default suite stays under 10 minutes on 2 slow cores
def test_stage1_marked_done_without_its_model_says_what_to_delete(tiny_root, tmp_path):
    cfg = tiny_cfg(tiny_root, tmp_path, method="source_only", epochs=1)
    run_experiment(cfg)
    from da.config import stage1_config

    s1 = run_dir_for(stage1_config(cfg), 1)
    (s1 / BEST_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=rf"stage 1 {s1} is marked done but its best_model.pt is gone; "
                                                rf"delete that directory \(rm -r {s1}\)"):
        run_experiment(cfg.replace(seed=1))


def test_full_disk_names_the_file_and_the_space(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 512 vs 1024")

    monkeypatch.setattr(torch, "save", full)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 * 2**30, 10 * 2**30, 3 * 2**20))
    with pytest.raises(OSError, match=r"could not write .*ckpt.pt: 3 MiB free on its file system, about 4 MiB needed"):
        checkpoint.save(tmp_path / "ckpt.pt", {"w": torch.zeros(2**20)})
    assert not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.slow  # an end-to-end run: the default suite stays under 10 minutes on 2 slow cores
def test_unwritable_out_is_a_message_not_a_traceback(tiny_root, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    res = subprocess.run([sys.executable, str(REPO / "experiments" / "run.py"), "--data-root", str(tiny_root),
                          "--out", str(blocker / "runs"), "--weights", "none", "--stages", "1", "--img-size", "32",
                          "--batch-size", "8", "--max-steps-per-epoch", "1", "--epochs", "1", "--progress", "false",
                          "--val-fraction", "0.25", "--num-workers", "0"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "error: " in res.stderr and str(blocker) in res.stderr


def test_damaged_submission_file_is_named(tmp_path):
    from da.launch import load_sweep, status

    sweep = tmp_path / "s.yaml"
    sweep.write_text("grid: {method: [coral]}\nseeds: [0]\nbase: {stages: 1}\n")
    cfg = load_sweep(sweep).configs(out=str(tmp_path / "runs"))[0]
    run_dir = run_dir_for(cfg, 2)
    run_dir.mkdir(parents=True)
    (run_dir / SUBMITTED_FILE).write_text("{half")
    with pytest.raises(ValueError, match=rf"{run_dir / SUBMITTED_FILE} is unreadable .*delete it and submit again"):
        status(load_sweep(sweep), out=str(tmp_path / "runs"))


def test_dataset_names_stay_one_file_name_in_the_cache():
    from da.train.cache import _safe_name

    for name in ("folder:../../../etc", "folder:/abs/path", "..", "AID"):
        safe = _safe_name(name)
        assert "/" not in safe and not safe.startswith(".") and safe
    assert _safe_name("AID") == "AID" and _safe_name("RSSCN7") == "RSSCN7"  # existing cache names unchanged
