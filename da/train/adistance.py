"""Proxy A-distance between source and target features (Ben-David et al., 2007; 2010)."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sklearn.pipeline import make_pipeline


def proxy_a_distance(source: np.ndarray, target: np.ndarray, seed: int = 0, folds: int = 2) -> float:
    """``2 (1 - 2 err)`` with ``err`` the held-out error of a linear classifier telling domains apart.

    Both domains are subsampled to the same size (so chance is 50 % error, PAD 0), and the error is
    averaged over stratified folds.  PAD lies in [-2, 2]: near 0 the domains are indistinguishable.
    """
    rng = np.random.default_rng(seed)
    n = min(len(source), len(target))
    xs = source[rng.choice(len(source), n, replace=False)]
    xt = target[rng.choice(len(target), n, replace=False)]
    x = np.concatenate([xs, xt]).astype(np.float64)
    y = np.r_[np.zeros(n), np.ones(n)]
    errors = []
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
        clf.fit(x[train], y[train])
        errors.append(1.0 - clf.score(x[test], y[test]))
    err = float(np.mean(errors))
    return 2.0 * (1.0 - 2.0 * err)
