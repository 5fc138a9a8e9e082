"""CORAL: correlation alignment of source and target features."""

from __future__ import annotations

import torch
from torch import nn

CONVENTIONS = ("deep_coral", "domainbed")


def statistics_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half/bfloat16 inputs, float64 kept (so gradcheck and float64 references stay exact)."""
    return torch.promote_types(x.dtype, torch.float32)


def _mean(x: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    return x.mean(dim=0) if w is None else (w[:, None] * x).sum(0) / w.sum()


def _covariance(x: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """Unbiased covariance (centred, divided by n - 1) of the rows of x: (n, d) -> (d, d).  With weights w
    (n,): sum_i w_i (x_i - mu_w)(x_i - mu_w)^T / (V1 - V2 / V1), V1 = sum w, V2 = sum w^2 (reliability
    weights), which is the unweighted form for equal weights."""
    if w is None:
        centred = x - x.mean(dim=0, keepdim=True)
        return centred.T @ centred / (x.shape[0] - 1)
    centred = x - _mean(x, w)
    v1 = w.sum()
    # one example holding all the weight: a zero covariance (0 / tiny), not 0 / 0
    return (centred * w[:, None]).T @ centred / (v1 - w.pow(2).sum() / v1).clamp_min(torch.finfo(x.dtype).tiny)


def check_weights(name: str, w: torch.Tensor | None, n: int) -> None:
    if w is not None and (w.shape != (n,) or bool((w < 0).any()) or not float(w.sum()) > 0):
        raise ValueError(f"{name}: source weights must be (ns,) = ({n},), non-negative and not all zero, "
                         f"got shape {tuple(w.shape)}")


def check_features(name: str, fs: torch.Tensor, ft: torch.Tensor) -> None:
    if fs.dim() != 2 or ft.dim() != 2 or fs.shape[1] != ft.shape[1]:
        raise ValueError(f"{name} expects source (ns, d) and target (nt, d) features with the same d, "
                         f"got {tuple(fs.shape)} and {tuple(ft.shape)}")
    if not (fs.is_floating_point() and ft.is_floating_point()):
        raise ValueError(f"{name} expects floating-point features, got {fs.dtype} and {ft.dtype}")


class CORAL(nn.Module):
    r"""CORAL loss between source features ``fs`` (ns, d) and target features ``ft`` (nt, d); returns a scalar.

    ``convention="deep_coral"`` (default), Deep CORAL (Sun & Saenko, ECCV Workshops 2016, eq. 1-3):

        L = ||C_s - C_t||_F^2 / (4 d^2),    C = (X - 1 mu^T)^T (X - 1 mu^T) / (n - 1)

    i.e. the unbiased covariance.  This form only sees second-order statistics: a pure shift of the mean
    leaves it unchanged.

    ``convention="domainbed"``, the form DomainBed (Gulrajani & Lopez-Paz, ICLR 2021) and the
    Transfer-Learning-Library compute, which adds the means and averages over entries instead of
    dividing by 4 d^2 (use it to reproduce numbers from that code):

        L = 1/d sum_k (mu_s - mu_t)_k^2 + 1/d^2 sum_{k,l} (C_s - C_t)_{kl}^2

    ``source_weights`` w (ns,) weight the source examples' statistics (weighted mean and covariance, see
    ``_covariance``), as WDAN does for MMD (Yan et al., CVPR 2017): with w = q_t(y) / p_s(y) the source
    statistics are those of a source with the target's class prior.

    ns and nt may differ; each needs at least 2 samples.  The statistics are computed in float32 for
    half-precision inputs, also inside autocast (float64 inputs stay float64), so the result is float32.
    """

    def __init__(self, convention: str = "deep_coral"):
        super().__init__()
        if convention not in CONVENTIONS:
            raise ValueError(f"CORAL convention {convention!r} is not valid; choose from {', '.join(CONVENTIONS)}")
        self.convention = convention

    def extra_repr(self) -> str:
        return f"convention={self.convention!r}"

    def forward(self, fs: torch.Tensor, ft: torch.Tensor, source_weights: torch.Tensor | None = None) -> torch.Tensor:
        check_features("CORAL", fs, ft)
        check_weights("CORAL", source_weights, fs.shape[0])
        if fs.shape[0] < 2 or ft.shape[0] < 2:
            raise ValueError(f"CORAL needs at least 2 samples per domain for an unbiased covariance, "
                             f"got ns={fs.shape[0]} and nt={ft.shape[0]}")
        # autocast would run the matmuls in bf16/fp16: small covariance differences vanish there
        with torch.autocast(device_type=fs.device.type, enabled=False):
            dtype = statistics_dtype(fs)
            fs, ft = fs.to(dtype), ft.to(dtype)
            w = None if source_weights is None else source_weights.to(dtype)
            d = fs.shape[1]
            diff = _covariance(fs, w) - _covariance(ft)
            if self.convention == "deep_coral":
                return diff.pow(2).sum() / (4 * d * d)
            return (_mean(fs, w) - ft.mean(0)).pow(2).mean() + diff.pow(2).mean()
