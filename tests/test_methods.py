"""The method registry and the adversarial methods (DANN, CDAN): the maths against numpy and autograd,
their parameters in the optimizer and checkpoint, and exact resume."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from da.config import RunConfig
from da.losses.adversarial import (DomainAdversarialLoss, RandomizedMultilinearMap, entropy_weights, grad_reverse,
                                   grl_coefficient, multilinear_map)
from da.methods import REGISTRY, Composite, StepOutputs, build_method, method_names
from da.rundir import CHECKPOINT_FILE, run_dir_for
from da.train import checkpoint, run_experiment, train_stage
from test_engine import Kill, _metrics, killed_then_resumed, load, tiny_cfg

REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- the registry
def test_registry_is_the_only_list_of_names():
    assert method_names()[0] == "source_only"
    assert {"coral", "mmd", "im", "ent", "dann", "cdan", "shot", "mcc", "cbst", "aad", "adabn"} <= set(method_names())
    for name in method_names():
        RunConfig(method=name).validate()
    RunConfig(method="dann+im").validate()
    for bad in ("nope", "coral+coral", "source_only+coral", "coral+"):
        with pytest.raises(ValueError, match="is not valid; choose from source_only, aad, adabn, cbst, cdan"):
            RunConfig(method=bad).validate()


def test_a_registered_method_is_known_everywhere(monkeypatch, tmp_path):
    """Registering one class is all a new method needs: config, sweep validation and the build see it."""
    from da.launch import load_sweep
    from da.methods.base import Method

    class Twice(Method):
        name = "twice_cls_test"
        needs_target = False

        def forward(self, out):
            return {"twice": torch.nn.functional.cross_entropy(out.logits_s, out.y_s)}

    monkeypatch.setitem(REGISTRY, Twice.name, Twice)
    RunConfig(method="twice_cls_test+coral").validate()
    (tmp_path / "s.yaml").write_text("grid: {method: [twice_cls_test]}\nseeds: [0]\n")
    assert load_sweep(tmp_path / "s.yaml").configs()[0].method == "twice_cls_test"
    m = build_method(RunConfig(method="twice_cls_test+coral"), 3, 4)
    assert isinstance(m, Composite) and m.needs_target and [p.name for p in m.parts] == ["twice_cls_test", "coral"]


def test_cli_help_lists_the_registry():
    out = subprocess.run([sys.executable, str(REPO_ROOT / "experiments" / "run.py"), "--help"], capture_output=True,
                         text=True, check=True).stdout
    flat = " ".join(out.split())
    assert "adaptation method: " + ", ".join(method_names()) in flat


def test_method_settings_hash_only_in_runs_that_use_them():
    base = RunConfig()
    assert base.replace(dann_hidden=64).config_hash() == base.config_hash()  # coral run: dann's width is moot
    dann = base.replace(method="dann")
    assert dann.replace(dann_hidden=64).config_hash() != dann.config_hash()
    cdan = base.replace(method="cdan")
    assert cdan.replace(cdan_entropy=False).config_hash() != cdan.config_hash()
    assert "cdan_entropy" not in dann.hashed_dict() and "cdan_entropy" in cdan.hashed_dict()


# ---------------------------------------------------------------------------------------------- the maths
def test_gradient_reversal_flips_and_scales_the_gradient():
    x = torch.randn(5, 3, dtype=torch.double, requires_grad=True)
    w = torch.randn(5, 3, dtype=torch.double)
    (grad_reverse(x, 0.7) * w).sum().backward()
    assert torch.allclose(x.grad, -0.7 * w)
    y = torch.randn(4, dtype=torch.double, requires_grad=True)
    assert torch.equal(grad_reverse(y, 2.0), y)  # identity forward
    # through a non-linear function: autograd's gradient is -1.5 times the finite-difference one
    f = lambda t: (t ** 3).sum()
    g, = torch.autograd.grad(f(grad_reverse(y, 1.5)), y)
    eps = 1e-6
    numeric = torch.stack([(f(y.detach() + eps * e) - f(y.detach() - eps * e)) / (2 * eps)
                           for e in torch.eye(4, dtype=torch.double)])
    assert torch.allclose(g, -1.5 * numeric, atol=1e-6)


def test_grl_coefficient_schedule():
    assert grl_coefficient(0.0) == 0.0
    assert grl_coefficient(0.5) == pytest.approx(2 / (1 + np.exp(-5)) - 1)
    assert 0.999 < grl_coefficient(1.0) < 1.0


def test_domain_adversarial_loss_against_numpy():
    rng = np.random.default_rng(0)
    ds, dt = rng.normal(size=6), rng.normal(size=4)
    ws, wt = rng.uniform(0.5, 2, 6), rng.uniform(0.5, 2, 4)
    sig = lambda v: 1 / (1 + np.exp(-v))
    plain = 0.5 * (np.mean(-np.log(sig(ds))) + np.mean(-np.log(1 - sig(dt))))
    weighted = 0.5 * (np.sum(ws * -np.log(sig(ds))) / ws.sum() + np.sum(wt * -np.log(1 - sig(dt))) / wt.sum())
    loss = DomainAdversarialLoss()
    t = lambda a: torch.tensor(a)
    assert float(loss(t(ds), t(dt))) == pytest.approx(plain, rel=1e-6)
    assert float(loss(t(ds)[:, None], t(dt)[:, None], t(ws), t(wt))) == pytest.approx(weighted, rel=1e-6)
    assert float(loss(torch.zeros(3), torch.zeros(2))) == pytest.approx(np.log(2))


def test_multilinear_map_against_numpy():
    rng = np.random.default_rng(1)
    f, g = rng.normal(size=(3, 4)), rng.dirichlet(np.ones(5), size=3)
    expected = np.stack([np.outer(f[i], g[i]).ravel() for i in range(3)])
    assert np.allclose(multilinear_map(torch.tensor(f), torch.tensor(g)).numpy(), expected)


def test_randomized_map_formula_and_inner_products():
    d, c, k = 6, 4, 20000
    m = RandomizedMultilinearMap(d, c, k, seed=3)
    rng = np.random.default_rng(2)
    f, g = rng.normal(size=(2, d)), rng.dirichlet(np.ones(c), size=2)
    out = m(torch.tensor(f, dtype=torch.float32), torch.tensor(g, dtype=torch.float32)).double().numpy()
    rf, rg = m.r_f.double().numpy(), m.r_g.double().numpy()
    assert np.allclose(out, (f @ rf) * (g @ rg) / np.sqrt(k), rtol=1e-4, atol=1e-5)
    # unbiased for the inner products of the full map: <T(a), T(b)> ~ <f_a (x) g_a, f_b (x) g_b>
    exact = np.dot(np.outer(f[0], g[0]).ravel(), np.outer(f[1], g[1]).ravel())
    scale = np.linalg.norm(np.outer(f[0], g[0])) * np.linalg.norm(np.outer(f[1], g[1]))
    assert abs(out[0] @ out[1] - exact) < 0.1 * scale
    # the same seed draws the same matrices; the global stream is untouched
    state = torch.get_rng_state()
    assert torch.equal(RandomizedMultilinearMap(d, c, 8, seed=3).r_f, RandomizedMultilinearMap(d, c, 8, seed=3).r_f)
    assert torch.equal(state, torch.get_rng_state())


def test_entropy_weights_against_numpy():
    p = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.7, 0.2, 0.1]])
    h = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), axis=1)
    w = 1 + np.exp(-h)
    assert np.allclose(entropy_weights(torch.tensor(p)).numpy(), w / w.mean())
    assert w[0] == pytest.approx(2.0)  # a one-hot prediction weighs 1 + e^0


def _outputs(n=6, c=3, d=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return StepOutputs(torch.randn(n, c, generator=gen), torch.randn(n, d, generator=gen, requires_grad=True),
                       torch.randint(c, (n,), generator=gen), torch.randn(n, c, generator=gen),
                       torch.randn(n, d, generator=gen, requires_grad=True), 0.3)


def test_dann_term_trains_the_discriminator_and_reverses_into_the_features():
    torch.manual_seed(0)
    out = _outputs()
    m = build_method(RunConfig(method="dann", dann_hidden=16, align_weight=2.0), 3, 8)
    term = m(out)["dann"]
    term.backward()
    assert all(p.grad is not None for p in m.discriminator.parameters())
    # the features get minus coeff times the gradient they would get without the reversal
    zs_grad = out.z_s.grad.clone()
    out2 = StepOutputs(out.logits_s, out.z_s.detach().requires_grad_(), out.y_s, out.logits_t,
                       out.z_t.detach().requires_grad_(), out.progress)
    m.zero_grad()
    d = m.discriminator(torch.cat([out2.z_s, out2.z_t]))
    (2.0 * m.loss(d[:6], d[6:])).backward()
    assert torch.allclose(zs_grad, -grl_coefficient(0.3) * out2.z_s.grad, atol=1e-6)


def test_cdan_uses_the_multilinear_map_or_its_randomised_version():
    small = build_method(RunConfig(method="cdan", cdan_hidden=8), 3, 8)
    assert not small.randomized and small.discriminator[0].in_features == 24
    big = build_method(RunConfig(method="cdan", cdan_hidden=8, cdan_randomized_dim=32), 7, 1024)
    assert big.randomized and big.discriminator[0].in_features == 32
    assert {"map.r_f", "map.r_g"} <= set(big.state_dict())  # the random matrices travel in the checkpoint
    out = _outputs()
    terms = small(out)
    assert set(terms) == {"cdan"} and torch.isfinite(terms["cdan"])
    # entropy conditioning changes the loss; without it the loss is the plain mean
    plain = build_method(RunConfig(method="cdan", cdan_hidden=8, cdan_entropy=False), 3, 8)
    plain.load_state_dict(small.state_dict())
    assert float(plain(out)["cdan"].detach()) != pytest.approx(float(small(out)["cdan"].detach()))


# ---------------------------------------------------------------------------------------------- in a run
@pytest.mark.parametrize("method", [pytest.param("dann", marks=pytest.mark.slow), "cdan"])
def test_adversarial_run_discriminator_in_optimizer_and_checkpoint_and_exact_resume(tiny_root, tmp_path, method):
    kw = dict(method=method, stages=1, dann_hidden=32, cdan_hidden=32, epochs=2)
    ref_cfg = tiny_cfg(tiny_root, tmp_path / "ref", **kw)
    disc_by_epoch = {}

    def remember(epoch):
        disc_by_epoch[epoch] = checkpoint.load(run_dir_for(ref_cfg, 2) / CHECKPOINT_FILE)["method"]

    ref = load(train_stage(ref_cfg, stage=2, on_epoch_end=remember))
    assert method in ref["epochs"][0]["loss"]
    # the discriminator trained: its weights moved between the two epochs
    assert any(not torch.equal(disc_by_epoch[1][k], disc_by_epoch[2][k]) for k in disc_by_epoch[1]
               if k.endswith(".weight"))
    cfg = tiny_cfg(tiny_root, tmp_path / "cut", **kw)

    def kill_after_first(epoch):
        ckpt = checkpoint.load(run_dir_for(cfg, 2) / CHECKPOINT_FILE)
        disc = {k: v for k, v in ckpt["method"].items() if k.startswith("discriminator.")}
        assert disc, "the discriminator is in the checkpoint"
        names = [g["name"] for g in ckpt["optimizer"]["param_groups"]]
        assert names[-2:] == ["method_decay", "method_no_decay"]
        n_params = sum(1 for k in disc if k.endswith((".weight", ".bias")))
        assert sum(len(g["params"]) for g in ckpt["optimizer"]["param_groups"][-2:]) == n_params
        if epoch == 1:
            raise Kill()

    with pytest.raises(Kill):
        train_stage(cfg, stage=2, on_epoch_end=kill_after_first)
    rec = load(train_stage(cfg, stage=2))
    assert rec["resumed"] == 1 and _metrics(rec) == _metrics(ref)
    a = checkpoint.load(run_dir_for(cfg, 2) / CHECKPOINT_FILE)["method"]
    b = disc_by_epoch[2]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_epoch_start_hook_sees_the_unlabelled_target_split(tiny_root, tmp_path, monkeypatch):
    from da.methods.base import Method

    seen = []

    class Spy(Method):
        name = "spy_hook_test"
        uses_target_pass = True

        def forward(self, out):
            return {}

        def on_epoch_start(self, epoch, target):
            seen.append((epoch, target))

    monkeypatch.setitem(REGISTRY, Spy.name, Spy)
    cfg = tiny_cfg(tiny_root, tmp_path, method="spy_hook_test", stages=1, epochs=3)

    def stop_after_second(epoch):
        if epoch == 2:
            raise Kill()

    with pytest.raises(Kill):
        train_stage(cfg, stage=2, on_epoch_end=stop_after_second)
    rec = load(train_stage(cfg, stage=2))  # resumed: the hook gets a pass recomputed from the checkpoint
    assert [e for e, _ in seen] == [0, 1, 2]
    n = rec["split_sizes"]["target_train"]
    for _, t in seen:
        assert not hasattr(t, "labels")
        assert t.logits.shape == (n, 7) and t.features.shape[0] == n
    # before epoch 1 it saw the model after epoch 0, hence other predictions than before epoch 0
    assert not torch.equal(seen[0][1].logits, seen[1][1].logits)


# ---------------------------------------------------------------------------------------------- on the target's own predictions
def test_shot_centroid_pseudo_labels_follow_the_feature_clusters():
    """Features in three tight clusters, predictions that are right for most of each cluster but wrong
    for some: the centroid labels (two rounds) give each cluster one label, the majority's."""
    from da.methods.shot import centroid_pseudo_labels

    gen = torch.Generator().manual_seed(0)
    centers = torch.eye(3, 8, dtype=torch.float64) * 5
    cluster = torch.arange(60) % 3
    feats = centers[cluster] + 0.3 * torch.randn(60, 8, generator=gen, dtype=torch.float64)
    logits = torch.nn.functional.one_hot(cluster, 3).double() * 2
    wrong = torch.arange(60) % 5 == 0  # 20 % of the predictions point at the next class
    logits[wrong] = torch.nn.functional.one_hot((cluster[wrong] + 1) % 3, 3).double() * 2
    assert (logits.argmax(1) != cluster).sum() == 12
    assert torch.equal(centroid_pseudo_labels(logits, feats), cluster)


def test_shot_pseudo_labels_skip_classes_nothing_is_predicted_as():
    from da.methods.shot import centroid_pseudo_labels

    logits = torch.tensor([[3.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 2.5, 0.0]])
    feats = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = centroid_pseudo_labels(logits, feats)
    assert labels.tolist() == [0, 0, 1, 1]  # class 2 has a (meaningless) centroid but no examples


def test_cbst_thresholds_keep_the_same_portion_of_every_class():
    """A majority class predicted often with high confidence and a minority class with lower confidence:
    a global threshold would keep only the majority; class-balanced thresholds keep portion p of each."""
    from da.methods.cbst import class_balanced_pseudo_labels

    conf_major = torch.linspace(0.99, 0.90, 40)
    conf_minor = torch.linspace(0.70, 0.55, 10)
    probs = torch.cat([torch.stack([conf_major, 1 - conf_major], 1), torch.stack([1 - conf_minor, conf_minor], 1)])
    labels, selected = class_balanced_pseudo_labels(probs.log(), portion=0.2)
    assert selected[:40].sum() == 8 and selected[40:].sum() == 2
    assert labels[selected].tolist() == [0] * 8 + [1] * 2
    assert torch.equal(selected, torch.tensor([i < 8 or 40 <= i < 42 for i in range(50)]))
    labels, selected = class_balanced_pseudo_labels(probs.log(), portion=1.0)
    assert bool(selected.all()) and torch.equal(labels, probs.argmax(1))
    with pytest.raises(ValueError, match="portion must lie in"):
        class_balanced_pseudo_labels(probs.log(), portion=0.0)


def test_cbst_portion_schedule_and_loss_over_the_selected_examples():
    from da.methods import TargetPass

    method = build_method(RunConfig(method="cbst"), 2, 4)
    assert [method.portion(e) for e in (0, 1, 6, 20)] == [0.2, 0.25, 0.5, 0.5]
    logits = torch.tensor([[4.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 1.0]])
    method.on_epoch_start(0, TargetPass(logits, torch.zeros(4, 3)))
    assert method.selected.tolist() == [True, False, True, False]
    batch = torch.tensor([[0.0, 1.0], [0.5, 0.0], [1.0, 1.0]])
    out = StepOutputs(torch.zeros(3, 2), torch.zeros(3, 3), torch.zeros(3, dtype=torch.long), batch,
                      torch.zeros(3, 3), 0.0, idx_t=torch.tensor([0, 1, 2]))
    ce = torch.nn.functional.cross_entropy(batch, torch.tensor([0, 0, 1]), reduction="none")
    np.testing.assert_allclose(method(out)["cbst"].item(), (ce[0] + ce[2]).item() / 3, rtol=1e-6)


def test_mcc_and_shot_methods_wire_their_losses():
    from da.losses import InformationMaximization, MinimumClassConfusion
    from da.methods import TargetPass

    gen = torch.Generator().manual_seed(1)
    logits_t, z_t = torch.randn(6, 3, generator=gen), torch.randn(6, 4, generator=gen)
    out = StepOutputs(torch.randn(6, 3), torch.randn(6, 4), torch.zeros(6, dtype=torch.long), logits_t, z_t, 0.5,
                      idx_t=torch.tensor([5, 4, 3, 2, 1, 0]))
    mcc = build_method(RunConfig(method="mcc", mcc_weight=0.7, mcc_temperature=2.0), 3, 4)
    np.testing.assert_allclose(mcc(out)["mcc"].item(), 0.7 * MinimumClassConfusion(2.0)(logits_t).item(), rtol=1e-6)
    shot = build_method(RunConfig(method="shot", im_weight=0.5, shot_weight=0.3), 3, 4)
    pass_logits, pass_feats = torch.randn(6, 3, generator=gen), torch.randn(6, 4, generator=gen)
    shot.on_epoch_start(0, TargetPass(pass_logits, pass_feats))
    from da.methods.shot import centroid_pseudo_labels

    pseudo = centroid_pseudo_labels(pass_logits, pass_feats)[out.idx_t]
    expected = 0.5 * (InformationMaximization()(logits_t) + 0.3 * torch.nn.functional.cross_entropy(logits_t, pseudo))
    np.testing.assert_allclose(shot(out)["shot"].item(), expected.item(), rtol=1e-6)


def _permute_target_train_labels(monkeypatch):
    """Every run built after this sees the target training split's labels shuffled among its images."""
    import da.train.setup as setup

    original = setup.adaptation_splits

    def shuffled(*args, **kwargs):
        splits = original(*args, **kwargs)
        split = splits["target_train"]
        labels = [lab for _, lab in split.samples]
        perm = np.random.default_rng(0).permutation(len(labels))
        split.samples = [(rel, labels[j]) for (rel, _), j in zip(split.samples, perm)]
        assert any(a != b for a, b in zip(labels, (lab for _, lab in split.samples)))
        return splits

    monkeypatch.setattr(setup, "adaptation_splits", shuffled)


@pytest.mark.parametrize("method,prior,stages,extra", [
    ("shot+cbst", "", 1, {}), ("shot", "em", 1, {"weight_ema": 0.9}), ("aad+mcc+adabn+fixmatch", "", 2, {}), ("nrc", "em", 1, {}),
    ("fixmatch+mcc", "", 1, {"fixmatch_ema": 0.99, "fixmatch_strong": "randaugment", "strategy": "partial:2"}),
    pytest.param("mcc+coral", "bbse", 1, {}, marks=pytest.mark.slow)])
def test_no_target_label_reaches_training(tiny_root, tmp_path, monkeypatch, method, prior, stages, extra):
    """The same run with the target training labels permuted trains to the same numbers: pseudo-labels,
    the prior estimate, AaD's memory, AdaBN's statistics, FixMatch's weak views, its EMA teacher and strong views,
    the weight average (--weight-ema), from which SHOT relabels,
    the drift from the source model and every loss are made without them (only the prior's reported error
    moves)."""
    kw = dict(method=method, prior=prior, stages=stages, epochs=2, **extra)
    ref = load(run_experiment(tiny_cfg(tiny_root, tmp_path / "ref", **kw)))
    _permute_target_train_labels(monkeypatch)
    perm = load(run_experiment(tiny_cfg(tiny_root, tmp_path / "perm", **kw)))
    assert _metrics(perm) == _metrics(ref)
    assert [e.get("drift") for e in perm["epochs"]] == [e.get("drift") for e in ref["epochs"]]
    assert (stages == 2) == all("drift" in e for e in ref["epochs"])
    if prior:
        assert [e["prior"]["estimate"] for e in perm["epochs"]] == [e["prior"]["estimate"] for e in ref["epochs"]]


@pytest.mark.slow  # an end-to-end run: the default suite stays under 10 minutes on 2 slow cores
def test_shot_can_freeze_the_classifier(tiny_root, tmp_path):
    from da.train.setup import build_run, load_splits

    cfg = tiny_cfg(tiny_root, tmp_path, method="shot", shot_freeze_classifier=True, stages=1, epochs=2)
    run = build_run(cfg, 2, load_splits(cfg, 2), None)
    assert not any(p.requires_grad for p in run.model.head.classifier.parameters())
    assert all(p.requires_grad for p in run.model.head.bottleneck.parameters())
    models = {}

    def remember(epoch):
        models[epoch] = checkpoint.load(run_dir_for(cfg, 2) / CHECKPOINT_FILE)

    train_stage(cfg, stage=2, on_epoch_end=remember)
    for name in ("head.classifier.weight", "head.classifier.bias"):  # frozen: left out of the checkpoint
        assert name not in models[1]["model"] and name not in models[2]["model"]
    assert models[1]["frozen_digest"] == models[2]["frozen_digest"]  # the frozen weights did not move
    models = {epoch: ckpt["model"] for epoch, ckpt in models.items()}
    assert not torch.equal(models[1]["head.bottleneck.0.weight"], models[2]["head.bottleneck.0.weight"])


@pytest.mark.slow  # an end-to-end run: the default suite stays under 10 minutes on 2 slow cores
def test_prior_estimate_in_the_record_and_exact_resume_with_pseudo_labels(tiny_root, tmp_path):
    kw = dict(method="shot+coral", prior="em", stages=1, epochs=3)
    ref = load(train_stage(tiny_cfg(tiny_root, tmp_path / "ref", **kw), stage=2))
    for entry in ref["epochs"]:
        prior = entry["prior"]
        assert prior["estimator"] == "em" and abs(sum(prior["estimate"]) - 1) < 1e-4
        np.testing.assert_allclose(prior["true"], [1 / 7] * 7, atol=1e-4)  # tiny RSSCN7: balanced
        np.testing.assert_allclose(prior["l1_error"], np.abs(np.subtract(prior["estimate"], prior["true"])).sum(),
                                   atol=1e-4)
        assert 0 <= prior["target_test"]["accuracy"] <= 1
    assert ref["prior"] == ref["epochs"][ref["selected_epoch"] - 1]["prior"]
    corrected = ref["target_test_prior_corrected"]
    assert corrected["accuracy"] == ref["prior"]["target_test"]["accuracy"] and len(corrected["confusion"]) == 7
    rec = killed_then_resumed(tiny_cfg(tiny_root, tmp_path / "cut", **kw))
    assert rec["resumed"] == 1 and _metrics(rec) == _metrics(ref)
    assert [e["prior"] for e in rec["epochs"]] == [e["prior"] for e in ref["epochs"]]


def test_prior_weights_reach_the_source_losses(tiny_root, tmp_path):
    """With --prior the source cross-entropy and CORAL see class-ratio weights q-hat / p_train."""
    from da.train.engine import start_epoch
    from da.train.setup import build_run, load_splits
    from da.train import label_shift

    cfg = tiny_cfg(tiny_root, tmp_path, method="coral", prior="em", stages=1)
    run = build_run(cfg, 2, load_splits(cfg, 2), None)
    assert run.needs_target_pass and run.class_ratio is None
    start_epoch(run, 0)
    p_train = label_shift.train_class_prior(cfg, run.data.splits, "source_train")
    q = run.prior.target_prior.clamp_min(label_shift.MIN_SHARE)
    np.testing.assert_allclose(run.class_ratio.double().numpy(), (q / p_train).numpy(), rtol=1e-6)
    assert torch.equal(run.cls_loss.weight, run.class_ratio)
    balanced = tiny_cfg(tiny_root, tmp_path, prior="em", source_sampling="class_balanced")
    assert torch.equal(label_shift.train_class_prior(balanced, run.data.splits, "source_train"),
                       torch.full((7,), 1 / 7, dtype=torch.float64))
    with pytest.raises(ValueError, match="--prior sets the source classes' weights"):
        RunConfig(prior="em", cls_loss="focal").validate()


def test_adapt_from_epoch_keeps_pseudo_labels_and_prior_out_of_the_first_epochs(tiny_root, tmp_path, monkeypatch):
    """With --adapt-from-epoch 1 the first epoch trains without pseudo-labels (CBST's term is 0, SHOT's is
    IM alone) and without prior weights; from epoch 2 on both act.  The estimate is reported every epoch."""
    from da.losses import InformationMaximization
    from da.train import engine

    seen = []
    original = engine.train_epoch

    def spy(run, epoch, hint):
        seen.append((epoch, run.class_ratio is not None, len(run.method.parts[1].selected)))
        return original(run, epoch, hint)

    monkeypatch.setattr(engine, "train_epoch", spy)
    rec = load(train_stage(tiny_cfg(tiny_root, tmp_path, method="shot+cbst", prior="em", adapt_from_epoch=1,
                                    stages=1, epochs=2), stage=2))
    assert [(e, weighted) for e, weighted, _ in seen] == [(0, False), (1, True)]
    assert seen[0][2] == 0 and seen[1][2] > 0
    assert rec["epochs"][0]["loss"]["cbst"] == 0.0 and "prior" in rec["epochs"][0]
    assert RunConfig(adapt_from_epoch=1).config_hash() != RunConfig().config_hash()
    method = build_method(RunConfig(method="shot"), 3, 4)
    logits = torch.randn(5, 3)
    out = StepOutputs(torch.zeros(5, 3), torch.zeros(5, 4), torch.zeros(5, dtype=torch.long), logits,
                      torch.zeros(5, 4), 0.0, idx_t=torch.arange(5))
    np.testing.assert_allclose(method(out)["shot"].item(), 0.3 * InformationMaximization()(logits).item(), rtol=1e-6)
