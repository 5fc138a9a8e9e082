#!/usr/bin/env python
"""Train and evaluate a Faster R-CNN detector on NWPU VHR-10, or submit a detection sweep (see da-detect -h).

    python experiments/detect.py --anchors fitted --sampler ohem
    python experiments/detect.py --sweep det_nwpu --cluster slurm --profile local
"""

import sys

from da.scripts.detect import main  # the program lives in the package: the da-detect console script is the same

if __name__ == "__main__":
    sys.exit(main())
