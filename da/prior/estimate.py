"""The target's class prior from unlabelled target predictions: EM (with BCTS) or BBSE, and its uses."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from da.prior.calibration import fit_bcts

ESTIMATORS = ("em", "bbse")


def em_prior(posteriors: torch.Tensor, source_prior: torch.Tensor, tol: float = 1e-8,
             max_iter: int = 1000) -> tuple[torch.Tensor, int]:
    r"""Maximum-likelihood target prior by EM (Saerens, Latinne and Decaestecker, Neural Computation 2002).

    ``posteriors`` (N, C) are p_s(y | x_i), calibrated for the class prior ``source_prior`` = pi (C,).
    Under label shift p_t(x | y) = p_s(x | y), so with the current estimate q:

        E-step  p_t(y | x_i) = p_s(y | x_i) q_y / pi_y  /  sum_c p_s(c | x_i) q_c / pi_c
        M-step  q_y = 1/N sum_i p_t(y | x_i)

    from q = pi until the largest change is below ``tol``.  Returns (q, iterations), q in float64.
    """
    p, pi = posteriors.double(), source_prior.double()
    if p.dim() != 2 or pi.shape != (p.shape[1],):
        raise ValueError(f"em_prior expects posteriors (N, C) and a prior (C,), got {tuple(p.shape)}, {tuple(pi.shape)}")
    q = pi.clone()
    for it in range(1, max_iter + 1):
        w = p * (q / pi)
        new = (w / w.sum(1, keepdim=True)).mean(0)
        done = float((new - q).abs().max()) < tol
        q = new
        if done:
            break
    return q, it


BBSE_MAX_CONDITION = 1e6


def bbse_prior(source_probs: torch.Tensor, source_labels: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    r"""Black-box shift estimation (Lipton, Wang and Smola, ICML 2018), with hard predictions.

    On labelled source data, C_ij = P_s(yhat = i, y = j); on the target, mu_i = P_t(yhat = i).  Under label
    shift mu = C w with w_j = q_j / p_s(j), solved by least squares; w is clipped at 0 and q = w * p_s
    renormalised.  Returns q (C,) in float64.  Where C is singular or ill-conditioned (condition number above
    BBSE_MAX_CONDITION: a class the model never predicts, or two it cannot tell apart), w is not determined by
    the data: a warning says so and the source prior is returned (no correction).
    """
    k = source_probs.shape[1]
    pred_s = source_probs.argmax(1).numpy()
    y = source_labels.long().numpy()
    joint = np.zeros((k, k))
    np.add.at(joint, (pred_s, y), 1.0)
    joint /= len(y)
    mu = np.bincount(target_probs.argmax(1).numpy(), minlength=k) / len(target_probs)
    source_prior = np.bincount(y, minlength=k) / len(y)
    condition = np.linalg.cond(joint)
    if not np.isfinite(condition) or condition > BBSE_MAX_CONDITION:
        warnings.warn(f"BBSE: the source confusion matrix is singular or ill-conditioned (condition number "
                      f"{condition:.3g}; classes never predicted: {np.flatnonzero(joint.sum(1) == 0).tolist()}): the "
                      f"target prior is not identified, so the source prior is kept (no correction); --prior em "
                      f"does not need this matrix", stacklevel=2)
        return torch.from_numpy(source_prior)
    w = np.clip(np.linalg.lstsq(joint, mu, rcond=None)[0], 0, None)
    q = w * source_prior
    if q.sum() <= 0:  # every weight clipped: no information, keep the source prior
        q = source_prior
    return torch.from_numpy(q / q.sum())


def correct_posteriors(posteriors: torch.Tensor, target_prior: torch.Tensor, source_prior: torch.Tensor) -> torch.Tensor:
    """Posteriors under ``target_prior``: p_s(y | x) q_y / pi_y, renormalised (Saerens et al. 2002, eq. 2.4)."""
    w = posteriors.double() * (target_prior.double() / source_prior.double())
    return w / w.sum(1, keepdim=True)


@dataclass
class PriorEstimate:
    """One estimate of the target's class prior and what it was computed with."""

    estimator: str
    target_prior: torch.Tensor  # q-hat (C,)
    source_prior: torch.Tensor  # pi (C,): the class distribution the calibrated posteriors assume
    calibration: object  # the BiasCorrectedTemperature fitted on source validation
    iterations: int = 0

    def corrected(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated, prior-corrected target posteriors (N, C) of ``logits`` (N, C)."""
        return correct_posteriors(self.calibration.probabilities(logits), self.target_prior, self.source_prior)

    def summary(self, true_prior: torch.Tensor | None = None) -> dict:
        out = {"estimator": self.estimator, "estimate": [round(float(v), 5) for v in self.target_prior],
               "temperature": round(self.calibration.temperature, 5), "iterations": self.iterations,
               # with the estimate, what correcting new predictions needs (da.deploy): BCTS's class biases
               # and the class prior its calibrated posteriors assume
               "bias": [round(float(v), 6) for v in self.calibration.bias],
               "source_prior": [round(float(v), 6) for v in self.source_prior]}
        if true_prior is not None:  # target labels: reported beside the estimate, never used to make it
            out["true"] = [round(float(v), 5) for v in true_prior]
            out["l1_error"] = round(float((self.target_prior - true_prior.double()).abs().sum()), 5)
        return out


def estimate_target_prior(estimator: str, source_logits: torch.Tensor, source_labels: torch.Tensor,
                          target_logits: torch.Tensor) -> PriorEstimate:
    """Fit BCTS on the source validation split, then estimate the target prior from the unlabelled target
    logits with ``estimator`` ('em' or 'bbse'); the source prior is the source validation split's."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"prior estimator {estimator!r} is not valid; choose from {', '.join(ESTIMATORS)}")
    k = source_logits.shape[1]
    calib = fit_bcts(source_logits, source_labels)
    pi = torch.bincount(source_labels.long(), minlength=k).double() / len(source_labels)
    p_t = calib.probabilities(target_logits)
    if estimator == "em":
        q, iters = em_prior(p_t, pi)
    else:
        q, iters = bbse_prior(calib.probabilities(source_logits), source_labels, p_t), 0
    return PriorEstimate(estimator, q, pi, calib, iters)
