"""Choices made from the other pair's records: the procedures that the protocol sweeps name, so that a test
(and a reader) can recompute each choice from the committed records it cites.

A pair's selection rule, best method and budget must never come from its own target labels; they come
from the runs of the other pair, by a rule written in the sweep file before its runs (``choices``).
"""

from __future__ import annotations

import pandas as pd

from da.config import RunConfig
from da.data.registry import get_spec
from da.results.selection import validator_table
from da.selection import LAST, RANK


def pair_of(source: str, target: str) -> str:
    """``"AID -> RSSCN7"``: a pair by the datasets' class-map names (a label-shifted view is its dataset)."""
    return f"{get_spec(source).map_name} -> {get_spec(target).map_name}"


def _label_free(runs: pd.DataFrame) -> pd.DataFrame:
    """The label-free adaptation runs: no target label in training, no prior estimate, not source-only."""
    return runs[(runs["target_labeled_fraction"] == 0) & (runs["prior"] == "") & (runs["method"] != "source_only")]


def _configuration_means(runs: pd.DataFrame) -> pd.Series:
    """Mean target accuracy per label-free configuration (:func:`configuration`)."""
    free = _label_free(runs)
    return free.groupby(free.apply(configuration, axis=1))["target_acc"].mean()


def choose_selection(runs: pd.DataFrame) -> tuple[str, dict[str, tuple[float, float, float]]]:
    """The selection rule the protocol takes from another pair's ``runs``: among the rules but ``last``
    and ``rank``, those whose per-run paired difference in target accuracy against the last epoch has a
    95 % interval above 0, the one with the largest mean difference; else ``last``, the control.  Returns
    the rule and, per rule, (mean, low, high) of that difference (points)."""
    evidence = {}
    for _, row in validator_table(runs).iterrows():
        if row["validator"] not in (LAST, RANK):
            p = row["vs_last"]
            evidence[row["validator"]] = (p.mean, *p.interval())
    better = {n: e for n, e in evidence.items() if e[1] > 0}
    return (max(better, key=lambda n: better[n][0]) if better else LAST), evidence


def best_methods(runs: pd.DataFrame, count: int = 2) -> list[str]:
    """The ``count`` label-free methods (no target label in training, no prior estimate) with the highest
    mean target accuracy in ``runs`` (already selected by the rule of the pair); of two with the same mean, the
    one with fewer components (``shot+mcc`` before ``shot+mcc+adabn``)."""
    return preferred(_label_free(runs).groupby("method")["target_acc"].mean())[:count]


def preferred(means: pd.Series) -> list[str]:
    """Method or configuration names (the index) by their mean, highest first; equal means (the same images
    right: equal to float rounding) go to the simpler one, with fewer '+' parts, then to the name."""
    return sorted(means.index, key=lambda c: (-round(float(means[c]), 9), c.split(",")[0].count("+"), c))


# fields of the recipe (the source loss, what stage 2 trains, which weights it keeps) a candidate may change beside
# its method's settings; a configuration names them only away from their default, so that the name of every
# configuration that keeps them is what it was before
RECIPE_FIELDS = ("cls_loss", "label_smoothing", "mixup_alpha", "cutmix_alpha", "strategy", "stage1_strategy",
                 "weight_ema")
_RECIPE_DEFAULTS = {name: getattr(RunConfig(), name) for name in RECIPE_FIELDS}


def _recipe_default(row, name: str) -> bool:
    # a stage 1 of the stage-2 strategy is the default stage 1, however the record spells it ("" or the strategy)
    return row[name] == _RECIPE_DEFAULTS[name] or (name == "stage1_strategy" and row[name] == row.get("strategy"))


def configuration_settings(row) -> tuple[dict, dict]:
    """A run's method's own settings (those its parts read) and its source recipe where it is not the default,
    each ``{name: value}`` in the order :func:`configuration` names them."""
    from da import settings as declared

    parts = str(row["method"]).split("+")
    own = sorted(name for name in declared.USED_BY if name in row and declared.used_by(name, parts))
    recipe = [name for name in RECIPE_FIELDS if name in row and not _recipe_default(row, name)]
    return {name: row[name] for name in own}, {name: row[name] for name in recipe}


def configuration(row) -> str:
    """A run's method and the values of the method's own settings (those its parts read), the same on either
    pair: ``fixmatch+mcc, fixmatch_ema 0.99, ..., mcc_weight 1.0``; then the source recipe where it is not
    the default (``mcc, mcc_temperature 2.5, label_smoothing 0.1``).  What a choice carries to the other pair."""
    own, recipe = configuration_settings(row)
    return ", ".join([str(row["method"]), *(f"{name} {value}" for name, value in (own | recipe).items())])


def best_configurations(runs: pd.DataFrame, count: int = 1) -> list[str]:
    """As :func:`best_methods`, over configurations (:func:`configuration`: a method with its own settings)
    instead of methods, so that a method run at several settings is chosen at one of them rather than at
    their mean; ties go to fewer components, then the configuration's name."""
    return preferred(_configuration_means(runs))[:count]


def finalists(runs: pd.DataFrame, tolerance: float = 0.5) -> list[str]:
    """The label-free configurations whose mean target accuracy is within ``tolerance`` points of the best
    one's, best first (the order of :func:`best_configurations`): the candidates too close to the leader for
    their means, often from different trainings of one stage-1 configuration, to tell apart.  A sweep reruns
    them from one stage-1 model, so that the choice among them compares runs that differ only in their
    configuration.  ``tolerance`` is :func:`choose_budget`'s."""
    means = _configuration_means(runs)
    if means.empty:
        raise ValueError("no label-free adaptation runs to choose finalists from")
    top = float(means.max())
    return [c for c in preferred(means) if float(means[c]) >= top - tolerance - 1e-9]


def choose_budget(runs: pd.DataFrame, tolerance: float = 0.5) -> tuple[int, dict[int, float]]:
    """The stage-2 budget the protocol takes from another pair's budget sweep: per budget (``epochs``), the
    mean target accuracy of its label-free adaptation methods at the epoch of that pair's rule; the smallest
    budget within ``tolerance`` points of the best one (a longer run must earn its cost).  Returns the budget
    and the mean per budget."""
    free = _label_free(runs)
    means = {int(e): float(g["target_acc"].mean()) for e, g in free.groupby("epochs")}
    if not means:
        raise ValueError("no label-free adaptation runs to choose a budget from")
    top = max(means.values())
    return min(e for e, m in means.items() if m >= top - tolerance), means
