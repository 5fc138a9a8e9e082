"""Build the classification loss that a config names (alignment losses are wired by da.methods)."""

from __future__ import annotations

from torch import nn

from da.config import CLS_LOSSES
from da.losses.class_weights import class_weights
from da.losses.focal import FocalLoss
from da.losses.ohem import OHEM


def build_classification_loss(name: str, num_classes: int, class_counts=None, class_weighting: str | None = None,
                              label_smoothing: float = 0.0, focal_gamma: float = 2.0, ohem_ratio: float = 0.25,
                              ohem_min_kept: int = 1, class_weight_beta: float = 0.999) -> nn.Module:
    """A module called as ``loss(logits (N, C), targets) -> scalar``.

    ``ce``: ``nn.CrossEntropyLoss`` with the class weights and label smoothing (soft targets from
    MixUp/CutMix allowed; weighted mean = sum w_y l / sum w_y).  ``focal``: :class:`FocalLoss` with the
    class weights as alpha (no label smoothing).  ``ohem``: :class:`OHEM` over per-sample cross-entropy
    with the same weights and smoothing.  ``class_weighting``: None/'' , ``inverse`` or ``effective``
    (beta ``class_weight_beta``), from ``class_counts`` (C,).
    """
    if name not in CLS_LOSSES:
        raise ValueError(f"classification loss {name!r} is not valid; choose from {', '.join(CLS_LOSSES)}")
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
    if name == "focal" and label_smoothing > 0:
        # silently dropping it would make a config say something the run did not do
        raise ValueError("label smoothing is defined here for cross-entropy (ce, ohem), not for the focal loss")
    weight = None
    if class_weighting:
        if class_counts is None:
            raise ValueError("class weighting needs the class counts of the training split")
        weight = class_weights(class_counts, class_weighting, beta=class_weight_beta)
        if len(weight) != num_classes:
            raise ValueError(f"{len(weight)} class counts for {num_classes} classes")
    if name == "ce":
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
    if name == "focal":
        return FocalLoss(gamma=focal_gamma, alpha=weight)
    return OHEM(nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing, reduction="none"),
                ratio=ohem_ratio, min_kept=ohem_min_kept)

