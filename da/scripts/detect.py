"""Train and evaluate a Faster R-CNN detector (issue 20), or submit a detection sweep.

    da-detect                                       # NWPU VHR-10, ImageNet Lite0, default anchors and sampler
    da-detect --anchors fitted --sampler ohem --seed 1
    da-detect --weights runs/stage1-64615fe0cd87     # backbone from a stage-1 scene-classification run
    da-detect --sweep det_nwpu --cluster slurm --profile local [--dry-run]

(``python experiments/detect.py`` in a checkout is the same program.)  Every field of
``da.detection.config.DetectionConfig`` is a flag (``--min-size 800``, ``--nms-thresholds 0.5 0.3``);
``--config file.yaml`` sets several.  Rerunning the same command resumes an interrupted run; the last line
printed is the run record's path.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import typing

import yaml

from da.detection.config import DetectionConfig, DetectionConfigError
from da.rundir import RECORD_FILE
from da.utils.safeload import load_file


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, prog="da-detect", description=__doc__.split("\n")[0])
    p.add_argument("--config", help="YAML mapping of DetectionConfig fields (flags override it)")
    p.add_argument("--sweep", help="submit a detection sweep (a shipped name such as det_nwpu, or a YAML path)")
    p.add_argument("--cluster", choices=("slurm", "local", "debug"), help="with --sweep (default: slurm if sbatch "
                   "is on the PATH, else local)")
    p.add_argument("--profile", help="with --sweep: a cluster profile (shipped name or YAML path)")
    p.add_argument("--dry-run", action="store_true", help="with --sweep: list the runs and what would be submitted")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and its hash, then exit")
    hints = typing.get_type_hints(DetectionConfig)
    for f in dataclasses.fields(DetectionConfig):
        kind = hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            p.add_argument(flag, dest=f.name, type=_bool, metavar="{true,false}", default=None)
        elif typing.get_origin(kind) is tuple:
            p.add_argument(flag, dest=f.name, type=typing.get_args(kind)[0], nargs="+", default=None)
        else:
            p.add_argument(flag, dest=f.name, type=kind, default=None)
    return p


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def config_from_args(args: argparse.Namespace) -> dict:
    values: dict = {}
    if args.config:
        try:
            data = load_file(args.config, "--config", yaml_only=True) or {}
        except ValueError as err:
            raise DetectionConfigError(str(err)) from None
        if not isinstance(data, dict):
            raise DetectionConfigError(f"--config {args.config}: expected a mapping of DetectionConfig fields")
        values.update(data)
    for f in dataclasses.fields(DetectionConfig):
        if getattr(args, f.name) is not None:
            values[f.name] = getattr(args, f.name)
    return values


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        values = config_from_args(args)
        if args.sweep:
            from da.detection.sweep import load_detection_sweep, submit_detection_sweep
            overrides = {k: v for k, v in values.items() if k in ("out", "data_root", "device")}
            submit_detection_sweep(load_detection_sweep(args.sweep), args.cluster, args.profile, args.dry_run,
                                   **overrides)
            return 0
        cfg = DetectionConfig.from_dict(values)
        if not args.print_config:
            cfg.check_weights()
    except (DetectionConfigError, ValueError, FileNotFoundError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        print(f"# config hash {cfg.config_hash()}")
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=True), end="")
        return 0
    from da.detection.data import DetectionDataError
    from da.detection.engine import run_detection
    from da.models import OfflineWeightsError, WeightsError
    try:
        run_dir = run_detection(cfg)
    except (DetectionDataError, OfflineWeightsError, WeightsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(run_dir / RECORD_FILE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
