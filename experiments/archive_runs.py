#!/usr/bin/env python
"""Copy the records of a finished sweep into a folder to commit (default results/runs).

    python experiments/archive_runs.py --sweep main --runs runs --to results/runs
    python experiments/archive_runs.py --detection-sweep det_nwpu --runs runs/detection --to results/detection/runs

Per run it keeps record.json, the DONE marker and config.json; features.npz (bottleneck features for the
t-SNE figure) only for the runs named by --features-seed.  Checkpoints and caches stay behind.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from da import records
from da.rundir import ARCHIVED_FILES, FEATURES_FILE
from da.launch import load_sweep, plan


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", action="append", default=[], help="sweep name(s); repeat for several")
    ap.add_argument("--detection-sweep", action="append", default=[],
                    help="detection sweep name(s) (da/detection/sweeps); their det-* runs")
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--to", default="results/runs")
    ap.add_argument("--features-seed", type=int, default=0, help="keep features.npz of runs with this seed")
    args = ap.parse_args(argv)
    if not args.sweep and not args.detection_sweep:
        ap.error("give --sweep or --detection-sweep")
    dest = Path(args.to)
    kept = missing = 0
    for name in args.detection_sweep:
        from da.detection.sweep import load_detection_sweep

        for cfg in load_detection_sweep(name).configs(out=str(Path(args.runs).resolve())):
            if not records.is_done(cfg.run_dir()):
                missing += 1
                continue
            target = dest / cfg.run_dir().name
            target.mkdir(parents=True, exist_ok=True)
            for f in ARCHIVED_FILES:
                shutil.copy2(cfg.run_dir() / f, target / f)
            kept += 1
    for name in args.sweep:
        for run in plan(load_sweep(name), out=str(Path(args.runs).resolve())):
            if not records.is_done(run.run_dir):
                missing += 1
                continue
            target = dest / run.run_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for f in ARCHIVED_FILES:
                shutil.copy2(run.run_dir / f, target / f)
            if run.stage == 2 and run.cfg.seed == args.features_seed and (run.run_dir / FEATURES_FILE).exists():
                shutil.copy2(run.run_dir / FEATURES_FILE, target / FEATURES_FILE)
            kept += 1
    print(f"archived {kept} finished runs to {dest} ({missing} not finished)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
