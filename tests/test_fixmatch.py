"""FixMatch (da/methods/fixmatch.py): its loss against numpy, AdaMatch's relative threshold, the weak views the
step feeds it (the target pass's own inputs), its declared settings, and a run end to end."""

import json

import numpy as np
import pytest
import torch

from da.cli import build_parser
from da.config import ConfigError, RunConfig
from da.methods import StepOutputs, build_method
from da.methods.fixmatch import ConfidentPseudoLabelLoss
from da.train import run_experiment
from da.train.batches import CachedBatches
from test_engine import tiny_cfg


def _softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_loss_is_the_masked_cross_entropy_over_the_whole_batch_in_numpy():
    rng = np.random.default_rng(0)
    strong, weak = rng.normal(size=(8, 5)), rng.normal(size=(8, 5)) * 3
    q = _softmax(weak)
    mask = q.max(1) >= 0.6
    assert 0 < mask.sum() < 8  # the case has both kinds of image
    ce = -np.log(_softmax(strong)[np.arange(8), q.argmax(1)])
    loss, share = ConfidentPseudoLabelLoss()(torch.tensor(strong), torch.tensor(weak), 0.6)
    assert loss.item() == pytest.approx((mask * ce).sum() / 8, rel=1e-6)
    assert share.item() == pytest.approx(mask.mean())


def test_gradient_reaches_the_strong_view_only():
    strong = torch.randn(4, 3, requires_grad=True)
    weak = (torch.eye(3)[[0, 1, 2, 0]] * 10).requires_grad_()
    loss, share = ConfidentPseudoLabelLoss()(strong, weak, 0.95)
    loss.backward()
    assert share.item() == 1.0 and strong.grad.abs().sum() > 0 and weak.grad is None


def test_relative_threshold_is_tau_times_the_mean_source_confidence():
    logits_s = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    conf = torch.softmax(logits_s, 1).max(1).values.mean().item()
    method = build_method(RunConfig(method="fixmatch", fixmatch_relative=True, fixmatch_threshold=0.9), 3, 4)
    assert float(method.threshold(logits_s)) == pytest.approx(0.9 * conf)
    assert build_method(RunConfig(method="fixmatch"), 3, 4).threshold(logits_s) == 0.95
    # a weak prediction of confidence 0.6 passes the relative threshold (0.9 * 0.56) and not the absolute one
    weak = torch.log(torch.tensor([[0.6, 0.2, 0.2]]))
    out = StepOutputs(logits_s, torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), torch.zeros(1, 3),
                      torch.zeros(1, 4), 0.5, logits_tw=weak)
    assert method(out)["fixmatch"].item() == pytest.approx(np.log(3))
    assert build_method(RunConfig(method="fixmatch"), 3, 4)(out)["fixmatch"].item() == 0.0


def test_cached_weak_views_are_the_evaluation_cache_rows():
    feats = torch.randn(6, 1, 2, 3, 3).half()
    batches = CachedBatches(feats, torch.zeros(6, dtype=torch.long), 0, 2, shuffle=False, drop_last=False)
    idx = torch.tensor([4, 1])
    assert torch.equal(batches.inputs_at(idx), feats[[4, 1], 0].float())


def test_settings_are_declared_once_and_reach_flags_checks_and_hash():
    help_text = " ".join(build_parser("x").format_help().split())
    assert "--fixmatch-threshold" in help_text and "--fixmatch-relative" in help_text
    with pytest.raises(ConfigError, match=r"--fixmatch-threshold must be >= 0 and <= 1 \(fixmatch.s setting\), got 1.5"):
        RunConfig(method="fixmatch", fixmatch_threshold=1.5).validate()
    assert RunConfig(method="fixmatch+mcc").hashed_dict()["fixmatch_threshold"] == 0.95
    assert "fixmatch_weight" not in RunConfig(method="mcc").hashed_dict()
    assert build_method(RunConfig(method="mcc+fixmatch"), 3, 4).needs_weak_target
    assert not build_method(RunConfig(method="mcc"), 3, 4).needs_weak_target


@pytest.mark.parametrize("cache_views", [pytest.param(2, marks=pytest.mark.slow), 0])
def test_fixmatch_runs_end_to_end_with_and_without_a_prefix_cache(tiny_root, tmp_path, cache_views, monkeypatch):
    seen = []
    original = ConfidentPseudoLabelLoss.forward

    def spy(self, strong, weak, threshold):
        seen.append((strong.shape, weak.shape))
        return original(self, strong, weak, threshold)

    monkeypatch.setattr(ConfidentPseudoLabelLoss, "forward", spy)
    cfg = tiny_cfg(tiny_root, tmp_path, method="fixmatch", stages=1, epochs=2, fixmatch_threshold=0.0,
                   strategy="partial:2", cache_views=cache_views)
    record = json.loads(open(run_experiment(cfg)).read())
    assert record["config"]["fixmatch_threshold"] == 0.0 and record["config"]["fixmatch_relative"] is False
    # threshold 0: every weak prediction is a label, so the term is a cross-entropy, > 0
    assert all(np.isfinite(e["loss"]["fixmatch"]) and e["loss"]["fixmatch"] > 0 for e in record["epochs"])
    assert seen and all(s == w and s[0] == cfg.batch_size for s, w in seen)


class _TwoLayer(torch.nn.Module):
    """A model with the interface the teacher needs: forward_from, a frozen and a trained layer, a buffer."""

    def __init__(self):
        super().__init__()
        self.frozen = torch.nn.Linear(3, 3)
        self.frozen.requires_grad_(False)
        self.head = torch.nn.Linear(3, 2)
        self.register_buffer("stat", torch.zeros(2))

    def forward_from(self, h, start):
        z = self.frozen(h)
        return self.head(z), z


def test_ema_teacher_follows_the_trained_weights_and_labels_the_weak_views():
    torch.manual_seed(0)
    model = _TwoLayer()
    method = build_method(RunConfig(method="fixmatch", fixmatch_ema=0.9), 2, 3)
    assert build_method(RunConfig(method="fixmatch"), 2, 3).weak_view_logits(torch.zeros(1, 3), 0) is None
    method.configure_model(model)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.head.weight.add_(1.0)
        model.stat.fill_(5.0)
    method.on_step_end()
    teacher = method.teacher.state_dict()
    assert torch.allclose(teacher["head.weight"], 0.9 * start["head.weight"] + 0.1 * model.head.weight)
    assert torch.allclose(teacher["head.bias"], start["head.bias"]) and torch.equal(teacher["stat"], model.stat)
    assert torch.equal(teacher["frozen.weight"], model.frozen.weight)
    x = torch.randn(4, 3)
    assert torch.allclose(method.weak_view_logits(x, 0), method.teacher.forward_from(x, 0)[0])
    assert not any(p.requires_grad for p in method.teacher.parameters()) and not method.param_groups(0.1, 0.0)
    assert "teacher.head.weight" in method.state_dict()  # resumed with the method's state


def test_ema_teacher_run_resumes_bit_identically_after_a_kill(tiny_root, tmp_path):
    from da.rundir import CHECKPOINT_FILE, run_dir_for
    from da.train import checkpoint, train_stage
    from test_engine import _metrics, killed_then_resumed

    kw = dict(method="fixmatch+mcc", stages=1, epochs=2, fixmatch_ema=0.9, fixmatch_threshold=0.0)
    ref_cfg = tiny_cfg(tiny_root, tmp_path / "ref", **kw)
    ref = json.loads(open(train_stage(ref_cfg, stage=2)).read())
    assert all(e["loss"]["fixmatch"] > 0 for e in ref["epochs"])
    cfg = tiny_cfg(tiny_root, tmp_path / "cut", **kw)
    rec = killed_then_resumed(cfg)
    assert rec["resumed"] == 1 and _metrics(rec) == _metrics(ref)
    assert [e["loss"] for e in rec["epochs"]] == [e["loss"] for e in ref["epochs"]]
    a = checkpoint.load(run_dir_for(cfg, 2) / CHECKPOINT_FILE)["method"]
    b = checkpoint.load(run_dir_for(ref_cfg, 2) / CHECKPOINT_FILE)["method"]
    assert any(".teacher." in k for k in a) and all(torch.equal(a[k], b[k]) for k in a)


def test_strong_views_replace_the_colour_jitter_and_leave_the_default_transform_as_it_was():
    from torchvision.transforms import v2

    from da.data.transforms import train_transform

    default = train_transform(32, [0.5] * 3, [0.5] * 3)
    assert any(isinstance(t, v2.ColorJitter) for t in default.transforms)
    assert repr(default) == repr(train_transform(32, [0.5] * 3, [0.5] * 3, strong=None))  # cache keys stay
    strong = train_transform(32, [0.5] * 3, [0.5] * 3, strong="randaugment")
    kinds = [type(t) for t in strong.transforms]
    assert v2.RandAugment in kinds and v2.ColorJitter not in kinds
    assert kinds.index(v2.RandAugment) < kinds.index(v2.ToDtype)  # on uint8 images, as the policy expects
    image = torch.randint(0, 256, (3, 48, 48), dtype=torch.uint8)
    torch.manual_seed(0)
    out = strong(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="unknown strong augmentation 'cutout': one of randaugment, trivialaugment"):
        train_transform(32, [0.5] * 3, [0.5] * 3, strong="cutout")


def test_strong_setting_is_checked_hashed_only_off_its_default_and_shared_by_a_combination():
    with pytest.raises(ConfigError, match=r"--fixmatch-strong must be one of 'train', 'randaugment', 'trivialaugment'"):
        RunConfig(method="fixmatch", fixmatch_strong="cutout").validate()
    assert "fixmatch_strong" not in RunConfig(method="fixmatch").hashed_dict()  # committed FixMatch hashes stay
    assert RunConfig(method="fixmatch", fixmatch_strong="randaugment").hashed_dict()["fixmatch_strong"] == "randaugment"
    assert build_method(RunConfig(method="fixmatch"), 3, 4).target_augmentation() is None
    both = build_method(RunConfig(method="fixmatch+mcc", fixmatch_strong="trivialaugment"), 3, 4)
    assert both.target_augmentation() == "trivialaugment"
    assert build_method(RunConfig(method="mcc"), 3, 4).target_augmentation() is None


def test_strong_views_are_cached_through_the_prefix_and_feed_the_target_batches(tiny_root, tmp_path):
    cfg = tiny_cfg(tiny_root, tmp_path, method="fixmatch", stages=1, epochs=1, fixmatch_threshold=0.0,
                   strategy="partial:2", cache_views=2, fixmatch_strong="randaugment")
    record = json.loads(open(run_experiment(cfg)).read())
    assert record["config"]["fixmatch_strong"] == "randaugment"
    assert np.isfinite(record["epochs"][0]["loss"]["fixmatch"]) and record["epochs"][0]["loss"]["fixmatch"] > 0
    transforms = [json.loads(p.read_text())["transform"] for p in (tmp_path / "cache").glob("*.json")]
    strong = [t for t in transforms if "RandAugment" in t]
    # one strong cache (the target's training views); the source's training views keep the colour jitter
    assert len(strong) == 1 and any("ColorJitter" in t for t in transforms)
