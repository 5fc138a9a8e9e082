"""Classify a folder of images with a finished run: a CSV with one row per image.

    da-predict --run runs/stage2-<hash> --images path/to/images --out predictions.csv
    da-predict --run runs/stage2-<hash> --images path/to/images --prior-correction
    da-predict --model runs/stage2-<hash>/export --images path/to/images    # the ONNX export, by onnxruntime

(``python experiments/predict.py`` in a checkout is the same program.)  Columns: path (relative to
--images), predicted class, then p_<class> for every class.  Unreadable images are listed and skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from da.deploy import RunNotUsable, load_exported, load_run
from da.deploy.predict import predict_folder, write_csv


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", type=Path, help="a finished run directory (runs/stage2-<hash>)")
    which.add_argument("--model", type=Path, help="an export of da-export (its folder, or model.onnx with "
                                                  "model_card.json beside it)")
    p.add_argument("--images", type=Path, required=True, help="a folder of images, any depth")
    p.add_argument("--out", type=Path, help="the CSV to write, outside --images (default: <run or export>/predictions/"
                                            "<folder>-<8 hex digits of its full path>.csv)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--num-workers", type=int, default=0, help="data-loading worker processes")
    p.add_argument("--prior-correction", action="store_true",
                   help="correct the probabilities to the run's target-prior estimate (runs with --prior)")
    p.add_argument("--progress", type=lambda s: s.lower() in ("1", "true", "yes", "on"), default=True,
                   metavar="BOOL", help="a progress bar on a terminal")
    return p


def default_output(home: Path, images: Path) -> Path:
    """``<home>/predictions/<folder>-<hash>.csv``: two input folders of the same name never share a file."""
    folder = images.resolve()
    return home / "predictions" / f"{folder.name}-{hashlib.sha256(str(folder).encode()).hexdigest()[:8]}.csv"


def check_output(out: Path, images: Path) -> None:
    """Refuse an output that would land among the inputs or replace a file that is not a CSV."""
    target, folder = out.resolve(), images.resolve()
    if target == folder or folder in target.parents:
        raise ValueError(f"--out {out} lies inside --images {images}: it could replace an input; write it elsewhere")
    if target.exists() and (target.is_dir() or target.suffix.lower() != ".csv"):
        raise ValueError(f"--out {out} exists and is not a CSV file; it would be replaced: give a .csv path")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        print("error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        home = args.run or (args.model if args.model.is_dir() else args.model.parent)
        out = args.out or default_output(home, args.images)
        check_output(out, args.images)
        run = load_run(args.run) if args.run else load_exported(args.model)
        rows, skipped = predict_folder(run, args.images, args.batch_size, args.device, args.prior_correction,
                                       args.num_workers, args.progress)
        path = write_csv(rows, out)
    except (FileNotFoundError, ValueError, RunNotUsable, ModuleNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(rows)} image(s) classified, {len(skipped)} skipped: {path}")
    return 0
