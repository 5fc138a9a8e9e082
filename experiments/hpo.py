#!/usr/bin/env python
"""Hyperparameter search without target labels: submit a study's workers, or show its status and table.

    python experiments/hpo.py --study shot_mcc_rsscn7 --out runs --workers 2 --profile local --dry-run
    python experiments/hpo.py --study shot_mcc_rsscn7 --out runs --workers 2 --profile local
    python experiments/hpo.py --study shot_mcc_rsscn7 --out runs --status --table
"""

import sys

from da.scripts.hpo import main  # the program lives in the package: the da-hpo console script is the same

if __name__ == "__main__":
    sys.exit(main())
