"""Load every finished run record under a folder into one DataFrame, one row per run."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import pandas as pd

from da.config import RunConfig
from da.records import RecordError, load_record
from da.rundir import DONE_FILE, RECORD_FILE

METRIC_COLUMNS = ("target_acc", "target_f1", "source_val_acc", "oracle_acc", "oracle_f1", "oracle_epoch",
                  "selected_epoch", "wall_time_s", "images_per_s")


def group_hash(config: dict) -> str:
    """The config hash without the seed: runs that differ only in their seed share it."""
    data = {k: v for k, v in RunConfig.from_record(config).hashed_dict().items() if k != "seed"}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def _check_metrics(rec: dict) -> None:
    """Accuracies and F1 of the reported, oracle and per-epoch numbers are finite fractions in [0, 1]."""
    def check(where: str, m: dict | None) -> None:
        for key in ("accuracy", "macro_f1"):
            if m is not None and not (isinstance(m.get(key), (int, float)) and 0 <= m[key] <= 1):
                raise RecordError(f"{where} {key} = {m.get(key)!r} is not a fraction in [0, 1]")

    check("target_test", rec["target_test"])
    check("source_val", rec["source_val"])
    check("oracle target_test", (rec["oracle"] or {}).get("target_test"))
    for e in rec["epochs"]:
        check(f"epoch {e.get('epoch')} target_test", e.get("target_test"))
        check(f"epoch {e.get('epoch')} source_val", e.get("source_val"))


def load_runs(runs_dir: str | os.PathLike, stage: int | None = 2, strict: bool = False) -> pd.DataFrame:
    """Every finished run under ``runs_dir`` (a ``record.json`` with a ``DONE`` marker beside it).

    Config fields become columns (tuples as text), next to ``target_acc``, ``target_f1``, ... in percent,
    ``config_hash``, ``group`` (hash without seed), ``run_dir`` and ``record`` (the parsed record).
    A bad record (unreadable, incomplete, another schema, a config this code cannot read, a metric that is
    not a fraction in [0, 1]) is left out with a warning that names it; with ``strict`` it raises instead,
    naming every bad record.  The same run found twice (same config hash and seed: a copied run directory)
    counts once, with a warning.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"runs folder {runs_dir} does not exist")
    rows, bad, seen = [], [], {}
    for path in sorted(runs_dir.rglob(RECORD_FILE)):
        if not (path.parent / DONE_FILE).exists():
            continue  # still running, or interrupted: not a result yet
        try:
            rec = load_record(path)
            if stage is not None and rec["stage"] != stage:
                continue
            try:
                group = group_hash(rec["config"])
                cfg = RunConfig.from_record(rec["config"]).to_dict()  # fields added since the record: defaults
            except TypeError as err:
                raise RecordError(f"run record {path}: its config does not match this code's RunConfig ({err})") from err
            try:
                _check_metrics(rec)
            except RecordError as err:
                raise RecordError(f"run record {path}: {err}") from None
        except RecordError as err:
            bad.append(str(err))
            continue
        key = (rec["config_hash"], rec["seed"])
        if key in seen:
            warnings.warn(f"{path.parent} repeats the run {seen[key]} (config {key[0]}, seed {key[1]}); counted once")
            continue
        seen[key] = path.parent
        tgt, oracle = rec["target_test"] or {}, (rec["oracle"] or {})
        row = {k: (json.dumps(v) if isinstance(v, list) else v) for k, v in cfg.items()}
        row["stage1_strategy"] = cfg["stage1_strategy"] or cfg["strategy"]  # '' is the run's own: one value per stage 1
        row["target_batch_size"] = cfg["target_batch_size"] or cfg["batch_size"]  # 0 is --batch-size: one value per batch
        row.update({
            "target_acc": 100 * tgt["accuracy"] if tgt else float("nan"),
            "target_f1": 100 * tgt["macro_f1"] if tgt else float("nan"),
            "source_val_acc": 100 * rec["source_val"]["accuracy"],
            "oracle_acc": 100 * oracle["target_test"]["accuracy"] if oracle else float("nan"),
            "oracle_f1": 100 * oracle["target_test"]["macro_f1"] if oracle else float("nan"),
            "oracle_epoch": oracle.get("epoch"),
            "selected_epoch": rec["selected_epoch"],
            "wall_time_s": rec["wall_time_s"],
            "images_per_s": rec["images_per_s"],
            "config_hash": rec["config_hash"],
            "group": group,
            "run_dir": str(path.parent.relative_to(runs_dir)),
            "record": rec,
        })
        rows.append(row)
    if bad:
        if strict:
            raise RecordError(f"{len(bad)} bad run record(s):\n" + "\n".join(bad))
        for message in bad:
            warnings.warn(f"left out: {message}")
    if not rows:
        raise FileNotFoundError(f"no finished run records (record.json + DONE) under {runs_dir}")
    return pd.DataFrame(rows).sort_values(["group", "seed"], kind="stable").reset_index(drop=True)


def load_runs_of(runs_dirs, stage: int | None = 2, strict: bool = False) -> pd.DataFrame:
    """The runs of several folders (:func:`load_runs` of each), a run archived in more than one of them (the
    same config hash and seed) counted once: what a choice citing several folders reads."""
    frames = [load_runs(d, stage=stage, strict=strict) for d in runs_dirs]
    runs = pd.concat(frames, ignore_index=True)
    return runs.drop_duplicates(["config_hash", "seed"]).reset_index(drop=True)


def reported_confusion(row) -> list[list[int]]:
    """A run's (a row of :func:`load_runs`) target-test confusion matrix at its reported epoch: that of the
    epoch re-selected after training (``confusion``, da.results.selection.reselect) where the record keeps one
    per epoch, else the record's (the epoch selected in training)."""
    kept = row.get("confusion")
    return kept if isinstance(kept, list) else row["record"]["target_test"]["confusion"]
