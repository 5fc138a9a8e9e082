"""Label-free model selection: validators (one file each, registered by name) scored after every stage-2
epoch, and the rule that turns per-epoch scores into a selected epoch (``select.py``).

None of them reads a target label: the target split reaches them as a ``TargetPass`` (logits and
features only).  ``source_acc`` (source-validation accuracy) is the default rule.
"""

from __future__ import annotations

import importlib
import pkgutil

from da.selection.base import REGISTRY, EpochOutputs, SourcePredictions, Validator, register, validator_versions
from da.settings import declare_check

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "select"):
        importlib.import_module(f"{__name__}.{_module.name}")

from da.selection.select import GUARDED, LAST, RANK, RULES, best_epoch, score_epoch, selection_scores  # noqa: E402

DEFAULT = "source_acc"


def scored_validator_names() -> list[str]:
    """The validators scored after every epoch (the default first), as records keep them."""
    return sorted(REGISTRY, key=lambda n: (n != DEFAULT, n))


def validator_names() -> list[str]:
    """Every selection rule: the scored validators (default first), then ``last`` (the final epoch, the
    control), ``rank`` (the rank-average of a set of validators) and ``guarded`` (the last epoch in which no
    class moved wholesale, ``drift.py``)."""
    return scored_validator_names() + list(RULES)


def check_validator_name(name: str, option: str = "--selection", allow_rank: bool = True) -> None:
    """``allow_rank`` False: only a scored validator (what ``rank`` averages)."""
    valid = validator_names() if allow_rank else scored_validator_names()
    if name not in valid:
        raise ValueError(f"{option} {name!r} is not valid; choose from {', '.join(valid)}")


declare_check("selection", lambda cfg: check_validator_name(cfg.selection, "--selection"))
declare_check("rank_validators", lambda cfg: [check_validator_name(v, "--rank-validators", allow_rank=False)
                                              for v in cfg.rank_validators])

__all__ = ["EpochOutputs", "SourcePredictions", "Validator", "register", "validator_names", "validator_versions",
           "check_validator_name", "scored_validator_names", "score_epoch", "best_epoch", "selection_scores",
           "GUARDED", "LAST", "RANK", "RULES", "DEFAULT"]
