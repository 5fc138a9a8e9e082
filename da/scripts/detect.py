"""Train and evaluate a Faster R-CNN detector (issue 20), or submit a detection sweep.

    da-detect --preset smoke                        # every step in a minute or two on a CPU
    da-detect --preset nwpu-cpu                      # the committed NWPU VHR-10 setup (about 50 min on 2 cores)
    da-detect --preset nwpu-cpu --anchors fitted --sampler ohem --seed 1
    da-detect --weights runs/stage1-64615fe0cd87     # backbone from a stage-1 scene-classification run
    da-detect --sweep det_nwpu --cluster slurm --profile local [--dry-run]

(``python experiments/detect.py`` in a checkout is the same program.)  Every field of
``da.detection.config.DetectionConfig`` is a flag (``--min-size 800``, ``--nms-thresholds 0.5 0.3``), built by
the same generator as da-run's (``da.cli``); ``--config file.yaml`` sets several.  Without a preset the defaults
are torchvision's detection reference schedule (12 epochs, lr 0.02: hours on a CPU).  Rerunning the same command
resumes an interrupted run; the last line printed is the run record's path.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import typing

import yaml

from da.cli import Parser, add_config_flags, resolve
from da.detection.config import HELP, PRESETS, DetectionConfig, DetectionConfigError
from da.rundir import RECORD_FILE
from da.utils.interrupt import exit_on_signals

FIELDS = dataclasses.fields(DetectionConfig)


def _parser() -> Parser:
    p = Parser(allow_abbrev=False, prog="da-detect", description=__doc__.split("\n")[0])
    p.add_argument("--sweep", help="submit a detection sweep (a shipped name such as det_nwpu, or a YAML path)")
    p.add_argument("--cluster", choices=("slurm", "local", "debug"), help="with --sweep (default: slurm if sbatch "
                   "is on the PATH or a --profile is given, else local)")
    p.add_argument("--profile", help="with --sweep: a cluster profile (shipped name or YAML path)")
    p.add_argument("--dry-run", action="store_true", help="with --sweep: list the runs and what would be submitted")
    add_config_flags(p, FIELDS, lambda f: HELP[f.name], PRESETS, typing.get_type_hints(DetectionConfig))
    return p


def _error_field(err: Exception) -> str | None:
    """The field a DetectionConfigError names (``detection config <field>=...`` or ``... <field> must/expects``)."""
    text = str(err).removeprefix("detection config ")
    name = text.split("=")[0].split(" ")[0]
    return name if name in {f.name for f in FIELDS} else None


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.sweep:  # the sweep file holds the runs' settings; only where they run comes from the flags
        overrides = {k: getattr(args, k) for k in ("out", "data_root", "device") if getattr(args, k) is not None}
        try:
            from da.detection.sweep import load_detection_sweep, submit_detection_sweep
            submit_detection_sweep(load_detection_sweep(args.sweep), args.cluster, args.profile, args.dry_run,
                                   **overrides)
        except (ValueError, FileNotFoundError, TypeError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    cfg = resolve(parser, args, FIELDS, PRESETS, DetectionConfig.from_dict, _error_field)
    if args.print_config:
        print(f"# config hash {cfg.config_hash()}; run it with --config FILE")
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=True), end="")
        return 0
    from da.detection.data import DetectionDataError
    from da.detection.engine import run_detection
    from da.models import OfflineWeightsError, WeightsError
    from da.rundir import StaleRunError
    try:
        cfg.check_weights()
        exit_on_signals("rerun the same command to resume from the last finished epoch", (signal.SIGTERM, signal.SIGUSR2))
        run_dir = run_detection(cfg)
    except (DetectionConfigError, DetectionDataError, OfflineWeightsError, WeightsError, FileNotFoundError,
            StaleRunError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(run_dir / RECORD_FILE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
