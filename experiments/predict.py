#!/usr/bin/env python
"""Classify a folder of images with a finished run: a CSV with one row per image.

    python experiments/predict.py --run runs/stage2-<hash> --images path/to/images --out predictions.csv
    python experiments/predict.py --run runs/stage2-<hash> --images path/to/images --prior-correction

Columns: path (relative to
--images), predicted class, then p_<class> for every class.  Unreadable images are listed and skipped.
"""

import sys

from da.scripts.predict import main  # the program lives in the package: the da-predict console script is the same

if __name__ == "__main__":
    sys.exit(main())
