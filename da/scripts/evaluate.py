"""Evaluate a finished run on any registered dataset (or folder:<path>): the record's metrics, as JSON.

    da-evaluate --run runs/stage2-<hash> --dataset AID            # a model adapted to RSSCN7, scored on AID
    da-evaluate --run runs/stage2-<hash> --dataset RSSCN7 --split test   # its own target-test split again
    da-evaluate --run runs/stage2-<hash> --dataset folder:my_images --class-map map.yaml

(``python experiments/evaluate.py`` in a checkout is the same program.)  The dataset's classes reach the
run's through a class map {"classes": {"<run class>": ["<dataset class>", ...]}}: --class-map, else built in,
else equal names.  Writes <run>/evaluations/<dataset>-<split>.json and prints the accuracy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from da.data.registry import default_data_root, known_names
from da.deploy import RunNotUsable, load_run
from da.deploy.evaluate import SPLITS, evaluate_run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a finished run directory (runs/stage2-<hash>)")
    p.add_argument("--dataset", required=True, help=f"one of {', '.join(known_names())}")
    p.add_argument("--split", choices=SPLITS, default="all",
                   help="all: every readable image; test: the run's own target-test split (its target only)")
    p.add_argument("--class-map", help="JSON/YAML {classes: {run class: [dataset classes]}}; default: built in")
    p.add_argument("--data-root", type=Path, help="default: $DA_DATA_ROOT or ./data")
    p.add_argument("--out", type=Path, help="the JSON to write (default: <run>/evaluations/<dataset>-<split>.json)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--num-workers", type=int, default=0)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run = load_run(args.run)
        result, path = evaluate_run(run, args.dataset, args.data_root or default_data_root(), args.class_map,
                                    args.split, args.batch_size, args.device, args.num_workers, out=args.out)
    except (FileNotFoundError, ValueError, RunNotUsable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    m = result["metrics"]
    print(f"{result['dataset']} ({args.split}, {m['n']} images): accuracy {m['accuracy']:.4f}, "
          f"macro-F1 {m['macro_f1']:.4f}: {path}")
    return 0
