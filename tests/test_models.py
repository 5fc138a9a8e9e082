"""Models: stage splits, weights (offline Lite0, checkpoints, foreign state dicts), strategies, optimisers."""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from da.models import (LARS, DAModel, GradualUnfreezer, OfflineWeightsError, WeightsError, apply_strategy,
                       build_model, build_optimizer, frozen_prefix_length, map_in_order, param_groups)
from da.models.weights import lite0_weights_path

REPO = Path(__file__).resolve().parents[1]
LITE0 = "timm:tf_efficientnet_lite0"
BACKBONES = ["resnet18", LITE0]
STRATEGIES = ["full", "linear", "partial:1", "partial:2", "gradual"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # these tensors are tiny: thread synchronisation costs more than it saves (20x on a busy 2-core machine)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(backbone: str, num_classes: int = 5, **kw) -> DAModel:
    torch.manual_seed(0)
    return build_model(backbone, num_classes, weights=kw.pop("weights", "none"), **kw)


def _x(n: int = 4, size: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _y(n: int = 4) -> torch.Tensor:
    return torch.arange(n) % 5


def _bn_modules(model: DAModel) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, _BatchNorm)}


def _expected_trainable_stages(strategy: str, n: int) -> set[int]:
    if strategy == "full":
        return set(range(n))
    if strategy.startswith("partial:"):
        k = int(strategy.split(":")[1])
        return set(range(n - k, n))
    return set()  # linear, and gradual before any unfreezing


# -------------------------------------------------------------------------------------------- structure

def test_stage_splits_follow_the_architectures():
    r = _model("resnet18")
    assert len(r.stages) == 5 and r.feature_dim == 512
    # stem, layer1..layer4: the library's names map onto the stage that should hold them
    assert r.library_keys["conv1.weight"] == "stages.0.conv1.weight"
    assert r.library_keys["layer1.0.conv1.weight"] == "stages.1.0.conv1.weight"
    assert r.library_keys["layer4.1.bn2.running_var"] == "stages.4.1.bn2.running_var"
    assert "fc.weight" not in r.library_keys  # the library classifier is gone; ours is the head
    e = _model(LITE0)
    assert len(e.stages) == 9 and e.feature_dim == 1280
    assert e.library_keys["conv_stem.weight"] == "stages.0.conv_stem.weight"
    assert e.library_keys["blocks.0.0.conv_dw.weight"] == "stages.1.0.conv_dw.weight"
    assert e.library_keys["blocks.6.0.conv_pw.weight"] == "stages.7.0.conv_pw.weight"
    assert e.library_keys["bn2.weight"] == "stages.8.bn2.weight"
    for m in (r, e):
        assert not list(m.pool.parameters())
        assert isinstance(m.head.classifier, nn.Linear)
        assert [type(l) for l in m.head.bottleneck] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout]
        logits, z = m.eval()(_x(2))
        assert logits.shape == (2, 5) and z.shape == (2, 256)
        assert m.features(_x(2)).shape == (2, m.feature_dim)
        assert m.mean == (0.485, 0.456, 0.406) and m.std == (0.229, 0.224, 0.225)


@pytest.mark.parametrize("backbone, dim, n_stages", [
    ("resnet50", 2048, 5), ("resnet101", 2048, 5), ("efficientnet_b0", 1280, 9), ("efficientnet_b1", 1280, 9),
    ("efficientnet_b2", 1408, 9), ("efficientnet_b3", 1536, 9), ("efficientnet_b4", 1792, 9),
    ("mobilenet_v3_large", 1280, 8), ("convnext_tiny", 768, 5), ("vit_b_16", 768, 14)])
def test_torchvision_backbones_declare_their_feature_width(backbone, dim, n_stages):
    # on the meta device: shapes only, no memory and no initialisation cost
    with torch.device("meta"):
        m = build_model(backbone, 7, weights="none", bottleneck_dim=None)
        size = 224 if backbone.startswith("vit") else 64
        feats = m.features(torch.empty(2, 3, size, size))
        logits, z = m(torch.empty(2, 3, size, size))
    assert m.feature_dim == dim and len(m.stages) == n_stages
    assert feats.shape == (2, dim) and z.shape == (2, dim) and logits.shape == (2, 7)
    assert not list(m.pool.parameters())


def test_any_timm_model_works_even_without_a_known_stage_split():
    m = _model("timm:vit_tiny_patch16_224")  # no stage split for ViTs: one opaque stage, pooled by timm's head
    assert len(m.stages) == 1 and m.feature_dim == 192
    logits, z = m.eval()(_x(2, 224))
    assert logits.shape == (2, 5) and z.shape == (2, 256)
    assert len(list(m.parameters())) == len(list(m.stages.parameters())) + len(list(m.head.parameters()))


@pytest.mark.parametrize("backbone", BACKBONES)
def test_forward_from_a_prefix_equals_forward(backbone):
    m = _model(backbone).eval()
    x = _x(3)
    with torch.no_grad():
        logits, z = m(x)
        for k in range(len(m.stages) + 1):
            h = m.prefix(x, k)
            lk, zk = m.forward_from(h, k)
            assert torch.allclose(lk, logits, atol=1e-5) and torch.allclose(zk, z, atol=1e-5), k
        # the engine caches prefixes in float16: they are accepted and give nearly the same logits
        k = len(m.stages) - 2
        l16, _ = m.forward_from(m.prefix(x, k).half(), k)
        assert l16.dtype == torch.float32 and torch.allclose(l16, logits, atol=1e-2)
    with pytest.raises(ValueError, match="start"):
        m.forward_from(x, len(m.stages) + 1)


def test_frozen_prefix_is_a_fixed_function_in_train_mode():
    # what makes the engine's prefix cache valid: the frozen stages act identically in train mode
    m = _model(LITE0, drop_path=0.2)
    apply_strategy(m, "partial:3")
    m.train()
    k = frozen_prefix_length(m, "partial:3")
    x = _x(4)
    with torch.no_grad():
        assert torch.equal(m.prefix(x, k), m.prefix(x, k))
        assert torch.equal(m.prefix(x, k), m.eval().prefix(x, k))


def test_reset_classifier_keeps_everything_else():
    m = _model("resnet18", 30)
    before = {k: v.clone() for k, v in m.state_dict().items() if not k.startswith("head.classifier.")}
    m.reset_classifier(7)
    assert m.head.classifier.out_features == 7 and m.num_classes == 7
    after = m.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert m.eval()(_x(2))[0].shape == (2, 7)


def test_no_bottleneck_gives_features_as_z_and_dropout_before_the_classifier():
    m = _model("resnet18", bottleneck_dim=None, dropout=0.5)
    assert isinstance(m.head.bottleneck, nn.Identity) and m.head.drop.p == 0.5
    m.eval()
    logits, z = m(_x(2))
    assert z.shape == (2, 512) and torch.allclose(z, m.features(_x(2)))
    assert _model("resnet18", dropout=0.3).head.bottleneck[3].p == 0.3


# -------------------------------------------------------------------------------------------- strategies

@pytest.fixture(scope="module")
def models():
    return {b: _model(b) for b in BACKBONES}


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("freeze_bn", [False, True])
def test_strategy_sets_requires_grad_and_bn_modes(models, backbone, strategy, freeze_bn):
    m = models[backbone]
    apply_strategy(m, strategy, freeze_bn=freeze_bn)
    m.train()
    n = len(m.stages)
    trainable_stages = _expected_trainable_stages(strategy, n)
    expected = {name for name, _ in m.named_parameters()
                if name.startswith("head.") or int(name.split(".")[1]) in trainable_stages}
    assert {name for name, p in m.named_parameters() if p.requires_grad} == expected
    for name, bn in _bn_modules(m).items():
        if name.startswith("head."):
            assert bn.training, name  # the new bottleneck always learns its statistics
        else:
            assert bn.training == (int(name.split(".")[1]) in trainable_stages and not freeze_bn), name
    m.eval()
    assert not any(bn.training for bn in _bn_modules(m).values())
    expected_prefix = {"full": 0, "gradual": 0, "linear": n}.get(strategy, n - len(trainable_stages))
    assert frozen_prefix_length(m, strategy) == expected_prefix


def test_linear_freezes_the_whole_backbone_on_both_backbones(models):
    for m in models.values():
        apply_strategy(m, "linear")
        m.train()
        assert not any(p.requires_grad for p in m.stages.parameters())
        assert all(p.requires_grad for p in m.head.parameters())
        assert not any(mod.training for stage in m.stages for mod in stage.modules())  # dropout/drop path off too


@pytest.mark.parametrize("bad", ["partial", "partial:0", "partial:99", "partial:-1", "half", "", "Full"])
def test_invalid_strategy_lists_the_valid_forms(models, bad):
    with pytest.raises(ValueError, match="partial:K|K must be"):
        apply_strategy(models["resnet18"], bad)


def _snapshot(m: DAModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _step(m: DAModel, optimizer, x=None, y=None):
    logits, z = m(_x() if x is None else x)
    loss = nn.functional.cross_entropy(logits, _y() if y is None else y) + 0.1 * z.pow(2).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("strategy, freeze_bn, opt", [("linear", False, "adamw"), ("partial:2", False, "sgd"),
                                                      ("partial:1", True, "adamw"), ("gradual", False, "lars"),
                                                      ("full", True, "sgd")])
def test_one_step_leaves_frozen_params_and_bn_stats_bit_identical(backbone, strategy, freeze_bn, opt):
    m = _model(backbone)
    apply_strategy(m, strategy, freeze_bn=freeze_bn)
    m.train()
    optimizer = build_optimizer(opt, param_groups(m, lr=0.1, weight_decay=0.05), lr=0.1, weight_decay=0.05)
    before = _snapshot(m)
    _step(m, optimizer)
    after = m.state_dict()
    trainable = _expected_trainable_stages(strategy, len(m.stages))
    frozen_bn = {name for name, bn in _bn_modules(m).items()
                 if not name.startswith("head.") and (freeze_bn or int(name.split(".")[1]) not in trainable)}
    for name, p in m.named_parameters():
        if p.requires_grad:
            continue
        assert torch.equal(after[name], before[name]), f"frozen {name} moved"
    for bn_name in frozen_bn:
        for buf in ("running_mean", "running_var", "num_batches_tracked"):
            assert torch.equal(after[f"{bn_name}.{buf}"], before[f"{bn_name}.{buf}"]), f"{bn_name}.{buf} moved"
    # and the step did train what should train
    moved = {n for n, p in m.named_parameters() if not torch.equal(after[n], before[n])}
    assert "head.classifier.weight" in moved and "head.bottleneck.0.weight" in moved
    for i in trainable:
        assert any(n.startswith(f"stages.{i}.") for n in moved), f"trainable stage {i} did not move"
    if not freeze_bn and trainable:
        top = max(trainable)
        assert any(not torch.equal(after[k], before[k]) for k in after
                   if k.startswith(f"stages.{top}.") and k.endswith("running_mean"))


def test_train_keeps_frozen_bn_in_eval_mode_and_stats_still():
    m = _model("resnet18")
    apply_strategy(m, "partial:1")
    before = _snapshot(m)
    for _ in range(2):
        m.train()
        with torch.no_grad():
            m(_x())
    after = m.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in after if k.startswith(("stages.0.", "stages.3.")))
    assert not torch.equal(after["stages.4.0.bn1.running_mean"], before["stages.4.0.bn1.running_mean"])


@pytest.mark.parametrize("backbone", BACKBONES)
def test_gradual_unfreezing_follows_the_schedule_and_the_optimizer_updates_each_stage(backbone):
    m = _model(backbone)
    apply_strategy(m, "gradual")
    n = len(m.stages)
    lr, factor = 0.5, 0.1
    groups = param_groups(m, lr=lr, backbone_lr_factor=factor, weight_decay=0.0)
    # plain SGD: a step is exactly -lr_group * grad, which pins down each group's learning rate
    optimizer = build_optimizer("sgd", groups, lr=lr, weight_decay=0.0, momentum=0.0)
    unfreezer = GradualUnfreezer(m, every_epochs=2)
    unfrozen: set[int] = set()
    m.train()
    for epoch in range(2 * n + 3):
        new = unfreezer.on_epoch_start(epoch)
        expected_new = [n - epoch // 2] if epoch % 2 == 0 and 0 < epoch // 2 <= n else []
        assert new == expected_new, epoch
        unfrozen |= set(new)
        assert set(range(n)) - set(m.frozen_stages) == unfrozen
        for i in range(n):
            stage = m.stages[i]
            assert all(p.requires_grad == (i in unfrozen) for p in stage.parameters())
            assert all(bn.training == (i in unfrozen) for bn in stage.modules() if isinstance(bn, _BatchNorm))
        if epoch % 2:  # nothing changed since the previous step: save the time of another one
            continue
        before = _snapshot(m)
        _step(m, optimizer)
        grads = {name: p.grad for name, p in m.named_parameters()}
        after = m.state_dict()
        for name, p in m.named_parameters():
            stage = int(name.split(".")[1]) if name.startswith("stages.") else None
            if stage is not None and stage not in unfrozen:
                assert grads[name] is None and torch.equal(after[name], before[name]), name
            elif grads[name] is not None:
                group_lr = lr * factor if stage is not None else lr
                torch.testing.assert_close(before[name] - after[name], group_lr * grads[name], rtol=1e-3, atol=1e-6)
        for i in new:  # the newly unfrozen stage moved, by the backbone group's learning rate
            names = [n for n, _ in m.named_parameters() if n.startswith(f"stages.{i}.")]
            delta = torch.cat([(before[n] - after[n]).flatten() for n in names])
            grad = torch.cat([grads[n].flatten() for n in names])
            assert grad.norm() > 0
            assert (delta.norm() / grad.norm()).item() == pytest.approx(lr * factor, rel=1e-3)
    assert unfrozen == set(range(n))


def test_gradual_unfreezer_state_survives_a_resume():
    m = _model("resnet18")
    apply_strategy(m, "gradual")
    u = GradualUnfreezer(m, every_epochs=1)
    for epoch in range(3):
        u.on_epoch_start(epoch)
    assert m.frozen_stages == (0, 1, 2)
    state = u.state_dict()
    m2 = _model("resnet18")
    apply_strategy(m2, "gradual")
    u2 = GradualUnfreezer(m2, every_epochs=1)
    u2.load_state_dict(state)
    assert m2.frozen_stages == (0, 1, 2) and u2.state_dict() == state
    assert u2.on_epoch_start(3) == [2] and m2.frozen_stages == (0, 1)
    with pytest.raises(ValueError, match="every"):
        GradualUnfreezer(m2, every_epochs=3).load_state_dict(state)


# -------------------------------------------------------------------------------------------- optimisers

def test_param_groups_split_backbone_head_and_decay():
    m = _model("resnet18")
    groups = param_groups(m, lr=1e-2, backbone_lr_factor=0.1, weight_decay=0.05)
    by_name = {g["name"]: g for g in groups}
    assert list(by_name) == ["backbone_decay", "backbone_no_decay", "head_decay", "head_no_decay"]
    assert by_name["backbone_decay"]["lr"] == pytest.approx(1e-3) and by_name["head_decay"]["lr"] == 1e-2
    assert by_name["backbone_no_decay"]["weight_decay"] == 0.0 and by_name["head_no_decay"]["weight_decay"] == 0.0
    assert by_name["backbone_decay"]["weight_decay"] == 0.05
    names = {id(p): n for n, p in m.named_parameters()}
    grouped = [names[id(p)] for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(names.values())  # every parameter exactly once, frozen ones included
    no_decay = {names[id(p)] for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert "stages.1.0.bn1.weight" in no_decay and "head.bottleneck.0.bias" in no_decay
    assert "stages.1.0.conv1.weight" not in no_decay and "head.classifier.weight" not in no_decay
    assert all(g["lars_exclude"] == (g["weight_decay"] == 0.0) for g in groups)


@pytest.mark.parametrize("weight_decay, foreach", [(0.05, False), (0.0, False), (0.05, True)])
def test_config_lars_follows_the_papers_closed_form(weight_decay, foreach):
    # --optimizer lars as build_run makes it, against You et al. (2017) written out here:
    # local lr = eta * ||w|| / (||g|| + wd * ||w||) on weights; biases and norms plain momentum SGD
    from da.config import RunConfig

    cfg = RunConfig(optimizer="lars", lr=0.5, backbone_lr_factor=0.1, weight_decay=weight_decay, momentum=0.9)
    m = _model("resnet18")
    m.stages[0].conv1.weight.requires_grad_(False)  # frozen: no gradient, so no step
    groups = param_groups(m, cfg.lr, cfg.backbone_lr_factor, cfg.weight_decay)
    opt = build_optimizer(cfg.optimizer, groups, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum)
    for group in opt.param_groups:  # timm's multi-tensor path, its default on CUDA, checked here on the CPU
        group["foreach"] = foreach
    eta = 0.001
    names = dict(m.named_parameters())
    w = {n: p.detach().double().clone() for n, p in names.items()}
    v: dict[str, torch.Tensor] = {}
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        for n, p in names.items():
            p.grad = None if not p.requires_grad else torch.randn(p.shape, generator=gen) * 10 ** (len(n) % 4 - 2)
        for n, p in names.items():
            if p.grad is None:
                continue
            g, wn = p.grad.double(), w[n].norm()
            head = n.startswith("head.")
            lr = cfg.lr * (1.0 if head else cfg.backbone_lr_factor)
            if p.ndim >= 2:  # adapted, with weight decay
                d = (g + weight_decay * w[n]) * (eta * wn / (g.norm() + weight_decay * wn))
            else:
                d = g
            v[n] = d if n not in v else cfg.momentum * v[n] + d
            w[n] = w[n] - lr * v[n]
        opt.step()
        for n, p in names.items():
            torch.testing.assert_close(p.detach().double(), w[n], rtol=1e-5, atol=1e-7, msg=n)
    assert torch.equal(names["stages.0.conv1.weight"].detach(), _model("resnet18").stages[0].conv1.weight.detach())
    assert names["stages.0.conv1.weight"] not in opt.state


def test_lars_refuses_an_excluded_group_with_weight_decay_and_resumes_old_checkpoints():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))
    with pytest.raises(ValueError, match="'bias'.*weight_decay 0"):
        LARS([{"name": "bias", "params": [w], "lars_exclude": True}], lr=1.0, weight_decay=0.1)
    # a checkpoint of the hand-written LARS this replaced: its option names, one momentum buffer
    old = {"state": {0: {"momentum_buffer": torch.tensor([0.1, 0.2])}},
           "param_groups": [{"lr": 2.0, "momentum": 0.9, "weight_decay": 0.1, "trust_coefficient": 0.01, "eps": 1e-8,
                             "lars_exclude": False, "params": [0]}]}
    opt = LARS([w], lr=1.0)
    opt.load_state_dict(old)
    w.grad = torch.tensor([1.0, 0.0])
    opt.step()
    wn, g = 5.0, torch.tensor([1.0, 0.0])
    d = (g + 0.1 * torch.tensor([3.0, 4.0])) * (0.01 * wn / (1.0 + 0.1 * wn))
    torch.testing.assert_close(w.detach(), torch.tensor([3.0, 4.0]) - 2.0 * (0.9 * torch.tensor([0.1, 0.2]) + d))
    with pytest.raises(ValueError, match="adamw, sgd, lars"):
        build_optimizer("rmsprop", [w], lr=0.1)


# -------------------------------------------------------------------------------------------- regularisation

def test_drop_path_reaches_the_backbone_or_is_refused():
    from timm.layers import DropPath
    from torchvision.ops import StochasticDepth
    lite = _model(LITE0, drop_path=0.2)
    rates = [mod.drop_prob for mod in lite.modules() if isinstance(mod, DropPath)]
    assert rates and max(rates) == pytest.approx(0.2, abs=0.03)
    with torch.device("meta"):
        eff = build_model("efficientnet_b0", 3, weights="none", drop_path=0.3)
    assert max(mod.p for mod in eff.modules() if isinstance(mod, StochasticDepth)) > 0.25
    with pytest.raises(ValueError, match="stochastic depth"):
        build_model("resnet18", 3, weights="none", drop_path=0.1)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_grad_checkpointing_gives_the_same_gradients_and_bn_stats(backbone):
    plain = _model(backbone)
    ckpt = _model(backbone, grad_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    results = []
    for m in (plain, ckpt):
        m.train()
        logits, _ = m(_x())
        nn.functional.cross_entropy(logits, _y()).backward()
        results.append(({n: p.grad for n, p in m.named_parameters()}, m.state_dict()))
    (g1, s1), (g2, s2) = results
    for n in g1:
        torch.testing.assert_close(g2[n], g1[n], rtol=1e-4, atol=1e-6)
    for k in s1:  # recomputation must not update BatchNorm statistics a second time
        torch.testing.assert_close(s2[k], s1[k], rtol=1e-5, atol=1e-6)


# -------------------------------------------------------------------------------------------- weights

def _randomise_bn(m: DAModel) -> None:
    m.train()
    with torch.no_grad():
        m(_x(8))
    m.eval()


def test_project_checkpoint_round_trip_with_a_new_label_space(tmp_path):
    src = _model("resnet18", 30)
    _randomise_bn(src)
    path = tmp_path / "best_model.pt"
    torch.save({"model": src.state_dict(), "epoch": 3, "classes": [f"c{i}" for i in range(30)]}, path)
    dst = build_model("resnet18", 7, weights=str(path))
    sd_src, sd_dst = src.state_dict(), dst.state_dict()
    for k, v in sd_src.items():
        if not k.startswith("head.classifier."):
            assert torch.equal(sd_dst[k], v), k
    assert dst.head.classifier.weight.shape == (7, 256)
    assert dst.load_report.reinitialised == ["head.classifier.weight", "head.classifier.bias"]
    assert dst.weights_name == str(path)
    same = build_model("resnet18", 30, weights=str(path))  # same label space: the classifier loads too
    assert torch.equal(same.head.classifier.weight, src.head.classifier.weight)
    x = _x(2)
    with torch.no_grad():
        assert torch.allclose(same.eval()(x)[0], src(x)[0], atol=1e-6)
    with pytest.raises(WeightsError, match="bottleneck"):
        build_model("resnet18", 7, weights=str(path), bottleneck_dim=128)
    with pytest.raises(WeightsError):
        build_model(LITE0, 7, weights=str(path))


def test_checkpoint_carries_the_normalisation_of_its_weights(tmp_path):
    src = build_model(LITE0, 30, weights="tf_efficientnet_lite0")
    path = tmp_path / "stage1.pt"
    torch.save({"model": src.state_dict()}, path)
    dst = build_model(LITE0, 7, weights=str(path))
    assert dst.mean == (0.5, 0.5, 0.5) and dst.std == (0.5, 0.5, 0.5)
    assert torch.equal(dst.stages[0].conv_stem.weight, src.stages[0].conv_stem.weight)


def test_foreign_state_dict_loads_by_library_names_and_reports(tmp_path):
    # a torchvision-style state dict as DDP would save it: "module." prefixes, the 1000-class fc
    ref = _model("resnet18")
    _randomise_bn(ref)
    foreign = {f"module.{lib_key}": ref.state_dict()[ours].clone() for lib_key, ours in ref.library_keys.items()}
    foreign["module.fc.weight"] = torch.randn(1000, 512)
    foreign["module.fc.bias"] = torch.randn(1000)
    del foreign["module.layer4.1.bn2.running_var"]
    path = tmp_path / "foreign.pth"
    torch.save({"state_dict": foreign, "arch": "resnet18"}, path)
    m = build_model("resnet18", 3, weights=str(path))
    assert torch.equal(m.stages[3][0].conv1.weight, ref.stages[3][0].conv1.weight)
    assert sorted(m.load_report.unexpected) == ["module.fc.bias", "module.fc.weight"]
    assert m.load_report.missing == ["stages.4.1.bn2.running_var"]
    assert len(m.load_report.loaded) == len(ref.library_keys) - 1


def test_foreign_state_dict_with_a_wrong_shape_names_the_tensor(tmp_path):
    ref = _model("resnet18")
    foreign = {lib_key: ref.state_dict()[ours] for lib_key, ours in ref.library_keys.items()}
    foreign["layer3.0.conv1.weight"] = torch.zeros(256, 128, 5, 5)
    path = tmp_path / "bad.pth"
    torch.save(foreign, path)
    with pytest.raises(WeightsError, match=r"layer3\.0\.conv1\.weight.*\(256, 128, 5, 5\)"):
        build_model("resnet18", 3, weights=str(path))
    torch.save({"something.else": torch.zeros(3)}, path)
    with pytest.raises(WeightsError, match="none of its"):
        build_model("resnet18", 3, weights=str(path))


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo should never run",))


def test_weights_files_that_would_run_code_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": _Payload()}, path)
    with pytest.raises(WeightsError, match="weights_only"):
        build_model("resnet18", 3, weights=str(path))


def test_offline_lite0_weights_load_completely_and_exactly():
    m = build_model(LITE0, 30, weights="tf_efficientnet_lite0")
    report = m.load_report
    assert report.missing == [] and report.unexpected == [] and len(report.loaded) == 296
    assert m.mean == (0.5, 0.5, 0.5) and m.std == (0.5, 0.5, 0.5) and m.weights_name == "tf_efficientnet_lite0"
    src = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    assert torch.equal(m.stages[0].conv_stem.weight, src["_conv_stem.weight"])
    assert torch.equal(m.stages[8].bn2.running_var, src["_bn1.running_var"])
    assert torch.equal(m.stages[7][0].conv_pwl.weight, src["_blocks.15._project_conv.weight"])


def test_in_order_mapping_fails_loudly_naming_the_tensor():
    import timm
    dst = timm.create_model("tf_efficientnet_lite0").state_dict()
    src = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    bad = dict(src)
    bad["_blocks.3._depthwise_conv.weight"] = torch.zeros(1, 1, 3, 3)
    with pytest.raises(WeightsError, match=r"_blocks\.3\._depthwise_conv\.weight.*blocks\.2\.0\.conv_dw\.weight"):
        map_in_order(bad, dst)
    with pytest.raises(WeightsError, match="tensors"):
        map_in_order(dict(list(src.items())[:-1]), dst)


def test_offline_weights_only_fit_their_backbone():
    with pytest.raises(ValueError, match="timm:tf_efficientnet_lite0"):
        build_model("resnet18", 3, weights="tf_efficientnet_lite0")
    with pytest.raises(ValueError, match="timm:tf_efficientnet_lite0"):
        build_model("timm:tf_efficientnet_lite1", 3, weights="tf_efficientnet_lite0")


def test_offline_imagenet_request_says_why_and_names_the_offline_choice(monkeypatch, tmp_path):
    import timm.models._builder as timm_builder
    import torchvision.models._api as tv_api

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached copy can stand in for the download
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(timm_builder, "load_pretrained", no_network)
    for backbone in ("resnet18", LITE0):
        with pytest.raises(OfflineWeightsError) as info:
            build_model(backbone, 7, weights="imagenet")
        msg = str(info.value)
        assert "tf_efficientnet_lite0" in msg and "internet" in msg and "Name or service not known" in msg
        if backbone == LITE0:  # timm's weights could also have come from the Hugging Face cache: says where
            assert str(tmp_path / "hf" / "models--timm--tf_efficientnet_lite0.in1k") in msg


# -------------------------------------------------------------------------------------------- safetensors

def test_safetensors_model_state_dict_loads_exactly_with_the_checkpoint_checks(tmp_path):
    from safetensors.torch import save_file

    src = _model("resnet18", 7)
    _randomise_bn(src)
    path = tmp_path / "model.safetensors"
    save_file(src.state_dict(), str(path))
    dst = build_model("resnet18", 7, weights=str(path))
    sd_src, sd_dst = src.state_dict(), dst.state_dict()
    assert sd_dst.keys() == sd_src.keys()
    for k, v in sd_src.items():
        assert torch.equal(sd_dst[k], v), k
    assert sorted(dst.load_report.loaded) == sorted(sd_src) and dst.load_report.reinitialised == []
    other = build_model("resnet18", 3, weights=str(path))  # another label space: the classifier is new
    assert other.load_report.reinitialised == ["head.classifier.weight", "head.classifier.bias"]
    assert torch.equal(other.stages[4][1].bn2.running_var, src.stages[4][1].bn2.running_var)
    # an architecture mismatch fails as it does for a .pt checkpoint
    with pytest.raises(WeightsError, match="bottleneck"):
        build_model("resnet18", 7, weights=str(path), bottleneck_dim=128)


def test_safetensors_foreign_state_dict_reports_and_names_a_wrong_shape(tmp_path):
    from safetensors.torch import save_file

    ref = _model("resnet18")
    _randomise_bn(ref)
    foreign = {lib_key: ref.state_dict()[ours].clone() for lib_key, ours in ref.library_keys.items()}
    foreign["fc.weight"], foreign["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)
    del foreign["layer2.0.bn1.running_mean"]
    path = tmp_path / "foreign.safetensors"
    save_file(foreign, str(path))
    m = build_model("resnet18", 3, weights=str(path))
    assert torch.equal(m.stages[2][1].conv2.weight, ref.stages[2][1].conv2.weight)
    assert sorted(m.load_report.unexpected) == ["fc.bias", "fc.weight"]
    assert m.load_report.missing == ["stages.2.0.bn1.running_mean"]
    assert len(m.load_report.loaded) == len(ref.library_keys) - 1
    foreign["layer3.0.conv1.weight"] = torch.zeros(256, 128, 5, 5)
    save_file(foreign, str(path))
    with pytest.raises(WeightsError, match=r"foreign\.safetensors: tensor 'layer3\.0\.conv1\.weight'.*\(256, 128, 5, 5\)"):
        build_model("resnet18", 3, weights=str(path))
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="as a safetensors file"):
        build_model("resnet18", 3, weights=str(path))


def _fake_hf_cache(cache: Path, repo: str, tensors: dict, filename: str = "model.safetensors") -> Path:
    """A cache laid out as huggingface_hub writes it: blobs/<sha>, snapshots/<rev>/<file> -> blob, refs/main."""
    from safetensors.torch import save_file

    folder = cache / ("models--" + repo.replace("/", "--"))
    rev = "0123456789abcdef0123456789abcdef01234567"
    (folder / "blobs").mkdir(parents=True)
    (folder / "snapshots" / rev).mkdir(parents=True)
    (folder / "refs").mkdir()
    blob = folder / "blobs" / "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    save_file(tensors, str(blob))
    (folder / "snapshots" / rev / filename).symlink_to(Path("..", "..", "blobs", blob.name))
    (folder / "refs" / "main").write_text(rev)
    return folder / "snapshots" / rev / filename


@pytest.mark.parametrize("variable", ["HF_HUB_CACHE", "HF_HOME"])
def test_timm_imagenet_weights_come_from_the_hf_cache_offline(monkeypatch, tmp_path, variable):
    import timm
    import timm.models._builder as timm_builder

    def no_network(*args, **kwargs):
        raise AssertionError("a download was attempted")

    for name in ("load_state_dict_from_hf", "download_cached_file", "load_state_dict_from_url"):
        monkeypatch.setattr(timm_builder, name, no_network)
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(variable, str(tmp_path))
    cache = tmp_path if variable == "HF_HUB_CACHE" else tmp_path / "hub"
    torch.manual_seed(7)
    src = timm.create_model("resnet10t", pretrained=False)  # stands in for the ImageNet weights on the hub
    _randomise_bn_of(src)
    tensors = {k: v.clone().contiguous() for k, v in src.state_dict().items()}
    file = _fake_hf_cache(cache, "timm/resnet10t.c3_in1k", tensors)
    m = build_model("timm:resnet10t", 5, weights="imagenet")
    sd = m.state_dict()
    assert len(m.library_keys) == len(tensors) - 2  # all but the 1000-class fc, which is dropped
    for lib_key, ours in m.library_keys.items():
        assert torch.equal(sd[ours], tensors[lib_key]), lib_key
    assert str(file) in m.load_report.source and len(m.load_report.loaded) == len(m.library_keys)
    assert m.mean == (0.485, 0.456, 0.406) and m.weights_name == "imagenet"


def _randomise_bn_of(net: nn.Module) -> None:
    gen = torch.Generator().manual_seed(11)
    for mod in net.modules():
        if isinstance(mod, _BatchNorm):
            mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=gen))
            mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=gen) + 0.5)


def test_timm_imagenet_weights_offline_and_not_cached_say_where_they_looked(monkeypatch, tmp_path):
    import timm.models._builder as timm_builder

    monkeypatch.setattr(timm_builder, "load_pretrained", lambda *a, **k: pytest.fail("a download was attempted"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineWeightsError) as info:
        build_model("timm:resnet10t", 5, weights="imagenet")
    msg = str(info.value)
    assert str(tmp_path / "models--timm--resnet10t.c3_in1k") in msg and "HF_HUB_OFFLINE" in msg
    assert "model.safetensors or pytorch_model.bin" in msg and "--weights path/to/model.safetensors" in msg
    assert "--weights tf_efficientnet_lite0" in msg
    # a file of another architecture in the cache: the error names the file, not the network
    _fake_hf_cache(tmp_path, "timm/resnet10t.c3_in1k", {"conv1.weight": torch.zeros(3, 3)})
    monkeypatch.undo()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineWeightsError, match=r"(?s)from the Hugging Face cache file .*model\.safetensors.*delete"):
        build_model("timm:resnet10t", 5, weights="imagenet")


def test_invalid_backbone_and_weights_list_the_choices(tmp_path):
    with pytest.raises(ValueError, match="resnet18.*timm:"):
        build_model("resnet9000", 3, weights="none")
    with pytest.raises(ValueError, match="timm"):
        build_model("timm:not_a_model", 3, weights="none")
    with pytest.raises(ValueError, match="imagenet, none, tf_efficientnet_lite0"):
        build_model("resnet18", 3, weights="imagenette")
    with pytest.raises(ValueError, match="imagenet, none, tf_efficientnet_lite0"):
        build_model("resnet18", 3, weights=str(tmp_path / "missing.pt"))


# -------------------------------------------------------------------------------------------- real data

def _data_root() -> Path:
    return Path(os.environ.get("DA_DATA_ROOT", REPO.parent / "shared" / "data"))


@pytest.mark.slow
def test_offline_lite0_features_are_real_imagenet_features():
    """Linear probe on AID: 20 train / 10 test images per class (the first 30 by file name), 224 px."""
    import numpy as np
    from PIL import Image
    from sklearn.linear_model import LogisticRegression

    from da.data import eval_transform

    root = _data_root() / "AID"
    if not root.is_dir():
        pytest.skip(f"AID not found under {root.parent}; set DA_DATA_ROOT")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert len(classes) == 30
    files = [sorted((root / c).glob("*.jpg"))[:30] for c in classes]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    accuracy = {}
    for weights in ("tf_efficientnet_lite0", "none"):
        torch.manual_seed(0)
        m = build_model(LITE0, len(classes), weights=weights).to(device).eval()
        tf = eval_transform(224, m.mean, m.std)
        with torch.no_grad():
            feats = np.stack([m.features(torch.stack([tf(Image.open(f).convert("RGB")) for f in fs]).to(device))
                              .cpu().numpy() for fs in files])  # (classes, 30, 1280)
        labels = np.repeat(np.arange(len(classes)), 30).reshape(len(classes), 30)
        probe = LogisticRegression(max_iter=3000).fit(feats[:, :20].reshape(-1, m.feature_dim), labels[:, :20].ravel())
        accuracy[weights] = probe.score(feats[:, 20:].reshape(-1, m.feature_dim), labels[:, 20:].ravel())
    print(f"AID linear probe, 20 train / 10 test per class: Lite0 ImageNet {accuracy['tf_efficientnet_lite0']:.4f}, "
          f"random init {accuracy['none']:.4f}")
    assert accuracy["tf_efficientnet_lite0"] >= 0.75
    assert accuracy["none"] < 0.40
