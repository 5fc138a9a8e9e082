"""Label-free validators: what each scores, and the registry that holds them by name.

A validator scores one epoch's model from :class:`EpochOutputs`: the labelled source-validation split
and the *unlabelled* target training split (a :class:`~da.methods.TargetPass`, which has no labels).
Scores follow one convention: higher is better.  Registering a class (``@register``) in a module of this
package is all it takes for ``--selection`` and the tables to know its name; a validator's own settings
are declared in its class (``settings``, :mod:`da.settings`, hashed only where they differ from their
default) and read from the run's config (``self.cfg``).

A validator's ``version`` counts changes of what its score means (a fix of its estimator, not of its
speed).  Records keep the versions their scores were made with, and tables refuse to pool scores of two
versions of one validator (``da.results.selection``): committed scores are never re-read as a newer
estimator's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from da.config import RunConfig
from da.methods.base import TargetPass
from da.settings import Setting, declare

REGISTRY: dict[str, type["Validator"]] = {}


@dataclass
class SourcePredictions:
    """Logits (N, C), bottleneck features (N, d) and labels (N,) of the source validation split."""

    logits: torch.Tensor
    features: torch.Tensor
    labels: torch.Tensor


@dataclass
class EpochOutputs:
    """``reference``: the class the stage-2 model predicted for each target-train image before its first
    epoch (N,), what prediction drift is measured from; None outside a stage-2 run."""

    source_val: SourcePredictions
    target_train: TargetPass
    reference: torch.Tensor | None = None


class Validator:
    name: ClassVar[str]
    settings: ClassVar[tuple[Setting, ...]] = ()
    version: ClassVar[int] = 1  # bumped when the score's meaning changes; records made before a version have 1

    def __init__(self, cfg=None):
        self.cfg = RunConfig() if cfg is None else cfg  # scored outside a run: the declared defaults

    def score(self, out: EpochOutputs) -> float:
        raise NotImplementedError


def validator_versions() -> dict[str, int]:
    """The version of every registered validator's score, as records keep them."""
    return {name: cls.version for name, cls in sorted(REGISTRY.items())}


def register(cls: type[Validator]) -> type[Validator]:
    if cls.name in REGISTRY:
        raise ValueError(f"validator name {cls.name!r} is taken")
    declare(cls.name, "validator", vars(cls).get("settings", ()))
    REGISTRY[cls.name] = cls
    return cls


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each row of probabilities (N, C) -> (N,), with 0 log 0 = 0."""
    return -(p * torch.log(p.clamp_min(1e-30))).sum(-1)
