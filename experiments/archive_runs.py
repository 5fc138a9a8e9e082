#!/usr/bin/env python
"""Copy the records of a finished sweep into a folder to commit (default results/runs).

    python experiments/archive_runs.py --sweep main --runs runs --to results/runs
    python experiments/archive_runs.py --detection-sweep det_nwpu --runs runs/detection --to results/detection/runs

Per run it keeps record.json, the DONE marker and config.json; features.npz (bottleneck features for the
t-SNE figure) only for the runs named by --features-seed.  Checkpoints and caches stay behind.  A run whose
record is archived there already is left as it is; one archived with another record (the same configuration
trained again) keeps the archived one and is named on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from da import records
from da.rundir import archive_run
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
    outcomes: dict[str, list[str]] = {"copied": [], "same": [], "kept": []}
    missing = 0
    finished = []  # (run directory, keep its features)
    for name in args.detection_sweep:
        from da.detection.sweep import load_detection_sweep

        for cfg in load_detection_sweep(name).configs(out=str(Path(args.runs).resolve())):
            finished.append((cfg.run_dir(), False))
    for name in args.sweep:
        for run in plan(load_sweep(name), out=str(Path(args.runs).resolve())):
            finished.append((run.run_dir, run.stage == 2 and run.cfg.seed == args.features_seed))
    for run_dir, features in finished:
        if not records.is_done(run_dir):
            missing += 1
            continue
        outcomes[archive_run(run_dir, dest, features)].append(run_dir.name)
    print(f"archived {len(outcomes['copied'])} finished runs to {dest}, {len(outcomes['same'])} were there already "
          f"({missing} not finished)")
    if outcomes["kept"]:
        print(f"kept the record already in {dest} of {len(outcomes['kept'])} run(s) whose record here differs (the "
              f"same configuration trained again; the committed one stays, with what cites it): "
              f"{', '.join(sorted(outcomes['kept']))}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
