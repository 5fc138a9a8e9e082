#!/usr/bin/env python
"""Evaluate a finished run on any registered dataset (or folder:<path>): the record's metrics, as JSON.

    python experiments/evaluate.py --run runs/stage2-<hash> --dataset AID            # a model adapted to RSSCN7, scored on AID
    python experiments/evaluate.py --run runs/stage2-<hash> --dataset RSSCN7 --split test   # its own target-test split again
    python experiments/evaluate.py --run runs/stage2-<hash> --dataset folder:my_images --class-map map.yaml

The dataset's classes reach the
run's through a class map {"classes": {"<run class>": ["<dataset class>", ...]}}: --class-map, else built in,
else equal names.  Writes <run>/evaluations/<dataset>-<split>.json and prints the accuracy.
"""

import sys

from da.scripts.evaluate import main  # the program lives in the package: the da-evaluate console script is the same

if __name__ == "__main__":
    sys.exit(main())
