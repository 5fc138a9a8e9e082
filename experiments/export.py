#!/usr/bin/env python
"""Export a finished run for deployment: ONNX (checked with onnxruntime), INT8 (PyTorch PT2E), a model card.

    python experiments/export.py --run runs/stage2-<hash>
    python experiments/export.py --run runs/stage2-<hash> --out deploy/aid-rsscn7 --eval-images 200

Writes model.onnx, model_int8.pt2, checks.json and model_card.json into --out (default RUN/export), all
at once.  The last line printed is the path of the model card.
"""

import sys

from da.scripts.export import main  # the program lives in the package: the da-export console script is the same

if __name__ == "__main__":
    sys.exit(main())
