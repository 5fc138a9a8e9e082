"""Minimum class confusion on the target predictions (MCC)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MinimumClassConfusion(nn.Module):
    r"""MCC loss on unlabelled ``logits`` (B, K); returns a scalar in [0, (K - 1) / K].

    Jin, Wang, Long and Wang, "Minimum Class Confusion for Versatile Domain Adaptation", ECCV 2020,
    eq. 1-6.  With temperature T, Y = softmax(logits / T) (B, K), the entropy H_i of row i, and the
    certainty weights W_i = B (1 + exp(-H_i)) / sum_j (1 + exp(-H_j)) (held constant in the backward
    pass, as in the Transfer-Learning-Library), the class correlation

        C = Y^T diag(W) Y                      (K, K), symmetric

    is normalised so that each row sums to one (C_jk / sum_k' C_jk'; the paper divides by column sums,
    the same for a symmetric C up to a transpose, which leaves the loss unchanged), and

        L = 1/K sum_j sum_{k != j} Ctilde_jk  = 1 - trace(Ctilde) / K.

    0 when every example is confidently assigned to one class and no two classes are confused.  Computed
    in float32 for half-precision logits.
    """

    def __init__(self, temperature: float = 2.5):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"MCC temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.dim() != 2 or logits.shape[0] < 1:
            raise ValueError(f"MinimumClassConfusion expects logits (B, K) with B >= 1, got {tuple(logits.shape)}")
        batch, k = logits.shape
        log_y = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)) / self.temperature, dim=1)
        y = log_y.exp()
        entropy = -(y * log_y).sum(1).detach()
        certainty = 1 + torch.exp(-entropy)
        weights = batch * certainty / certainty.sum()
        confusion = (y * weights[:, None]).T @ y
        confusion = confusion / confusion.sum(dim=1, keepdim=True)
        return (confusion.sum() - confusion.trace()) / k
