"""Target class-prior estimation (da.prior): BCTS against the NLL it minimises, EM and BBSE recovering
known priors from calibrated synthetic predictions, and the Bayes correction against its closed form."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from da.prior import (ESTIMATORS, bbse_prior, correct_posteriors, em_prior, estimate_target_prior, fit_bcts)

MEANS = np.array([[0.0, 0.0], [2.5, 0.0], [0.0, 2.5], [2.5, 2.5]])  # four Gaussian classes, unit variance


def sample(prior, n, seed):
    """Features of n examples drawn with class prior ``prior`` and their exact log-likelihoods per class."""
    rng = np.random.default_rng(seed)
    y = rng.choice(len(prior), size=n, p=prior)
    x = MEANS[y] + rng.normal(size=(n, 2))
    loglik = -0.5 * ((x[:, None, :] - MEANS[None]) ** 2).sum(-1)
    return y, loglik


def bayes_logits(loglik, prior):
    """Exact (calibrated) posterior logits under ``prior``: log p(x|y) + log prior_y."""
    return torch.tensor(loglik + np.log(prior))


SOURCE = np.array([0.25, 0.25, 0.25, 0.25])
TARGET = np.array([0.55, 0.25, 0.15, 0.05])


def test_em_recovers_a_known_prior_from_calibrated_predictions():
    _, loglik = sample(TARGET, 4000, seed=0)
    post = torch.softmax(bayes_logits(loglik, SOURCE), dim=1)
    q, iterations = em_prior(post, torch.tensor(SOURCE))
    assert np.abs(q.numpy() - TARGET).sum() < 0.05 and iterations > 1
    # the naive estimate (mean of the uncorrected posteriors) is biased towards the source prior
    assert np.abs(post.mean(0).numpy() - TARGET).sum() > np.abs(q.numpy() - TARGET).sum() + 0.05
    # no shift: the estimate stays at the source prior
    _, same = sample(SOURCE, 4000, seed=1)
    q0, _ = em_prior(torch.softmax(bayes_logits(same, SOURCE), dim=1), torch.tensor(SOURCE))
    assert np.abs(q0.numpy() - SOURCE).sum() < 0.05


def test_em_fixed_point_satisfies_its_equation():
    _, loglik = sample(TARGET, 500, seed=2)
    post = torch.softmax(bayes_logits(loglik, SOURCE), dim=1).double()
    pi = torch.tensor(SOURCE)
    q, _ = em_prior(post, pi, tol=1e-12)
    w = post * q / pi
    np.testing.assert_allclose((w / w.sum(1, keepdim=True)).mean(0).numpy(), q.numpy(), atol=1e-10)


def test_bbse_recovers_a_known_prior():
    ys, src_loglik = sample(SOURCE, 4000, seed=3)
    _, tgt_loglik = sample(TARGET, 4000, seed=4)
    src_p = torch.softmax(bayes_logits(src_loglik, SOURCE), 1)
    tgt_p = torch.softmax(bayes_logits(tgt_loglik, SOURCE), 1)
    q = bbse_prior(src_p, torch.tensor(ys), tgt_p)
    assert np.abs(q.numpy() - TARGET).sum() < 0.08 and abs(float(q.sum()) - 1) < 1e-12



def test_bbse_warns_and_keeps_the_source_prior_when_the_confusion_matrix_is_singular():
    """A class the model never predicts on the source makes C singular: least squares would still return some
    w (the minimum-norm one), a prior the data do not determine. Warn and keep the source prior instead."""
    ys, src_loglik = sample(SOURCE, 2000, seed=5)
    src_logits = bayes_logits(src_loglik, SOURCE)
    src_logits[:, 3] = -50.0  # class 3 is never predicted
    _, tgt_loglik = sample(TARGET, 2000, seed=6)
    with pytest.warns(UserWarning, match=r"BBSE: the source confusion matrix is singular .*never predicted: \[3\]"):
        q = bbse_prior(torch.softmax(src_logits, 1), torch.tensor(ys), torch.softmax(bayes_logits(tgt_loglik, SOURCE), 1))
    expected = np.bincount(ys, minlength=4) / len(ys)
    np.testing.assert_allclose(q.numpy(), expected)


def test_bcts_lowers_the_source_nll_and_undoes_a_known_miscalibration():
    ys, loglik = sample(SOURCE, 3000, seed=5)
    true_logits = bayes_logits(loglik, SOURCE)
    bias = torch.tensor([1.0, -0.5, 0.0, -0.5], dtype=torch.float64)
    bad = 3.0 * true_logits + bias  # overconfident and biased towards class 0
    y = torch.tensor(ys)
    calib = fit_bcts(bad, y)
    before, after = F.cross_entropy(bad, y).item(), F.cross_entropy(calib(bad), y).item()
    assert after < before - 0.1
    assert abs(calib.temperature - 3.0) < 0.3
    # calibrated logits match the true ones up to a constant per row
    diff = calib(bad) - true_logits
    assert float((diff - diff.mean(1, keepdim=True)).abs().max()) < 0.3
    assert abs(after - F.cross_entropy(true_logits, y).item()) < 0.01


def test_estimate_target_prior_end_to_end_with_miscalibrated_logits():
    ys, src = sample(SOURCE, 3000, seed=6)
    _, tgt = sample(TARGET, 3000, seed=7)
    scale = lambda logits: 2.5 * logits + torch.tensor([0.8, 0.0, -0.3, 0.0], dtype=torch.float64)  # noqa: E731
    for estimator in ESTIMATORS:
        est = estimate_target_prior(estimator, scale(bayes_logits(src, SOURCE)), torch.tensor(ys),
                                    scale(bayes_logits(tgt, SOURCE)))
        summary = est.summary(torch.tensor(TARGET))
        assert summary["l1_error"] < 0.1, (estimator, summary)
        assert summary["estimator"] == estimator and len(summary["estimate"]) == 4
    with pytest.raises(ValueError, match="prior estimator 'nope' is not valid; choose from em, bbse"):
        estimate_target_prior("nope", bayes_logits(src, SOURCE), torch.tensor(ys), bayes_logits(tgt, SOURCE))


def test_prior_correction_is_bayes_rule():
    _, loglik = sample(TARGET, 200, seed=8)
    src_post = torch.softmax(bayes_logits(loglik, SOURCE), 1)
    corrected = correct_posteriors(src_post, torch.tensor(TARGET), torch.tensor(SOURCE))
    np.testing.assert_allclose(corrected.numpy(), torch.softmax(bayes_logits(loglik, TARGET), 1).numpy(), atol=1e-12)
