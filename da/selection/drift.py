"""Prediction drift from the model stage 2 started from: how far the adapted model's target predictions moved,
per class, and whether some class moved wholesale into another (the collapse that every validator invariant
to a permutation of clusters misses: entropy, IM, BNM, class-AMI, SND score a model that swaps two classes
exactly as they score the truth).

Label-free: it compares two sets of predictions on the unlabelled target training split.  For each class c
that the start model predicted for at least ``MIN_IMAGES`` images, ``moved(c, c')`` is the share of those
images now predicted c' != c; a class has moved *wholesale* when one ``moved(c, c')`` exceeds
``WHOLESALE`` (more than half of what the start model called c is now one other class: either the start
model's c was mostly wrong, or the adaptation relabelled the class).  The rule ``guarded`` of
``da.selection.select`` keeps the last epoch in which no class moved wholesale.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from da.selection.base import EpochOutputs, Validator, register

WHOLESALE = 0.5  # a priori: a majority of a class's predictions in one other class
MIN_IMAGES = 5  # classes the start model predicted fewer times than this are too small to judge


@dataclass
class Drift:
    """``changed`` (C,): per start-model class, the share of its images whose predicted class changed (NaN
    where it was predicted fewer than MIN_IMAGES times); ``to`` (C,) the class most of them went to and
    ``to_share`` (C,) that class's share of all its images; ``counts`` (C,) the start model's counts;
    ``overall`` the share of all images (every class) whose predicted class changed."""

    changed: torch.Tensor
    to: torch.Tensor
    to_share: torch.Tensor
    counts: torch.Tensor
    overall: float  # the share of all images whose predicted class changed

    @property
    def largest(self) -> float:
        """The largest share of one class that moved into a single other class (0 where nothing moved)."""
        valid = ~torch.isnan(self.to_share)
        return float(self.to_share[valid].max()) if valid.any() else 0.0

    def summary(self, classes: list[str]) -> dict:
        """For the record: the overall share changed and, per class judged, its share changed and where the
        most of it went."""
        per_class = {}
        for c, name in enumerate(classes):
            if not torch.isnan(self.changed[c]):
                per_class[name] = {"images": int(self.counts[c]), "changed": round(float(self.changed[c]), 4),
                                   "most_to": classes[int(self.to[c])], "most_to_share": round(float(self.to_share[c]), 4)}
        return {"changed": round(self.overall, 4), "largest_wholesale_share": round(self.largest, 4), "classes": per_class}


def prediction_drift(reference: torch.Tensor, current: torch.Tensor, num_classes: int) -> Drift:
    """Drift from the predicted classes ``reference`` (N,) to ``current`` (N,), both integer class indices."""
    reference, current = reference.long(), current.long()
    moves = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    moves.index_put_((reference, current), torch.ones(len(reference), dtype=torch.float64), accumulate=True)
    counts = moves.sum(1)
    shares = moves / counts.clamp_min(1)[:, None]
    off = shares.clone()
    off.fill_diagonal_(0)
    to_share, to = off.max(1)
    judged = counts >= MIN_IMAGES
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    changed = torch.where(judged, 1 - shares.diagonal(), nan)
    overall = float(1 - moves.diagonal().sum() / max(1, len(reference)))
    return Drift(changed, to, torch.where(judged, to_share, nan), counts, overall)


@register
class DriftValidator(Validator):
    """score = -(largest share of one start-model class now predicted as a single other class), in [-1, 0]:
    higher is less drift.  As a rule by itself it prefers the epoch that moved least; its use is the guard of
    the ``guarded`` rule.  No reference (outside a stage-2 run): NaN."""

    name = "drift"

    def score(self, out: EpochOutputs) -> float:
        if out.reference is None:
            return float("nan")
        logits = out.target_train.logits
        return -prediction_drift(out.reference, logits.argmax(1), logits.shape[1]).largest
