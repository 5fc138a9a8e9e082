"""Load every finished run record under a folder into one DataFrame, one row per run."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd

from da.config import RunConfig
from da.records import RecordError, load_record
from da.rundir import DONE_FILE, RECORD_FILE

METRIC_COLUMNS = ("target_acc", "target_f1", "source_val_acc", "oracle_acc", "oracle_f1", "oracle_epoch",
                  "selected_epoch", "wall_time_s", "images_per_s")


def group_hash(config: dict) -> str:
    """The config hash without the seed: runs that differ only in their seed share it."""
    data = {k: v for k, v in RunConfig.from_dict(config).hashed_dict().items() if k != "seed"}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def load_runs(runs_dir: str | os.PathLike, stage: int | None = 2) -> pd.DataFrame:
    """Every finished run under ``runs_dir`` (a ``record.json`` with a ``DONE`` marker beside it).

    Config fields become columns (tuples as text), next to ``target_acc``, ``target_f1``, ... in percent,
    ``config_hash``, ``group`` (hash without seed), ``run_dir`` and ``record`` (the parsed record).
    A record that is incomplete or of another schema raises, naming the file.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"runs folder {runs_dir} does not exist")
    rows = []
    for path in sorted(runs_dir.rglob(RECORD_FILE)):
        if not (path.parent / DONE_FILE).exists():
            continue  # still running, or interrupted: not a result yet
        rec = load_record(path)
        if stage is not None and rec["stage"] != stage:
            continue
        try:
            group = group_hash(rec["config"])
            cfg = RunConfig.from_dict(rec["config"]).to_dict()  # fields added since the record was written: defaults
        except TypeError as err:
            raise RecordError(f"run record {path}: its config does not match this code's RunConfig ({err})") from err
        tgt, oracle = rec["target_test"] or {}, (rec["oracle"] or {})
        row = {k: (json.dumps(v) if isinstance(v, list) else v) for k, v in cfg.items()}
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
    if not rows:
        raise FileNotFoundError(f"no finished run records (record.json + DONE) under {runs_dir}")
    return pd.DataFrame(rows).sort_values(["group", "seed"], kind="stable").reset_index(drop=True)
