"""Online hard example mining (OHEM) for classification."""

from __future__ import annotations

import math

import torch
from torch import nn


class OHEM(nn.Module):
    r"""Average a per-sample loss over the hardest samples of the batch only.

    After Shrivastava et al., "Training Region-based Object Detectors with Online Hard Example Mining",
    CVPR 2016, applied to whole images instead of regions.  ``per_sample_loss(logits, targets)`` must
    return one loss per sample, shape (N,) (e.g. ``nn.CrossEntropyLoss(reduction="none")``, whose class
    weights and label smoothing then apply per sample).  With l the per-sample losses and

        k = min(N, max(min_kept, ceil(ratio * N))),

    the loss is the plain mean over the k largest: L = 1/k sum_{i in top-k(l)} l_i.  Selection uses the
    detached values, so the other N - k samples get exactly zero gradient.  ratio = 1 gives the mean of
    the wrapped loss.  Called as ``loss(logits, targets)``.
    """

    def __init__(self, per_sample_loss: nn.Module, ratio: float = 0.25, min_kept: int = 1):
        super().__init__()
        if not 0 <= ratio <= 1:
            raise ValueError(f"OHEM ratio must lie in [0, 1], got {ratio}")
        if int(min_kept) != min_kept or min_kept < 1:
            raise ValueError(f"OHEM min_kept must be an integer >= 1, got {min_kept}")
        self.per_sample_loss, self.ratio, self.min_kept = per_sample_loss, float(ratio), int(min_kept)

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, min_kept={self.min_kept}"

    def num_kept(self, n: int) -> int:
        return min(n, max(self.min_kept, math.ceil(self.ratio * n)))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        losses = self.per_sample_loss(logits, targets)
        if losses.dim() != 1 or losses.shape[0] != logits.shape[0]:
            raise ValueError(f"OHEM needs one loss per sample, shape ({logits.shape[0]},), got "
                             f"{tuple(losses.shape)}: build the wrapped loss with reduction='none'")
        k = self.num_kept(losses.shape[0])
        if k == losses.shape[0]:
            return losses.mean()  # same reduction as the wrapped loss's own mean
        kept = torch.topk(losses.detach(), k, sorted=False).indices
        return losses[kept].mean()
