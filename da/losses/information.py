"""Information maximisation on target predictions (SHOT); entropy minimisation as its special case."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InformationMaximization(nn.Module):
    r"""Information-maximisation loss on unlabelled ``logits`` (N, C); returns a scalar.

    As in SHOT (Liang et al., "Do We Really Need to Access the Source Data?", ICML 2020, eq. 2), with
    p_i = softmax(logits_i), pbar = 1/N sum_i p_i and H(p) = -sum_c p_c log p_c:

        L = 1/N sum_i H(p_i) - w * H(pbar)

    The first term makes each prediction confident; the second (the diversity term, weight
    ``diversity_weight`` = w) keeps the batch from collapsing onto one class.  w = 0 is plain entropy
    minimisation (Grandvalet & Bengio, NeurIPS 2004).  Bounds: -w log C <= L <= log C.  H(pbar) uses
    log(pbar + eps) (SHOT uses eps = 1e-5) so a class absent from the batch has a finite gradient.
    Computed in float32 for half-precision logits (float64 kept).

    With a target class prior ``prior`` = q (C,) (an estimate of the target's label distribution, see
    ``da.prior``), the diversity term pulls pbar towards q instead of towards uniform:

        L = 1/N sum_i H(p_i) + w * KL(pbar || q) - w log C

    For q uniform, KL(pbar || u) = log C - H(pbar), so this is the same number as the form above (the
    constant keeps it so); a long-tailed q stops the term from spreading the predictions evenly over
    classes the target holds few of.
    """

    def __init__(self, diversity_weight: float = 1.0, eps: float = 1e-8):
        super().__init__()
        if not diversity_weight >= 0:
            raise ValueError(f"diversity_weight must be >= 0, got {diversity_weight}")
        self.diversity_weight, self.eps = float(diversity_weight), float(eps)

    def extra_repr(self) -> str:
        return f"diversity_weight={self.diversity_weight}, eps={self.eps}"

    def forward(self, logits: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        if logits.dim() != 2 or logits.shape[0] < 1:
            raise ValueError(f"InformationMaximization expects logits (N, C) with N >= 1, got {tuple(logits.shape)}")
        log_p = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=1)
        p = log_p.exp()
        # p * log p from log_softmax: exact 0 * finite for vanishing classes, no log(0)
        entropy = -(p * log_p).sum(1).mean()
        if self.diversity_weight == 0:
            return entropy
        mean_p = p.mean(0)
        diversity = -(mean_p * torch.log(mean_p + self.eps)).sum()
        if prior is not None:
            if prior.shape != mean_p.shape:
                raise ValueError(f"prior has shape {tuple(prior.shape)}, expected ({logits.shape[1]},)")
            q = prior.to(mean_p)
            # -KL(pbar || q) + log C = H(pbar) + sum pbar log(C q)
            diversity = diversity + (mean_p * torch.log(q * len(q) + self.eps)).sum()
        return entropy - self.diversity_weight * diversity
