#!/usr/bin/env python
"""Regenerate the ablation tables (results/tables/) and figures (results/figures/) from run records.

    python experiments/tables.py --runs results/runs --out results
    python experiments/tables.py --runs results/runs --sweep main --sweep label_shift --out results/label_shift

Tables: mean +- std over seeds of target accuracy and macro F1 at the selected epoch (source-validation
accuracy, or another label-free rule with --selection, re-selected from the per-epoch scores in the
records), the gain over the matching source-only row, best in bold (Markdown and LaTeX); the oracle
(best target-test epoch) in its own table; the proxy A-distance of the bottleneck features; and, when
the records hold validator scores, the validator table (each rule's selected accuracy, gap to the
oracle and rank correlation with target accuracy).
"""

import sys

from da.scripts.tables import main  # the program lives in the package: the da-tables console script is the same

if __name__ == "__main__":
    sys.exit(main())
