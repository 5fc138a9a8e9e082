"""Focal loss for multi-class softmax classification."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

REDUCTIONS = ("mean", "sum", "none")


def check_logits(name: str, logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.dim() != 2 or targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(f"{name} expects logits (N, C) and class-index targets (N,), "
                         f"got {tuple(logits.shape)} and {tuple(targets.shape)}")
    if targets.is_floating_point():
        raise ValueError(f"{name} expects integer class indices as targets, got {targets.dtype}")


class FocalLoss(nn.Module):
    r"""Softmax focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, eq. 5).

    On ``logits`` (N, C) and class indices ``targets`` (N,), with p_i = softmax(logits_i):

        FL_i = -alpha_{y_i} (1 - p_{i,y_i})^gamma log p_{i,y_i}

    ``alpha``: per-class weights (C,) (e.g. from :func:`da.losses.class_weights`) or None (all 1);
    ``gamma >= 0`` down-weights well-classified samples.  ``reduction``: ``mean`` = sum_i FL_i / N (as in
    the paper, normalised by the number of samples, not by the sum of the alpha weights as weighted
    ``nn.CrossEntropyLoss`` is), ``sum``, or ``none`` (per sample, shape (N,)).  With gamma = 0 and no
    alpha it is cross-entropy exactly.  Computed in float32 for half-precision logits (float64 kept).
    """

    def __init__(self, gamma: float = 2.0, alpha: torch.Tensor | None = None, reduction: str = "mean"):
        super().__init__()
        if not gamma >= 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction {reduction!r} is not valid; choose from {', '.join(REDUCTIONS)}")
        if alpha is not None:
            alpha = torch.as_tensor(alpha, dtype=torch.float32).clone()
            if alpha.dim() != 1 or (alpha < 0).any():
                raise ValueError(f"focal alpha must be a vector of non-negative per-class weights, got {alpha}")
        self.gamma, self.reduction = float(gamma), reduction
        self.register_buffer("alpha", alpha)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, alpha={'None' if self.alpha is None else 'per-class'}, reduction={self.reduction!r}"

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        check_logits("FocalLoss", logits, targets)
        if self.alpha is not None and self.alpha.shape[0] != logits.shape[1]:
            raise ValueError(f"focal alpha has {self.alpha.shape[0]} weights for {logits.shape[1]} classes")
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        if self.gamma == 0 and self.alpha is None:
            # the reduction inside cross_entropy sums in another order than .mean(): delegate to be bit-exact
            return F.cross_entropy(logits, targets, reduction=self.reduction)
        ce = F.cross_entropy(logits, targets, reduction="none")  # -log p_y
        loss = ce
        if self.gamma != 0:
            # 1 - p by expm1 keeps precision for confident samples; the floor keeps the gradient finite at
            # p = 1 for gamma < 1 (the loss there is 0 either way)
            one_minus_p = (-torch.expm1(-ce)).clamp_min(torch.finfo(ce.dtype).tiny)
            loss = one_minus_p.pow(self.gamma) * ce
        if self.alpha is not None:
            loss = loss * self.alpha.to(loss)[targets]
        if self.reduction == "mean":
            return loss.mean()
        return loss.sum() if self.reduction == "sum" else loss
