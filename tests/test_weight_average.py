"""The weight average (da/train/weight_average.py, --weight-ema): the closed form of an exponential moving average
in numpy, the model a run evaluates and saves, its config field, and a resume after a kill."""

import numpy as np
import pytest
import torch

from da.config import ConfigError, RunConfig, stage1_config
from da.rundir import BEST_FILE, CHECKPOINT_FILE, run_dir_for
from da.train import checkpoint, train_stage
from da.train.weight_average import WeightAverage
from test_engine import _metrics, killed_then_resumed, load, tiny_cfg


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.frozen = torch.nn.Linear(3, 4).requires_grad_(False)
        self.trained = torch.nn.Linear(4, 2)
        self.bn = torch.nn.BatchNorm1d(2)


def test_average_is_the_closed_form_in_numpy():
    """theta_bar_K = d^K theta_0 + sum_k (1 - d) d^(K - k) theta_k for weights and BatchNorm statistics; the
    integer step counter is copied; frozen weights stay bit-equal."""
    torch.manual_seed(0)
    net, d = _Net(), 0.8
    avg = WeightAverage(net, d)
    history = [{k: v.detach().double().numpy().copy() for k, v in net.state_dict().items()}]
    for _ in range(5):
        with torch.no_grad():
            net.trained.weight.add_(torch.randn(2, 4))
            net.bn.running_mean.add_(torch.randn(2))
            net.bn.num_batches_tracked.add_(1)
        avg.update(net)
        history.append({k: v.detach().double().numpy().copy() for k, v in net.state_dict().items()})
    k_steps = len(history) - 1
    for key in ("trained.weight", "trained.bias", "bn.running_mean", "bn.running_var"):
        expected = d ** k_steps * history[0][key] + sum((1 - d) * d ** (k_steps - k) * history[k][key]
                                                        for k in range(1, k_steps + 1))
        np.testing.assert_allclose(avg.module.state_dict()[key].double().numpy(), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(avg.module.trained.weight.detach().numpy(), net.trained.weight.detach().numpy())
    assert int(avg.module.bn.num_batches_tracked) == 5
    assert torch.equal(avg.module.frozen.weight, net.frozen.weight)
    assert not avg.module.training and not any(p.requires_grad for p in avg.module.parameters())


def test_saved_state_leaves_out_what_it_is_told_and_loads_back_only_onto_those_keys():
    net = _Net()
    avg = WeightAverage(net, 0.9)
    with torch.no_grad():
        net.trained.weight.add_(1.0)
    avg.update(net)
    state = avg.state_dict({"frozen.weight", "frozen.bias"})
    assert "frozen.weight" not in state and "trained.weight" in state
    fresh = WeightAverage(_Net(), 0.9)
    fresh.load_state_dict(state, {"frozen.weight", "frozen.bias"})
    assert torch.equal(fresh.module.trained.weight, avg.module.trained.weight)
    with pytest.raises(RuntimeError, match="do not fit the model"):
        fresh.load_state_dict(state, {"frozen.weight"})


def test_config_field_checked_hashed_only_off_its_default_and_not_shaping_stage_1():
    base = RunConfig(method="shot+mcc")
    ema = base.replace(weight_ema=0.99)
    assert "weight_ema" not in base.hashed_dict() and ema.hashed_dict()["weight_ema"] == 0.99
    assert stage1_config(ema).config_hash() == stage1_config(base).config_hash()  # one stage-1 model for both
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match="--weight-ema must lie in"):
            base.replace(weight_ema=bad).validate()


@pytest.mark.parametrize("strategy,cache_views", [("partial:3", 2), pytest.param("gradual", 0, marks=pytest.mark.slow)])
def test_run_evaluates_and_keeps_the_average_and_resumes_bit_identically(tiny_root, tmp_path, strategy, cache_views):
    kw = dict(method="shot+mcc", stages=1, epochs=2, weight_ema=0.5, strategy=strategy, cache_views=cache_views,
              selection="last")
    ref_cfg = tiny_cfg(tiny_root, tmp_path / "ref", **kw)
    ref = load(train_stage(ref_cfg, stage=2))
    plain = load(train_stage(tiny_cfg(tiny_root, tmp_path / "plain", **{**kw, "weight_ema": 0.0}), stage=2))
    # the same training (the loss of epoch 1 reads only the trained model), another model evaluated
    assert ref["epochs"][0]["loss"] == plain["epochs"][0]["loss"]
    # the validators' scores are continuous in the evaluated logits (accuracy on a tiny split may tie)
    assert [e["scores"] for e in ref["epochs"]] != [e["scores"] for e in plain["epochs"]]
    saved = checkpoint.load(run_dir_for(ref_cfg, 2) / BEST_FILE)["model"]
    last = checkpoint.load(run_dir_for(ref_cfg, 2) / CHECKPOINT_FILE)
    trained, averaged = last["model"], last["weight_average"]
    assert averaged.keys() == trained.keys()  # the frozen weights left out of both
    key = "head.classifier.weight"
    assert ref["selected_epoch"] == 2  # the selected model is the average, not the trained weights
    assert torch.equal(saved[key], averaged[key]) and not torch.equal(saved[key], trained[key])

    cfg = tiny_cfg(tiny_root, tmp_path / "cut", **kw)
    rec = killed_then_resumed(cfg)
    assert rec["resumed"] == 1 and _metrics(rec) == _metrics(ref)
    a = checkpoint.load(run_dir_for(cfg, 2) / CHECKPOINT_FILE)["weight_average"]
    assert a.keys() == averaged.keys() and all(torch.equal(a[k], averaged[k]) for k in a)
