"""Losses against independent float64 numpy/scipy computations, and their defining properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import cdist
from scipy.special import log_softmax as np_log_softmax

from da.losses import (CORAL, MMD, OHEM, FocalLoss, InformationMaximization, MinimumClassConfusion,
                       build_classification_loss, class_weights)

RTOL = 1e-6
SCALES = (2.0 ** -3, 2.0 ** -2, 2.0 ** -1, 1.0, 2.0)
SHAPES = [(8, 8, 3), (5, 12, 7), (17, 6, 16), (32, 24, 64)]  # (ns, nt, d), ns != nt included


@pytest.fixture(autouse=True)
def one_thread():
    # these tensors are tiny: on a shared machine, thread hand-offs cost more than the arithmetic
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def feats(ns, nt, d, seed=0, shift=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(ns, d)), rng.normal(size=(nt, d)) * scale + shift


def t64(*arrays):
    return [torch.tensor(a, dtype=torch.float64) for a in arrays]


# ----------------------------------------------------------------------------- numpy references

def np_coral(xs, xt, convention):
    d = xs.shape[1]
    cs, ct = np.cov(xs, rowvar=False, ddof=1), np.cov(xt, rowvar=False, ddof=1)
    if convention == "deep_coral":
        return np.sum((cs - ct) ** 2) / (4 * d * d)
    return np.mean((xs.mean(0) - xt.mean(0)) ** 2) + np.mean((cs - ct) ** 2)


def np_mmd(xs, xt, estimator, scales=SCALES):
    z = np.concatenate([xs, xt])
    sq = cdist(z, z, "sqeuclidean")
    m = sq.mean()  # the whole joint matrix, diagonal included

    def k(i, j):
        return sum(math.exp(-sq[i, j] / (2 * a * m)) for a in scales)

    ns, nt = len(xs), len(xt)
    S, T = range(ns), range(ns, ns + nt)
    if estimator == "linear":
        half = ns // 2
        return sum(k(2 * i, 2 * i + 1) + k(ns + 2 * i, ns + 2 * i + 1) - k(2 * i, ns + 2 * i + 1)
                   - k(2 * i + 1, ns + 2 * i) for i in range(half)) / half
    if estimator == "biased":
        return (sum(k(i, j) for i in S for j in S) / ns ** 2 + sum(k(i, j) for i in T for j in T) / nt ** 2
                - 2 * sum(k(i, j) for i in S for j in T) / (ns * nt))
    return (sum(k(i, j) for i in S for j in S if i != j) / (ns * (ns - 1))
            + sum(k(i, j) for i in T for j in T if i != j) / (nt * (nt - 1))
            - 2 * sum(k(i, j) for i in S for j in T) / (ns * nt))


# ----------------------------------------------------------------------------- CORAL

@pytest.mark.parametrize("convention", ["deep_coral", "domainbed"])
@pytest.mark.parametrize("ns,nt,d", SHAPES)
def test_coral_matches_numpy(convention, ns, nt, d):
    xs, xt = feats(ns, nt, d, seed=ns + d, shift=0.3, scale=1.5)
    got = CORAL(convention)(*t64(xs, xt))
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.item(), np_coral(xs, xt, convention), rtol=RTOL)


def test_coral_float32_at_d2048_with_backbone_like_features():
    # post-ReLU-like features with a large common mean: the float32 path must stay close to float64
    rng = np.random.default_rng(1)
    xs = np.maximum(rng.normal(1.0, 1.0, (64, 2048)), 0) * 3
    xt = np.maximum(rng.normal(1.2, 1.3, (64, 2048)), 0) * 3
    for conv in ("deep_coral", "domainbed"):
        got = CORAL(conv)(torch.tensor(xs, dtype=torch.float32), torch.tensor(xt, dtype=torch.float32))
        assert got.dtype == torch.float32
        np.testing.assert_allclose(got.item(), np_coral(xs, xt, conv), rtol=1e-4)


def test_coral_near_zero_for_one_distribution_and_grows_with_covariance_shift():
    losses = []
    for scale in (1.0, 1.5, 2.0, 3.0):
        xs, xt = feats(400, 300, 8, seed=3, scale=scale)
        losses.append(CORAL()(*t64(xs, xt)).item())
    # same distribution: only sampling noise, far below the first shift
    assert losses[0] < 0.05 * losses[1]
    assert all(a < b for a, b in zip(losses, losses[1:]))


def test_coral_mean_shift_only_seen_by_domainbed_convention():
    xs, xt = feats(50, 40, 6, seed=4)
    base = [CORAL(c)(*t64(xs, xt)).item() for c in ("deep_coral", "domainbed")]
    shifted = [CORAL(c)(*t64(xs, xt + 2.0)).item() for c in ("deep_coral", "domainbed")]
    # Deep CORAL compares covariances only, which a common shift leaves unchanged
    np.testing.assert_allclose(shifted[0], base[0], rtol=1e-9)
    np.testing.assert_allclose(shifted[1] - base[1], 4.0 + 2 * 2.0 * np.mean(xt.mean(0) - xs.mean(0)), rtol=1e-9)
    assert shifted[1] > base[1] + 3


@pytest.mark.parametrize("convention", ["deep_coral", "domainbed"])
def test_coral_gradcheck(convention):
    fs, ft = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in feats(5, 7, 4, seed=5, scale=2.0))
    assert torch.autograd.gradcheck(CORAL(convention), (fs, ft))


def test_coral_input_errors():
    with pytest.raises(ValueError, match="at least 2 samples"):
        CORAL()(torch.randn(1, 4), torch.randn(5, 4))
    with pytest.raises(ValueError, match="same d"):
        CORAL()(torch.randn(5, 4), torch.randn(5, 3))
    with pytest.raises(ValueError, match="domainbed"):
        CORAL("dan")


# ----------------------------------------------------------------------------- MMD

@pytest.mark.parametrize("estimator", ["quadratic", "biased"])
@pytest.mark.parametrize("ns,nt,d", SHAPES)
def test_mmd_matches_numpy(estimator, ns, nt, d):
    xs, xt = feats(ns, nt, d, seed=ns * d, shift=0.2, scale=1.3)
    got = MMD(estimator)(*t64(xs, xt))
    np.testing.assert_allclose(got.item(), np_mmd(xs, xt, estimator), rtol=RTOL)


@pytest.mark.parametrize("n,d", [(2, 3), (8, 5), (11, 16), (32, 64)])  # odd n: the last sample is unused
def test_mmd_linear_matches_numpy(n, d):
    xs, xt = feats(n, n, d, seed=n + d, shift=0.3)
    got = MMD("linear")(*t64(xs, xt))
    np.testing.assert_allclose(got.item(), np_mmd(xs, xt, "linear"), rtol=RTOL)


def test_mmd_kernel_scales_are_used():
    xs, xt = feats(9, 6, 5, seed=6, shift=0.5)
    scales = (0.5, 4.0)
    got = MMD(kernel_scales=scales)(*t64(xs, xt)).item()
    np.testing.assert_allclose(got, np_mmd(xs, xt, "quadratic", scales), rtol=RTOL)
    assert abs(got - np_mmd(xs, xt, "quadratic")) > 1e-3  # the default scales give another value


@pytest.mark.parametrize("estimator", ["quadratic", "linear", "biased"])
def test_mmd_float32_at_d2048_with_backbone_like_features(estimator):
    rng = np.random.default_rng(7)
    xs = np.maximum(rng.normal(1.0, 1.0, (64, 2048)), 0) * 3
    xt = np.maximum(rng.normal(1.1, 1.0, (64, 2048)), 0) * 3
    got = MMD(estimator)(torch.tensor(xs, dtype=torch.float32), torch.tensor(xt, dtype=torch.float32))
    assert got.dtype == torch.float32
    # float32 round-off on kernel sums of order 5, relative to an MMD of order 1e-1
    np.testing.assert_allclose(got.item(), np_mmd(xs, xt, estimator), rtol=1e-4, atol=1e-6)


def test_mmd_near_zero_for_one_distribution_and_grows_with_shift():
    mmd = MMD()
    same = mmd(*t64(*feats(200, 150, 4, seed=8))).item()
    by_mean = [mmd(*t64(*feats(200, 150, 4, seed=8, shift=s))).item() for s in (0.25, 0.5, 1.0)]
    by_cov = [mmd(*t64(*feats(200, 150, 4, seed=8, scale=s))).item() for s in (1.5, 2.0, 3.0)]
    assert abs(same) < 0.1 * min(by_mean[0], by_cov[0])
    assert by_mean == sorted(by_mean) and by_cov == sorted(by_cov)


def test_mmd_estimators_agree_in_expectation():
    # quadratic and linear are both unbiased: their means over many batches agree within sampling error;
    # the V-statistic sits above them by the positive diagonal bias
    rng = np.random.default_rng(9)
    reps = 200
    vals = {e: [] for e in ("quadratic", "linear", "biased")}
    for _ in range(reps):
        fs, ft = t64(rng.normal(size=(32, 4)), rng.normal(size=(32, 4)) + 0.8)
        for e in vals:
            vals[e].append(MMD(e)(fs, ft).item())
    mean = {e: np.mean(v) for e, v in vals.items()}
    se = math.sqrt(np.var(vals["quadratic"]) / reps + np.var(vals["linear"]) / reps)
    assert mean["quadratic"] > 10 * se  # a real difference is being estimated
    assert abs(mean["quadratic"] - mean["linear"]) < 4 * se
    # V - U = (K - mean_{i!=j} k_ss)/ns + (K - mean_{i!=j} k_tt)/nt > 0 with K = k(x, x) = number of kernels
    gap = np.array(vals["biased"]) - np.array(vals["quadratic"])
    assert (gap > 0).all() and (gap < 2 * len(SCALES) / 32).all()


class FixedBandwidthMMD(MMD):
    """MMD with the bandwidth statistic m frozen at a given value (gradcheck perturbs the inputs)."""

    def __init__(self, m, **kw):
        super().__init__(**kw)
        self.m = m

    def _mean_sq_distance(self, z):
        return torch.tensor(self.m, dtype=z.dtype)


@pytest.mark.parametrize("estimator", ["quadratic", "linear", "biased"])
def test_mmd_gradcheck_and_bandwidth_detached(estimator):
    xs, xt = feats(6, 6, 3, seed=10, shift=0.5)
    m0 = cdist(np.concatenate([xs, xt]), np.concatenate([xs, xt]), "sqeuclidean").mean()
    fs, ft = (x.requires_grad_() for x in t64(xs, xt))
    assert torch.autograd.gradcheck(FixedBandwidthMMD(m0, estimator=estimator), (fs, ft))
    # the real loss has the same gradient: no gradient flows through its bandwidth
    g_real = torch.autograd.grad(MMD(estimator)(fs, ft), (fs, ft))
    g_fixed = torch.autograd.grad(FixedBandwidthMMD(m0, estimator=estimator)(fs, ft), (fs, ft))
    for a, b in zip(g_real, g_fixed):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        assert a.abs().max() > 1e-3


def test_mmd_input_errors():
    with pytest.raises(ValueError, match="ns = nt"):
        MMD("linear")(torch.randn(8, 4), torch.randn(6, 4))
    with pytest.raises(ValueError, match="at least 2 samples"):
        MMD()(torch.randn(1, 4), torch.randn(6, 4))
    with pytest.raises(ValueError, match="quadratic, linear, biased"):
        MMD("unbiased")
    with pytest.raises(ValueError, match="positive"):
        MMD(kernel_scales=(1.0, 0.0))


# ----------------------------------------------------------------------------- autocast

@pytest.mark.parametrize("loss", [CORAL(), CORAL("domainbed"), MMD(), MMD("linear"), MMD("biased")], ids=repr)
def test_alignment_under_bf16_autocast_is_float32(loss):
    # features as a bf16 network would give them; the statistics must still be float32 computations
    fs32, ft32 = (torch.tensor(a, dtype=torch.float32) for a in feats(32, 32, 256, seed=11, shift=0.1, scale=1.2))
    fs, ft = fs32.bfloat16(), ft32.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss(fs, ft)
    want = loss(fs.float(), ft.float())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_classification_under_bf16_autocast_is_float32():
    logits = torch.randn(16, 5).bfloat16()
    y = torch.randint(0, 5, (16,))
    for loss, args in [(FocalLoss(), (logits, y)), (InformationMaximization(), (logits,))]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = loss(*args)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, loss(*(a.float() if a.is_floating_point() else a for a in args)))


# ----------------------------------------------------------------------------- focal loss

def np_focal(logits, y, gamma, alpha=None):
    lp = np_log_softmax(logits, axis=1)
    out = []
    for i, c in enumerate(y):
        p = math.exp(lp[i, c])
        out.append(-(1.0 if alpha is None else alpha[c]) * (1 - p) ** gamma * lp[i, c])
    return np.array(out)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
@pytest.mark.parametrize("with_alpha", [False, True])
@pytest.mark.parametrize("n,c", [(7, 3), (40, 10)])
def test_focal_matches_numpy(gamma, with_alpha, n, c):
    rng = np.random.default_rng(n + c)
    logits, y = rng.normal(size=(n, c)) * 3, rng.integers(0, c, n)
    alpha = rng.uniform(0.2, 2.0, c) if with_alpha else None
    want = np_focal(logits, y, gamma, alpha)
    x, t = torch.tensor(logits), torch.tensor(y)
    a = None if alpha is None else torch.tensor(alpha)
    for red, ref in [("none", want), ("sum", want.sum()), ("mean", want.mean())]:
        got = FocalLoss(gamma, a, reduction=red)(x, t)
        np.testing.assert_allclose(got.detach().numpy(), ref, rtol=1e-6)  # alpha is stored in float32


def test_focal_gamma0_is_cross_entropy_exactly():
    torch.manual_seed(0)
    for n, c in [(5, 3), (64, 45)]:
        x, y = torch.randn(n, c) * 4, torch.randint(0, c, (n,))
        assert torch.equal(FocalLoss(gamma=0)(x, y), F.cross_entropy(x, y))
        assert torch.equal(FocalLoss(gamma=0, reduction="none")(x, y), F.cross_entropy(x, y, reduction="none"))


def test_focal_downweights_easy_samples():
    x = torch.tensor([[6.0, 0.0, 0.0], [0.2, 0.0, 0.0]])  # an easy and a hard sample of class 0
    y = torch.tensor([0, 0])
    ratio = FocalLoss(2.0, reduction="none")(x, y) / F.cross_entropy(x, y, reduction="none")
    assert ratio[0] < 1e-4 and ratio[1] > 0.3


def test_focal_confident_sample_is_finite_for_gamma_below_one():
    x = torch.tensor([[200.0, 0.0]], requires_grad=True)  # p_y rounds to 1
    FocalLoss(gamma=0.5)(x, torch.tensor([0])).backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("gamma", [0.0, 0.7, 2.0])
def test_focal_gradcheck(gamma):
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 1, 0])
    alpha = torch.tensor([1.0, 0.5, 2.0, 1.5])
    assert torch.autograd.gradcheck(lambda z: FocalLoss(gamma, alpha)(z, y), (x,))


def test_focal_input_errors():
    with pytest.raises(ValueError, match=">= 0"):
        FocalLoss(gamma=-1)
    with pytest.raises(ValueError, match="reduction"):
        FocalLoss(reduction="avg")
    with pytest.raises(ValueError, match="3 weights for 4 classes"):
        FocalLoss(alpha=torch.ones(3))(torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="class-index targets"):
        FocalLoss()(torch.randn(2, 4), torch.tensor([0, 1, 2]))


# ----------------------------------------------------------------------------- OHEM

def test_ohem_ratio_one_is_the_wrapped_loss():
    torch.manual_seed(1)
    x, y = torch.randn(20, 6), torch.randint(0, 6, (20,))
    w = torch.rand(6) + 0.5
    ce = torch.nn.CrossEntropyLoss(weight=w, label_smoothing=0.1, reduction="none")
    assert torch.equal(OHEM(ce, ratio=1.0)(x, y), ce(x, y).mean())
    focal = FocalLoss(2.0, reduction="none")
    assert torch.equal(OHEM(focal, ratio=1.0)(x, y), FocalLoss(2.0)(x, y))


@pytest.mark.parametrize("n,ratio,min_kept,k", [(20, 0.25, 1, 5), (10, 0.25, 1, 3), (10, 0.1, 4, 4), (6, 0.5, 9, 6),
                                                (8, 0.0, 2, 2)])
def test_ohem_keeps_the_hardest_and_zeroes_the_rest(n, ratio, min_kept, k):
    rng = np.random.default_rng(n)
    logits, y = rng.normal(size=(n, 5)) * 2, rng.integers(0, 5, n)
    per_sample = -np_log_softmax(logits, axis=1)[np.arange(n), y]
    hardest = np.argsort(-per_sample)[:k]
    x = torch.tensor(logits, requires_grad=True)
    loss = OHEM(torch.nn.CrossEntropyLoss(reduction="none"), ratio=ratio, min_kept=min_kept)(x, torch.tensor(y))
    np.testing.assert_allclose(loss.item(), per_sample[hardest].mean(), rtol=RTOL)
    loss.backward()
    kept = np.zeros(n, bool)
    kept[hardest] = True
    assert (x.grad[torch.tensor(~kept)] == 0).all()
    assert (x.grad[torch.tensor(kept)].abs().sum(1) > 0).all()


def test_ohem_gradcheck():
    x = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 3, (8,))
    assert torch.autograd.gradcheck(lambda z: OHEM(torch.nn.CrossEntropyLoss(reduction="none"), 0.5)(z, y), (x,))


def test_ohem_input_errors():
    with pytest.raises(ValueError, match="reduction='none'"):
        OHEM(torch.nn.CrossEntropyLoss())(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="ratio"):
        OHEM(torch.nn.CrossEntropyLoss(reduction="none"), ratio=1.5)
    with pytest.raises(ValueError, match="min_kept"):
        OHEM(torch.nn.CrossEntropyLoss(reduction="none"), min_kept=0)


# ----------------------------------------------------------------------------- class weights

def test_class_weights_inverse_and_effective():
    counts = [500, 120, 30, 7]
    inv = class_weights(counts, "inverse")
    ref = np.array([1 / c for c in counts])
    np.testing.assert_allclose(inv.numpy(), ref / ref.sum() * 4, rtol=1e-6)
    beta = 0.99
    eff = class_weights(counts, "effective", beta=beta)
    ref = np.array([(1 - beta) / (1 - beta ** c) for c in counts])
    np.testing.assert_allclose(eff.numpy(), ref / ref.sum() * 4, rtol=1e-6)
    assert inv.dtype == torch.float32 and math.isclose(eff.sum().item(), 4, rel_tol=1e-6)
    # rarer classes weigh more, and the effective number is milder than inverse frequency
    assert (inv.diff() > 0).all() and (eff.diff() > 0).all() and eff[-1] / eff[0] < inv[-1] / inv[0]


def test_class_weights_limits():
    counts = [300, 40, 9]
    torch.testing.assert_close(class_weights(counts, "effective", beta=0.0), torch.ones(3))
    torch.testing.assert_close(class_weights(counts, "effective", beta=1 - 1e-9), class_weights(counts), rtol=1e-5,
                               atol=0)
    torch.testing.assert_close(class_weights([50, 50, 50]), torch.ones(3))


def test_class_weights_errors():
    with pytest.raises(ValueError, match="positive"):
        class_weights([10, 0, 3])
    with pytest.raises(ValueError, match="inverse, effective"):
        class_weights([10, 3], "sqrt")
    with pytest.raises(ValueError, match="beta"):
        class_weights([10, 3], "effective", beta=1.0)


# ----------------------------------------------------------------------------- information maximisation

def np_im(logits, w, eps=1e-8):
    p = np.exp(np_log_softmax(logits, axis=1))
    ent = np.mean([-sum(pc * math.log(pc) for pc in row) for row in p])
    pbar = p.mean(0)
    return ent - w * -np.sum(pbar * np.log(pbar + eps))


@pytest.mark.parametrize("w", [0.0, 1.0, 0.3])
@pytest.mark.parametrize("n,c", [(1, 4), (9, 3), (32, 31)])
def test_information_maximization_matches_numpy(w, n, c):
    logits = np.random.default_rng(n * c).normal(size=(n, c)) * 2
    got = InformationMaximization(w)(torch.tensor(logits))
    np.testing.assert_allclose(got.item(), np_im(logits, w), rtol=RTOL)


def test_information_maximization_rewards_confident_diverse_batches():
    c = 4
    im = InformationMaximization()
    diverse = torch.eye(c) * 30  # confident, one sample per class
    collapsed = torch.zeros(c, c)
    collapsed[:, 0] = 30  # confident, all one class
    uniform = torch.zeros(c, c)
    np.testing.assert_allclose(im(diverse).item(), -math.log(c), rtol=1e-5)
    assert abs(im(collapsed).item()) < 1e-5
    np.testing.assert_allclose(im(uniform).item(), 0.0, atol=1e-6)
    # entropy minimisation alone cannot tell the diverse batch from the collapsed one
    ent = InformationMaximization(0.0)
    assert abs(ent(diverse).item() - ent(collapsed).item()) < 1e-6 and ent(uniform).item() > 1.3


def test_information_maximization_gradcheck():
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(InformationMaximization(1.0), (x,))


# ----------------------------------------------------------------------------- factories

def test_build_classification_losses_match_their_definitions():
    torch.manual_seed(2)
    x, y = torch.randn(16, 4), torch.randint(0, 4, (16,))
    counts = [40, 10, 25, 5]
    w = class_weights(counts, "effective", beta=0.9)
    ce = build_classification_loss("ce", 4, counts, "effective", label_smoothing=0.1, class_weight_beta=0.9)
    torch.testing.assert_close(ce(x, y), F.cross_entropy(x, y, weight=w, label_smoothing=0.1), rtol=0, atol=0)
    focal = build_classification_loss("focal", 4, counts, "inverse", focal_gamma=1.5)
    torch.testing.assert_close(focal(x, y), FocalLoss(1.5, class_weights(counts))(x, y), rtol=0, atol=0)
    ohem = build_classification_loss("ohem", 4, counts, "effective", label_smoothing=0.1, ohem_ratio=0.25,
                                     ohem_min_kept=6, class_weight_beta=0.9)
    per = F.cross_entropy(x, y, weight=w, label_smoothing=0.1, reduction="none")
    torch.testing.assert_close(ohem(x, y), per.topk(6).values.mean())
    plain = build_classification_loss("ohem", 4, ohem_ratio=1.0)
    torch.testing.assert_close(plain(x, y), F.cross_entropy(x, y))


def test_build_classification_loss_errors():
    with pytest.raises(ValueError, match="ce, focal, ohem"):
        build_classification_loss("hinge", 4)
    with pytest.raises(ValueError, match="class counts"):
        build_classification_loss("ce", 4, class_weighting="inverse")
    with pytest.raises(ValueError, match="3 class counts for 4 classes"):
        build_classification_loss("ce", 4, [3, 4, 5], "inverse")
    with pytest.raises(ValueError, match="label smoothing"):
        build_classification_loss("focal", 4, label_smoothing=0.1)


def test_coral_and_mmd_methods_wire_their_losses():
    """The methods of da.methods pass the config's settings to the losses and weight them by lambda."""
    from da.config import RunConfig
    from da.methods import StepOutputs, build_method

    xs, xt = feats(10, 8, 5, seed=12, shift=0.4)
    zs, zt = t64(xs, xt)
    out = StepOutputs(None, zs, None, None, zt, 0.5)
    coral = build_method(RunConfig(method="coral", coral_convention="domainbed", align_weight=0.5), 3, 5)
    np.testing.assert_allclose(coral(out)["coral"].item(), 0.5 * np_coral(xs, xt, "domainbed"), rtol=RTOL)
    mmd = build_method(RunConfig(method="mmd", mmd_estimator="biased", mmd_kernel_scales=(1.0, 3.0),
                                 align_schedule="ramp"), 3, 5)
    ramp = 2 / (1 + np.exp(-5)) - 1
    np.testing.assert_allclose(mmd(out)["mmd"].item(), ramp * np_mmd(xs, xt, "biased", (1.0, 3.0)), rtol=RTOL)


# ----------------------------------------------------------------------------- IM with a target prior

@pytest.mark.parametrize("w", [1.0, 0.3])
def test_information_maximization_with_prior_is_kl_to_the_prior(w):
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(12, 5)) * 2
    q = rng.dirichlet(np.ones(5))
    p = np.exp(np_log_softmax(logits, axis=1))
    pbar = p.mean(0)
    expected = -np.mean(np.sum(p * np.log(p), 1)) + w * np.sum(pbar * np.log(pbar / q)) - w * math.log(5)
    got = InformationMaximization(w)(torch.tensor(logits), torch.tensor(q))
    np.testing.assert_allclose(got.item(), expected, rtol=1e-6)
    # a uniform prior is the plain diversity term
    uniform = torch.full((5,), 0.2, dtype=torch.float64)
    np.testing.assert_allclose(InformationMaximization(w)(torch.tensor(logits), uniform).item(),
                               np_im(logits, w), rtol=1e-6)
    # the diversity term's minimum moves to the prior: a batch whose mean prediction is q scores lower
    # under q than a batch spread evenly
    skewed = torch.tensor([0.6, 0.1, 0.1, 0.1, 0.1], dtype=torch.float64)
    at_q = torch.log(skewed).repeat(4, 1)
    even = torch.zeros(4, 5, dtype=torch.float64)
    im = InformationMaximization(w)
    assert im(at_q, skewed) < im(even, skewed)
    with pytest.raises(ValueError, match="prior has shape"):
        im(at_q, torch.ones(3) / 3)


# ----------------------------------------------------------------------------- MCC

def np_mcc(logits, temperature, weights=None):
    z = logits / temperature
    y = np.exp(z - z.max(1, keepdims=True))
    y /= y.sum(1, keepdims=True)
    h = -np.sum(y * np.log(y), 1)
    w = len(y) * (1 + np.exp(-h)) / np.sum(1 + np.exp(-h)) if weights is None else weights
    k = y.shape[1]
    c = np.zeros((k, k))
    for i in range(len(y)):  # the sum over examples written out: sum_i W_i y_i y_i^T
        c += w[i] * np.outer(y[i], y[i])
    c /= c.sum(0, keepdims=True)  # the paper's column normalisation
    return (c.sum() - np.trace(c)) / k


@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("n,k", [(1, 3), (16, 7), (40, 31)])
def test_mcc_matches_numpy(temperature, n, k):
    logits = np.random.default_rng(n + k).normal(size=(n, k)) * 3
    got = MinimumClassConfusion(temperature)(torch.tensor(logits))
    np.testing.assert_allclose(got.item(), np_mcc(logits, temperature), rtol=1e-9)


def test_mcc_limits_and_gradient():
    k = 4
    confident = torch.eye(k, dtype=torch.float64) * 200  # one confident example per class: no confusion
    assert MinimumClassConfusion(1.0)(confident).item() < 1e-12
    uniform = torch.zeros(6, k, dtype=torch.float64)  # every class confused with every other
    np.testing.assert_allclose(MinimumClassConfusion(2.5)(uniform).item(), (k - 1) / k, rtol=1e-12)
    # the gradient: certainty weights held constant (as in TLlib), checked by central differences
    logits = np.random.default_rng(0).normal(size=(6, 3))
    x = torch.tensor(logits, requires_grad=True)
    MinimumClassConfusion(2.5)(x).backward()
    z = logits / 2.5
    y = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    h = -np.sum(y * np.log(y), 1)
    w = 6 * (1 + np.exp(-h)) / np.sum(1 + np.exp(-h))
    numeric = np.zeros_like(logits)
    for idx in np.ndindex(*logits.shape):
        step = np.zeros_like(logits)
        step[idx] = 1e-6
        numeric[idx] = (np_mcc(logits + step, 2.5, w) - np_mcc(logits - step, 2.5, w)) / 2e-6
    np.testing.assert_allclose(x.grad.numpy(), numeric, atol=1e-8)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        MinimumClassConfusion(0.0)
    with pytest.raises(ValueError, match="expects logits"):
        MinimumClassConfusion()(torch.zeros(3))


# ----------------------------------------------------------------------------- class-weighted CORAL and MMD (WDAN)

def test_weighted_coral_matches_numpy_and_equal_weights_are_unweighted():
    xs, xt = feats(12, 9, 4, seed=5, shift=0.5)
    w = np.random.default_rng(1).uniform(0.1, 3.0, size=12)
    cs = np.cov(xs, rowvar=False, aweights=w, ddof=1)  # reliability weights: V1 - V2 / V1
    ct = np.cov(xt, rowvar=False, ddof=1)
    mu = np.average(xs, axis=0, weights=w)
    for convention, expected in (("deep_coral", np.sum((cs - ct) ** 2) / (4 * 16)),
                                 ("domainbed", np.mean((mu - xt.mean(0)) ** 2) + np.mean((cs - ct) ** 2))):
        got = CORAL(convention)(*t64(xs, xt), torch.tensor(w))
        np.testing.assert_allclose(got.item(), expected, rtol=1e-9)
        same = CORAL(convention)(*t64(xs, xt), torch.full((12,), 2.0, dtype=torch.float64))
        np.testing.assert_allclose(same.item(), np_coral(xs, xt, convention), rtol=1e-9)


def test_weighted_statistics_with_one_weighted_example_are_finite():
    xs, xt = feats(6, 6, 3, seed=9)
    w = torch.tensor([0.0, 0.0, 2.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    for loss in (CORAL(), CORAL("domainbed"), MMD(), MMD("biased")):
        assert torch.isfinite(loss(*t64(xs, xt), w))


def np_weighted_mmd(xs, xt, a, estimator, scales=SCALES):
    z = np.concatenate([xs, xt])
    sq = cdist(z, z, "sqeuclidean")
    kern = sum(np.exp(-sq / (2 * s * sq.mean())) for s in scales)
    ns = len(xs)
    kss, ktt, kst = kern[:ns, :ns], kern[ns:, ns:], kern[:ns, ns:]
    pair = np.outer(a, a)
    cross = 2 * (a[:, None] * kst).sum() / (a.sum() * len(xt))
    if estimator == "biased":
        return (pair * kss).sum() / pair.sum() + ktt.mean() - cross
    off = ~np.eye(ns, dtype=bool)
    offt = ~np.eye(len(xt), dtype=bool)
    return (pair * kss)[off].sum() / pair[off].sum() + ktt[offt].mean() - cross


@pytest.mark.parametrize("estimator", ["quadratic", "biased"])
def test_weighted_mmd_matches_numpy_and_equal_weights_are_unweighted(estimator):
    xs, xt = feats(10, 7, 3, seed=2, shift=0.7)
    a = np.random.default_rng(4).uniform(0.2, 2.5, size=10)
    got = MMD(estimator)(*t64(xs, xt), torch.tensor(a))
    np.testing.assert_allclose(got.item(), np_weighted_mmd(xs, xt, a, estimator), rtol=1e-9)
    same = MMD(estimator)(*t64(xs, xt), torch.full((10,), 0.5, dtype=torch.float64))
    np.testing.assert_allclose(same.item(), np_mmd(xs, xt, estimator), rtol=1e-9)
    with pytest.raises(ValueError, match="source weights must be"):
        MMD(estimator)(*t64(xs, xt), torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="linear MMD estimator takes no source weights"):
        MMD("linear")(*t64(xs, xs), torch.ones(10, dtype=torch.float64))


def test_class_ratio_weights_make_the_source_statistics_those_of_the_target_prior():
    """WDAN's point: with w = q / p_s per example, the weighted source mean is the mean of a source drawn
    with the target's prior (two classes at means 0 and 4, source 3:1, target 1:3)."""
    xs = np.concatenate([np.zeros((30, 1)), np.full((10, 1), 4.0)])
    w = np.concatenate([np.full(30, 0.25 / 0.75), np.full(10, 0.75 / 0.25)])
    xt = np.concatenate([np.zeros((10, 1)), np.full((30, 1), 4.0)])
    loss = CORAL("domainbed")
    # the means' term vanishes (3 = 3); what is left is the unbiased covariances' different normalisation
    unweighted, weighted = loss(*t64(xs, xt)).item(), loss(*t64(xs, xt), torch.tensor(w)).item()
    np.testing.assert_allclose(unweighted, (3.0 - 1.0) ** 2, rtol=1e-9)
    assert weighted < 0.01 * unweighted
