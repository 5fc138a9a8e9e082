"""``<out>/index.csv``: one row per run directory (method, datasets, seed, status, headline metric), so a
folder of hashed run directories reads at a glance.

Rebuilt from the run directories themselves, under a lock, whenever a run starts, finishes or fails: two
runs finishing at once cannot lose each other's row (the second rebuild sees the first one's record), and
the file is replaced atomically, so a reader never sees half of it.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import logging
import os
import time
from pathlib import Path

from da.rundir import CHECKPOINT_FILE, CONFIG_FILE, DONE_FILE, FAILED_FILE, LOCK_FILE, RECORD_FILE, SUBMITTED_FILE
from da.utils.io import atomic_write_text, exclusive_lock

INDEX_FILE = "index.csv"
INDEX_LOCK = ".index.lock"
COLUMNS = ("run", "status", "task", "stage", "method", "stage1", "source", "target", "seed", "epochs",
           "selected_epoch", "selection", "target_test_accuracy", "source_val_accuracy", "test_map50", "wall_time_s",
           "finished_at")
RUN_GLOBS = ("stage*-*", "det-*")  # classification stages, detection runs


def run_status(run_dir: Path) -> str:
    """done | failed | running (its lock is held) | interrupted (a checkpoint to resume) | submitted | started."""
    if (run_dir / DONE_FILE).exists() and (run_dir / RECORD_FILE).exists():
        return "done"
    if (run_dir / FAILED_FILE).exists():
        return "failed"
    if _locked(run_dir / LOCK_FILE):
        return "running"
    if (run_dir / CHECKPOINT_FILE).exists():
        return "interrupted"
    return "submitted" if (run_dir / SUBMITTED_FILE).exists() else "started"


def _locked(path: Path) -> bool:
    """Whether a process holds the run's training lock (probed with a shared lock, released at once)."""
    try:
        with open(path) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
    except OSError:  # no lock file: never started
        pass
    return False


def index_row(run_dir: Path) -> dict | None:
    """The index row of one run directory, or None when it is not one (no config written yet)."""
    status = run_status(run_dir)
    try:
        if status == "done":
            record = json.loads((run_dir / RECORD_FILE).read_text())
            cfg, stage = record["config"], record.get("stage", "")  # detection records have no stage
        else:
            saved = json.loads((run_dir / CONFIG_FILE).read_text())
            record, cfg, stage = {}, saved["config"], saved.get("stage", "")
    except (OSError, ValueError, KeyError):
        if status not in ("failed", "submitted"):  # not a run directory (yet)
            return None
        record, cfg, stage = {}, {}, run_dir.name.split("-")[0].removeprefix("stage")  # failed before it began
    finished = record.get("finished_at")
    if run_dir.name.startswith("det-"):
        test = (record.get("test") or {}).get(f"nms_{record.get('headline_nms', 0):g}") or {}
        return {"run": run_dir.name, "status": status, "task": "detection", "stage": "", "seed": cfg.get("seed"),
                "method": f"faster_rcnn ({cfg.get('anchors')} anchors, {cfg.get('sampler')} sampler)" if cfg else "",
                "source": cfg.get("weights", ""), "target": cfg.get("dataset", ""),
                "stage1": "", "epochs": len(record.get("history", [])) if record else "",
                "selected_epoch": record.get("selected_epoch", ""), "selection": record.get("selection", ""),
                "target_test_accuracy": "", "source_val_accuracy": "", "test_map50": _fmt(test.get("map_50")),
                "wall_time_s": record.get("wall_time_s", ""), "finished_at": _when(finished)}
    tgt, src = record.get("target_test") or {}, record.get("source_val") or {}
    return {
        "run": run_dir.name, "status": status, "task": "classification", "stage": stage, "method": cfg.get("method"),
        "stage1": cfg.get("stage1") if stage == 2 and cfg.get("stages") == 2 else "",
        "source": cfg.get("source"), "target": cfg.get("target") or "", "seed": cfg.get("seed"),
        "epochs": len(record.get("epochs", [])) if record else "", "selected_epoch": record.get("selected_epoch", ""),
        "selection": record.get("selection", ""),
        "target_test_accuracy": _fmt(tgt.get("accuracy")), "source_val_accuracy": _fmt(src.get("accuracy")),
        "test_map50": "", "wall_time_s": record.get("wall_time_s", ""), "finished_at": _when(finished),
    }


def _fmt(value) -> str:
    return "" if value is None else f"{value:.4f}"


def _when(finished) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(finished)) if finished else ""


def update_index(out: str | os.PathLike) -> Path:
    """Rebuild ``<out>/index.csv`` from every run directory under ``out`` (classification and detection)."""
    out = Path(out)
    with exclusive_lock(out / INDEX_LOCK):
        dirs = sorted(d for pattern in RUN_GLOBS for d in out.glob(pattern))
        rows = [row for d in dirs if d.is_dir() and (row := index_row(d)) is not None]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return atomic_write_text(out / INDEX_FILE, buf.getvalue())


def refresh_index(out: str | os.PathLike) -> None:
    """:func:`update_index`, as a run calls it when it starts, ends or fails: the index is a convenience, and a
    failure to write it is logged, never raised."""
    try:
        update_index(out)
    except OSError as err:
        logging.getLogger(__name__).warning("could not update %s/%s (%s)", out, INDEX_FILE, err)
