"""Run one experiment: ImageNet -> stage 1 (supervised) -> stage 2 (adaptation), resumable.

    da-run --method coral
    da-run --method mmd --cls-loss focal --stages 1 --seed 2
    da-run --preset paper --method coral --data-root /data

(``python experiments/run.py`` in a checkout is the same program.)

Rerunning the same command resumes an interrupted run from its last epoch checkpoint, and reuses a
finished stage 1.  The last line printed is the path of the run record (JSON).
"""

from __future__ import annotations

import logging
import signal
import sys

from da.cli import config_from_args
from da.records import load_record, summary
from da.utils.interrupt import exit_on_signals


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(argv, __doc__.splitlines()[0])
    # heavy (torchvision, timm, the data pipeline): imported once the arguments are checked, so that --help and
    # a bad flag answer without them
    from da.data.download import DownloadError
    from da.models import OfflineWeightsError, WeightsError
    from da.train import run_experiment

    # checkpoints are written atomically at each epoch end: stopping loses at most the current epoch
    exit_on_signals("rerun the same command to resume from the last finished epoch", (signal.SIGTERM, signal.SIGUSR2))
    try:
        record = run_experiment(cfg)
    except (FileNotFoundError, ValueError, WeightsError, OfflineWeightsError) as err:  # bad input: the message says what to do
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (OSError, DownloadError) as err:  # a read-only --out, a full disk, a failed download: the message says
        print(f"error: {err}", file=sys.stderr)  # which file or address, and what to do
        return 1
    print(summary(load_record(record)), flush=True)
    print(record)  # the last line: scripts read the record path from it
    return 0



if __name__ == "__main__":
    sys.exit(main())
