#!/usr/bin/env python
"""Submit a sweep (grid x seeds) as Slurm array jobs through submitit, or show its status.

    python experiments/sweep.py --sweep ablation --profile gpu --dry-run
    python experiments/sweep.py --sweep ablation --profile gpu
    python experiments/sweep.py --status ablation

Stage-1 runs go first, once per distinct stage-1 config; the stage-2 array waits for them
(--dependency=afterok), so the whole sweep is submitted at once and this process may exit.  Running the
same command again submits only what is missing; finished runs are skipped, interrupted ones resume.
"""

import sys

from da.scripts.sweep import main  # the program lives in the package: the da-sweep console script is the same

if __name__ == "__main__":
    sys.exit(main())
