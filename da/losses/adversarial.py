"""Adversarial domain alignment (DANN, CDAN): gradient reversal, the domain loss, CDAN's conditioning."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

RANDOMIZE_ABOVE = 4096  # CDAN: use the randomised map when d * C exceeds this (Long et al. 2018, sec. 3.2)


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.coeff * grad, None


def grad_reverse(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    r"""The gradient reversal layer R (Ganin & Lempitsky, ICML 2015; Ganin et al., JMLR 2016, eq. 13):
    forward R(x) = x, backward dR/dx = -coeff I.  Any shape; ``coeff`` >= 0 is DANN's lambda_p, usually
    :func:`grl_coefficient` of the training progress."""
    if not coeff >= 0:
        raise ValueError(f"gradient reversal coefficient must be >= 0, got {coeff}")
    return _GradientReversal.apply(x, float(coeff))


def grl_coefficient(progress: float, gamma: float = 10.0) -> float:
    """DANN's schedule lambda_p = 2 / (1 + exp(-gamma p)) - 1 (Ganin et al. 2016, sec. 5.2.2), p in [0, 1]."""
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


class DomainAdversarialLoss(nn.Module):
    r"""Binary cross-entropy of a domain discriminator, source labelled 1 and target 0; returns a scalar.

    With d_i the discriminator's logit and sigma the logistic function (Ganin et al. 2016, eq. 9 with the
    two domains weighted equally, as tllib's ``DomainAdversarialLoss``):

        L = 1/2 [ sum_i w^s_i BCE(sigma(d^s_i), 1) / sum_i w^s_i + sum_j w^t_j BCE(sigma(d^t_j), 0) / sum_j w^t_j ]

    ``d_s`` (Ns,) or (Ns, 1) and ``d_t`` (Nt,) or (Nt, 1) are logits (BCE on logits is stable); the optional
    per-example weights ``w_s``, ``w_t`` (CDAN+E) default to 1, giving the plain mean of each domain.
    The discriminator minimises L; the feature extractor, behind :func:`grad_reverse`, maximises it.
    At chance (d = 0 everywhere) L = log 2.  Computed in float32 for half-precision inputs.
    """

    def forward(self, d_s: torch.Tensor, d_t: torch.Tensor, w_s: torch.Tensor | None = None,
                w_t: torch.Tensor | None = None) -> torch.Tensor:
        d_s, d_t = d_s.reshape(-1).float(), d_t.reshape(-1).float()
        if len(d_s) == 0 or len(d_t) == 0:
            raise ValueError("DomainAdversarialLoss needs at least one source and one target example")
        return 0.5 * (_weighted_bce(d_s, torch.ones_like(d_s), w_s) + _weighted_bce(d_t, torch.zeros_like(d_t), w_t))


def _weighted_bce(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    losses = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    if weight is None:
        return losses.mean()
    weight = weight.reshape(-1).to(losses.dtype)
    return (weight * losses).sum() / weight.sum()


def multilinear_map(f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    r"""CDAN's multilinear conditioning T(f, g) = f (x) g, flattened (Long et al., NeurIPS 2018, eq. 4):
    features ``f`` (N, d) and class probabilities ``g`` (N, C) -> (N, d * C) with entry [n, i * C + c] =
    f[n, i] g[n, c]."""
    if f.dim() != 2 or g.dim() != 2 or len(f) != len(g):
        raise ValueError(f"multilinear_map expects f (N, d) and g (N, C), got {tuple(f.shape)} and {tuple(g.shape)}")
    return torch.bmm(f.unsqueeze(2), g.unsqueeze(1)).flatten(1)


class RandomizedMultilinearMap(nn.Module):
    r"""CDAN's randomised multilinear map (Long et al. 2018, eq. 6) for when d * C is too large:

        T(f, g) = (R_f^T f) * (R_g^T g) / sqrt(k)

    elementwise, with fixed R_f (d, k) and R_g (C, k) drawn once from N(0, 1) by a generator seeded with
    ``seed`` (the global random stream is untouched) and stored as buffers, so a checkpoint restores them.
    Its inner products approximate those of f (x) g in expectation: E[<T(a), T(b)>] = <a (x) g_a, b (x) g_b>.
    """

    def __init__(self, feature_dim: int, num_classes: int, output_dim: int = 1024, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.output_dim = output_dim
        self.register_buffer("r_f", torch.randn(feature_dim, output_dim, generator=gen))
        self.register_buffer("r_g", torch.randn(num_classes, output_dim, generator=gen))

    def forward(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return (f @ self.r_f.to(f.dtype)) * (g @ self.r_g.to(g.dtype)) / math.sqrt(self.output_dim)


def entropy_weights(probs: torch.Tensor) -> torch.Tensor:
    r"""CDAN+E's example weights w_i = 1 + exp(-H(g_i)), H(g) = -sum_c g_c log g_c, normalised to mean 1
    over the examples given (Long et al. 2018, eq. 10 normalises per domain: call once per domain).
    ``probs`` (N, C) -> (N,), without gradient (the weights condition the loss, they are not trained)."""
    with torch.no_grad():
        p = probs.float()
        h = -(p * torch.log(p.clamp_min(1e-12))).sum(1)
        w = 1.0 + torch.exp(-h)
        return w * (len(w) / w.sum())
