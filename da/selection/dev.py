"""Deep embedded validation (You et al., ICML 2019): the target risk estimated on labelled source data."""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F

from da.selection.base import EpochOutputs, Validator, register

SPLIT_SEED = 0  # the cross-fitting folds: fixed, so that a score depends on the data only


def dev_risk(losses: np.ndarray, weights: np.ndarray) -> float:
    r"""DEV's control-variate estimate (You et al. 2019, Algorithm 1): with L_i = w_i l_i,

        eta = -Cov(L, w) / Var(w),   R_DEV = mean(L) + eta mean(w) - eta

    (E[w] = 1 under the source distribution, so the variate is zero-mean); ``losses`` l_i and density
    ratios w_i ~ p_t(x_i) / p_s(x_i) of the source-validation examples."""
    weighted = weights * losses
    var = np.var(weights, ddof=1)
    eta = 0.0 if var == 0 else -np.cov(weighted, weights)[0, 1] / var
    return float(weighted.mean() + eta * weights.mean() - eta)


@register
class DeepEmbeddedValidation(Validator):
    r"""score = -R_DEV (higher is better).  The density ratio comes from a domain classifier on the
    bottleneck features (standardised logistic regression, source validation vs unlabelled target
    train), its probabilities out-of-fold (2-fold cross-fitting) for the source examples:
    w_i = (n_s / n_t) d_i / (1 - d_i), d_i = P(target | z_i); l_i is the cross-entropy of the source
    label.

    Version 2: the two folds are a shuffled, seeded split stratified by domain (``SPLIT_SEED``).  Version 1
    split the rows in their order, and splits arrive sorted by class, so each fold's classifier never saw
    half of the source classes and the score followed the row order (issue 30)."""

    name = "dev"
    version = 2

    def score(self, out: EpochOutputs) -> float:
        from sklearn.linear_model import LogisticRegression  # heavy: imported when used
        from sklearn.model_selection import StratifiedKFold, cross_val_predict
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        sv, tt = out.source_val, out.target_train
        zs, zt = sv.features.double().numpy(), tt.features.double().numpy()
        x = np.concatenate([zs, zt])
        domain = np.concatenate([np.zeros(len(zs)), np.ones(len(zt))])
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
        folds = StratifiedKFold(n_splits=2, shuffle=True, random_state=SPLIT_SEED)
        d = cross_val_predict(clf, x, domain, cv=folds, method="predict_proba")[: len(zs), 1]
        d = np.clip(d, 1e-6, 1 - 1e-6)
        weights = (len(zs) / len(zt)) * d / (1 - d)
        losses = F.cross_entropy(sv.logits.double(), sv.labels, reduction="none").numpy()
        return -dev_risk(losses, weights)
