"""Prediction drift from the source model: how far the adapted model's target predictions moved,
per class, and whether some class moved wholesale into another (the collapse that every validator invariant
to a permutation of clusters misses: entropy, IM, BNM, class-AMI, SND score a model that swaps two classes
exactly as they score the truth).

The reference is the source model: the stage-1 model (trained on the source's labels only) that stage 2
starts from, its classifier applied to the stage-2 start features and its classes read through the class map
(:func:`source_predictions`; stage 2's own classifier may start new, so its first predictions say nothing).
Label-free: it compares two sets of predictions on the unlabelled target training split.  For each class c
that the source model predicted for at least ``MIN_IMAGES`` images, ``moved(c, c')`` is the share of those
images now predicted c' != c; a class has moved *wholesale* when one ``moved(c, c')`` exceeds
``WHOLESALE`` (more than half of what the source model called c is now one other class: either the source
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
    """``changed`` (C,): per source-model class, the share of its images whose predicted class changed (NaN
    where it was predicted fewer than MIN_IMAGES times); ``to`` (C,) the class most of them went to and
    ``to_share`` (C,) that class's share of all its images; ``counts`` (C,) the source model's counts;
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


def source_predictions(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, classes: list[str],
                       label_of: dict[str, int]) -> torch.Tensor:
    """The source model's predicted shared class per image (N,): the linear classifier (``weight`` (K, d),
    ``bias`` (K,)) over ``classes`` (its K source classes) applied to ``features`` (N, d), the argmax over the
    classes that ``label_of`` maps (source class -> shared class index), read through that map."""
    mapped = [k for k, name in enumerate(classes) if name in label_of]
    if not mapped:
        raise ValueError(f"none of the source model's classes ({', '.join(classes[:5])}, ...) is in the class map")
    logits = features.float() @ weight.float()[mapped].T + bias.float()[mapped]
    shared = torch.tensor([label_of[classes[k]] for k in mapped])
    return shared[logits.argmax(1)]


@register
class DriftValidator(Validator):
    """score = -(largest share of one source-model class now predicted as a single other class), in [-1, 0]:
    higher is less drift.  As a rule by itself it prefers the epoch that moved least; its use is the guard of
    the ``guarded`` rule.  No reference (a one-stage run has no source model): NaN."""

    name = "drift"

    def score(self, out: EpochOutputs) -> float:
        if out.reference is None:
            return float("nan")
        logits = out.target_train.logits
        return -prediction_drift(out.reference, logits.argmax(1), logits.shape[1]).largest
