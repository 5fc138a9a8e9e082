"""Multi-kernel maximum mean discrepancy (MK-MMD) with Gaussian kernels, as in DAN."""

from __future__ import annotations

import torch
from torch import nn

from da.losses.coral import check_features, check_weights, statistics_dtype

DEFAULT_SCALES = (2.0 ** -3, 2.0 ** -2, 2.0 ** -1, 1.0, 2.0)
ESTIMATORS = ("quadratic", "linear", "biased")


class MMD(nn.Module):
    r"""Squared MMD between source ``fs`` (ns, d) and target ``ft`` (nt, d) under a Gaussian multi-kernel.

    Kernel, as in DAN (Long et al., ICML 2015), a sum of Gaussians with bandwidths tied to the batch:

        k(x, y) = sum_{a in kernel_scales} exp(-||x - y||^2 / (2 sigma_a^2)),    sigma_a^2 = a * m,

    where ``m`` is the mean of the squared pairwise distances over the whole (ns + nt) x (ns + nt)
    matrix of the joint batch z = [fs; ft], diagonal included.  ``m`` is detached from the graph: the
    bandwidth is a statistic of the batch, not something the features may shrink or grow to lower the
    loss.  It is computed in closed form, m = 2/N sum_i ||z_i - mean(z)||^2 (N = ns + nt), which equals
    the pairwise mean exactly and costs O(N d).  Default scales a in {2^-3, 2^-2, 2^-1, 2^0, 2^1}.

    Estimators of MMD^2 (Gretton et al., "A Kernel Two-Sample Test", JMLR 2012):

    - ``quadratic`` (default; unbiased U-statistic, Lemma 6), no constant added::

        sum_{i!=j} k(s_i,s_j) / (ns(ns-1)) + sum_{i!=j} k(t_i,t_j) / (nt(nt-1)) - 2 sum_{i,j} k(s_i,t_j) / (ns nt)

    - ``linear`` (linear time, Lemma 14; needs ns = nt = n; disjoint pairs, m = n // 2, an odd last
      sample is unused)::

        1/m sum_{i<m} [k(s_2i, s_2i+1) + k(t_2i, t_2i+1) - k(s_2i, t_2i+1) - k(s_2i+1, t_2i)]

      with the bandwidth from the same joint-batch mean as above;
    - ``biased`` (the V-statistic, eq. 5: the three means with the diagonals included); always >= 0,
      biased upwards; for comparison with code that uses it.

    ``source_weights`` alpha (ns,) give the weighted MMD of WDAN (Yan et al., "Mind the Class Weight Bias",
    CVPR 2017), the source mean embedding taken as sum_i alpha_i phi(s_i) / sum_i alpha_i: in the
    quadratic estimator the source-source term becomes sum_{i!=j} alpha_i alpha_j k(s_i,s_j) /
    sum_{i!=j} alpha_i alpha_j and the cross term 2 sum_{i,j} alpha_i k(s_i,t_j) / (nt sum_i alpha_i); the
    biased one weights its means the same way with the diagonal; equal weights give the unweighted forms.
    The linear estimator takes no weights.

    The unbiased estimators can be slightly negative when the two samples match.  Returns a scalar,
    computed in float32 for half-precision inputs, also inside autocast (float64 inputs stay float64).
    """

    def __init__(self, estimator: str = "quadratic", kernel_scales: tuple[float, ...] = DEFAULT_SCALES):
        super().__init__()
        if estimator not in ESTIMATORS:
            raise ValueError(f"MMD estimator {estimator!r} is not valid; choose from {', '.join(ESTIMATORS)}")
        kernel_scales = tuple(float(a) for a in kernel_scales)
        if not kernel_scales or any(not a > 0 for a in kernel_scales):
            raise ValueError(f"MMD kernel_scales must be a non-empty list of positive numbers, got {kernel_scales}")
        self.estimator = estimator
        self.kernel_scales = kernel_scales

    def extra_repr(self) -> str:
        return f"estimator={self.estimator!r}, kernel_scales={self.kernel_scales}"

    def _mean_sq_distance(self, z: torch.Tensor) -> torch.Tensor:
        """m: mean squared distance over all N^2 pairs of rows of the centred joint batch, detached."""
        return (2 * z.detach().pow(2).sum(1).mean()).clamp_min(torch.finfo(z.dtype).tiny)

    def _kernel(self, sq_dist: torch.Tensor, mean_sq: torch.Tensor) -> torch.Tensor:
        return sum(torch.exp(sq_dist / (-2 * a * mean_sq)) for a in self.kernel_scales)

    def forward(self, fs: torch.Tensor, ft: torch.Tensor, source_weights: torch.Tensor | None = None) -> torch.Tensor:
        check_features("MMD", fs, ft)
        ns, nt = fs.shape[0], ft.shape[0]
        check_weights("MMD", source_weights, ns)
        if source_weights is not None and self.estimator == "linear":
            raise ValueError("the linear MMD estimator takes no source weights; use quadratic or biased")
        if self.estimator == "linear" and (ns != nt or ns < 2):
            raise ValueError(f"the linear MMD estimator pairs source and target samples: it needs ns = nt >= 2, "
                             f"got ns={ns} and nt={nt}")
        if ns < 2 or nt < 2:
            raise ValueError(f"MMD needs at least 2 samples per domain, got ns={ns} and nt={nt}")
        # autocast would run the Gram matrix in bf16/fp16: distances lose their small differences there
        with torch.autocast(device_type=fs.device.type, enabled=False):
            dtype = statistics_dtype(fs)
            z = torch.cat([fs.to(dtype), ft.to(dtype)])
            # distances do not change under a common shift; centring avoids cancellation in the Gram form
            z = z - z.detach().mean(0, keepdim=True)
            mean_sq = self._mean_sq_distance(z)
            if self.estimator == "linear":
                m = ns // 2
                s0, s1 = z[0:2 * m:2], z[1:2 * m:2]
                t0, t1 = z[ns:ns + 2 * m:2], z[ns + 1:ns + 2 * m:2]
                k = lambda a, b: self._kernel((a - b).pow(2).sum(1), mean_sq)  # noqa: E731 - row-wise pairs
                return (k(s0, s1) + k(t0, t1) - k(s0, t1) - k(s1, t0)).mean()
            sq_norm = z.pow(2).sum(1)
            # clamp: round-off can make a distance (the diagonal above all) slightly negative
            sq = (sq_norm[:, None] + sq_norm[None, :] - 2 * (z @ z.T)).clamp_min(0)
            kernel = self._kernel(sq, mean_sq)
            k_ss, k_tt, k_st = kernel[:ns, :ns], kernel[ns:, ns:], kernel[:ns, ns:]
            if source_weights is not None:
                a = source_weights.to(dtype)
                pair = a[:, None] * a[None, :]
                if self.estimator == "biased":
                    return (pair * k_ss).sum() / pair.sum() + k_tt.mean() - 2 * (a @ k_st).sum() / (a.sum() * nt)
                off = (pair.sum() - pair.diagonal().sum()).clamp_min(torch.finfo(dtype).tiny)  # one weighted example: 0
                return ((pair * k_ss).sum() - (pair * k_ss).diagonal().sum()) / off \
                    + (k_tt.sum() - k_tt.diagonal().sum()) / (nt * (nt - 1)) - 2 * (a @ k_st).sum() / (a.sum() * nt)
            if self.estimator == "biased":
                return k_ss.mean() + k_tt.mean() - 2 * k_st.mean()
            return ((k_ss.sum() - k_ss.diagonal().sum()) / (ns * (ns - 1))
                    + (k_tt.sum() - k_tt.diagonal().sum()) / (nt * (nt - 1))
                    - 2 * k_st.mean())
