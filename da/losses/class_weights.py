"""Per-class loss weights from class counts: inverse frequency and the effective number of samples."""

from __future__ import annotations

import numpy as np
import torch

METHODS = ("inverse", "effective")


def class_weights(counts, method: str = "inverse", beta: float = 0.999) -> torch.Tensor:
    r"""Per-class weights, a float32 tensor (C,), from the training-set class counts n_c (C,).

    - ``inverse``: w_c proportional to 1 / n_c.
    - ``effective`` (Cui et al., "Class-Balanced Loss Based on Effective Number of Samples", CVPR 2019,
      eq. 4-5): w_c proportional to (1 - beta) / (1 - beta^{n_c}), 0 <= beta < 1; beta = 0 gives equal
      weights and beta -> 1 tends to inverse frequency.

    Normalised, as in Cui et al., to sum to C, so a balanced training set gets all weights 1 and the
    loss scale stays comparable to the unweighted one.  Pass them as ``weight`` of cross-entropy or
    ``alpha`` of :class:`da.losses.FocalLoss`.
    """
    n = np.asarray(counts, dtype=np.float64)
    if n.ndim != 1 or n.size == 0 or not (n > 0).all():
        raise ValueError(f"class counts must be a non-empty list of positive numbers, got {n.tolist()}; "
                         f"a class without training images cannot be weighted")
    if method == "inverse":
        w = 1.0 / n
    elif method == "effective":
        if not 0 <= beta < 1:
            raise ValueError(f"effective-number beta must lie in [0, 1), got {beta}")
        w = (1.0 - beta) / -np.expm1(n * np.log(beta)) if beta > 0 else np.ones_like(n)  # expm1: beta near 1
    else:
        raise ValueError(f"class weighting {method!r} is not valid; choose from {', '.join(METHODS)}")
    return torch.tensor(w * len(n) / w.sum(), dtype=torch.float32)
