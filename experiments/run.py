#!/usr/bin/env python
"""Run one experiment: ImageNet -> stage 1 (supervised) -> stage 2 (adaptation), resumable.

    python experiments/run.py --method coral
    python experiments/run.py --method mmd --cls-loss focal --stages 1 --seed 2
    python experiments/run.py --preset paper --method coral --data-root /data

Rerunning the same command resumes an interrupted run from its last epoch checkpoint, and reuses a
finished stage 1.  The last line printed is the path of the run record (JSON).
"""

import sys

from da.scripts.run import main  # the program lives in the package: the da-run console script is the same

if __name__ == "__main__":
    sys.exit(main())
