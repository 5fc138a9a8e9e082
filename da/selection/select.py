"""From per-epoch validator scores to a selected epoch, online (the engine) and after the fact (tables)."""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from da.selection.base import REGISTRY, EpochOutputs
from da.selection.drift import WHOLESALE

RANK = "rank"  # the rank-average of a set of validators (config: rank_validators)
# The control every validator is read against: the final epoch, i.e. no selection at all.  A rule, not a
# scored validator: its score is the epoch number, so records made before it are re-selected with it too.
LAST = "last"
# The last epoch in which no class of the start model's target predictions moved wholesale into another
# (da.selection.drift); where every epoch did, the one that moved least.
GUARDED = "guarded"
RULES = (LAST, RANK, GUARDED)  # rules computed from the history, not scored by a validator


def score_epoch(out: EpochOutputs, cfg=None) -> tuple[dict[str, float], dict[str, float]]:
    """Every registered validator's score of one epoch (with the settings of ``cfg``, the run's config; None:
    the declared defaults), and the seconds each took."""
    scores, seconds = {}, {}
    for name, cls in REGISTRY.items():
        t = time.perf_counter()
        scores[name] = cls(cfg).score(out)
        seconds[name] = time.perf_counter() - t
    return scores, seconds


def selection_scores(history: Sequence[dict[str, float]], name: str, rank_set: Sequence[str] = ()) -> list[float]:
    """The score of each epoch under rule ``name`` (higher is better).

    For a validator, its own per-epoch scores.  For ``last``: the epoch number (the final epoch wins).  For
    ``guarded``: the epoch number where no class moved wholesale (``drift`` >= -WHOLESALE, or no drift measured:
    a run without a source model is `last`), else the drift score (negative: any epoch that passes wins, and
    among none passing the one that moved least).
    For ``rank``: each validator of ``rank_set`` ranks the
    epochs (1 = worst, ties averaged), and an epoch's score is its mean rank; it is relative, so an
    epoch's score can change as later epochs arrive.
    """
    if name == LAST:
        return [float(i + 1) for i in range(len(history))]
    if name == GUARDED:  # passing epochs score their number (> 0), the others their drift score (< 0)
        drift = selection_scores(history, "drift")
        return [d if -d > WHOLESALE else float(i + 1) for i, d in enumerate(drift)]  # NaN (no source model): passes
    if name != RANK:
        missing = [i + 1 for i, s in enumerate(history) if name not in s]
        if missing:
            raise KeyError(f"validator {name!r} has no score for epoch(s) {missing}")
        return [float("nan") if s[name] is None else float(s[name]) for s in history]  # null in a record: NaN
    if not rank_set:
        raise ValueError("selection 'rank' needs a non-empty set of validators (rank_validators)")
    from scipy.stats import rankdata  # heavy: imported when used

    ranks = np.mean([rankdata(selection_scores(history, v)) for v in rank_set], axis=0)
    return [float(r) for r in ranks]


def best_epoch(history: Sequence[dict[str, float]], name: str, rank_set: Sequence[str] = ()) -> int:
    """The 1-based epoch with the highest score under rule ``name``; the earliest among equals.  A NaN
    score never wins."""
    values = np.array(selection_scores(history, name, rank_set), dtype=float)
    values = np.where(np.isnan(values), -np.inf, values)
    return int(np.argmax(values)) + 1
