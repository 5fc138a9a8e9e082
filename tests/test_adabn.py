"""AdaBN (da/train/adabn.py): the re-estimated statistics against numpy, only the layers training updates,
and a run with --adabn: the kept model carries the target's statistics, and a killed run resumes to the
same numbers."""

import contextlib
import json

import numpy as np
import pytest
import torch
from torch import nn

from da.config import RunConfig
from da.rundir import BEST_FILE
from da.train import checkpoint, run_dir_for, train_stage
from da.train.adabn import adapt_batchnorm
from da.train.seeding import seed_everything
from da.train.setup import build_run, load_splits
from test_engine import _metrics, killed_then_resumed, tiny_cfg


class Batches:
    def __init__(self, xs):
        self.xs = xs

    def epoch(self, epoch):
        return ((x, torch.zeros(len(x))) for x in self.xs)


class TwoStage(nn.Module):
    """A frozen stage (its BatchNorm in eval mode under train(), like DAModel's frozen stages) and a
    trainable one with dropout before its BatchNorm; forward_from(x, 1) skips the first."""

    def __init__(self):
        super().__init__()
        self.frozen = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
        self.trained = nn.Sequential(nn.Dropout(0.5), nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.BatchNorm1d(4))

    def train(self, mode=True):
        super().train(mode)
        self.frozen.eval()
        return self

    def forward_from(self, x, start):
        return self.trained(self.frozen(x) if start == 0 else x)


def test_statistics_are_the_targets_layer_by_layer_and_only_where_training_updates_them():
    torch.manual_seed(0)
    model = TwoStage()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.fill_(7.0)
    model.train()
    xs = [torch.randn(16, 3) * 2 + 1 for _ in range(4)]  # equal batches: the mean of batch means is the mean
    reached = adapt_batchnorm(model, Batches(xs), 1, torch.device("cpu"), contextlib.nullcontext)
    assert reached == 2 and model.training and not model.frozen[1].training and model.trained[0].training
    assert torch.all(model.frozen[1].running_mean == 7.0)  # not updated by training: left alone

    lin, bn1, bn2 = model.trained[1], model.trained[2], model.trained[4]
    x = np.concatenate([b.numpy() for b in xs])
    h = x @ lin.weight.detach().numpy().T + lin.bias.detach().numpy()  # dropout off
    np.testing.assert_allclose(bn1.running_mean.numpy(), h.mean(0), rtol=1e-5, atol=1e-6)
    per_batch_var = np.mean([hb.var(0, ddof=1) for hb in np.split(h, 4)], axis=0)
    np.testing.assert_allclose(bn1.running_var.numpy(), per_batch_var, rtol=1e-5)
    # the second layer sees the first normalised with each batch's own statistics (biased variance)
    g = np.concatenate([np.maximum(0, (hb - hb.mean(0)) / np.sqrt(hb.var(0) + bn1.eps) * bn1.weight.detach().numpy()
                                   + bn1.bias.detach().numpy()) for hb in np.split(h, 4)])
    np.testing.assert_allclose(bn2.running_mean.numpy(), g.mean(0), rtol=1e-5, atol=1e-6)
    assert bn1.momentum == 0.1 and int(bn1.num_batches_tracked) == 0  # the model's own settings back


def test_a_layer_the_pass_does_not_reach_keeps_its_statistics():
    model = TwoStage()
    model.frozen.train = lambda mode=True: model.frozen  # now training would update the first stage too
    model.frozen[1].running_mean.fill_(3.0)
    model.train()
    model.frozen[1].training = True
    adapt_batchnorm(model, Batches([torch.randn(8, 3)]), 1, torch.device("cpu"), contextlib.nullcontext)
    assert torch.all(model.frozen[1].running_mean == 3.0)


def test_adabn_is_a_method_that_composes():
    from da.methods import build_method

    assert RunConfig(method="mcc+adabn").config_hash() != RunConfig(method="mcc").config_hash()
    alone, under = build_method(RunConfig(method="adabn"), 3, 8), build_method(RunConfig(method="mcc+adabn"), 3, 8)
    assert alone.adapts_batchnorm and not alone.needs_target  # source-only training, target statistics
    assert under.adapts_batchnorm and under.needs_target
    assert not build_method(RunConfig(method="mcc"), 3, 8).adapts_batchnorm


@pytest.mark.parametrize("method", ["adabn", "mcc+adabn"])
def test_a_run_keeps_the_target_statistics_and_resumes_bit_identically(tiny_root, tmp_path, method):
    kw = dict(method=method, stages=1, dropout=0.2)
    ref_cfg = tiny_cfg(tiny_root, tmp_path / "ref", **kw)
    ref = json.loads(train_stage(ref_cfg, stage=2).read_text())
    without = "source_only" if method == "adabn" else method.removesuffix("+adabn")
    plain = json.loads(train_stage(tiny_cfg(tiny_root, tmp_path / "plain", **{**kw, "method": without}), stage=2).read_text())
    assert _metrics(ref) != _metrics(plain)

    # the kept model's statistics are the target's: re-estimating them changes nothing
    seed_everything(ref_cfg.seed)  # weights "none": the prefix (whose outputs are cached) is the seeded init
    run = build_run(ref_cfg, 2, load_splits(ref_cfg, 2), None)
    run.model.load_state_dict(checkpoint.load(run_dir_for(ref_cfg, 2) / BEST_FILE)["model"])
    before = {k: v.clone() for k, v in run.model.state_dict().items() if "running" in k}
    assert adapt_batchnorm(run.model, run.data.target_pass, run.data.start, run.device, run.autocast) > 0
    after = run.model.state_dict()
    moved = [k for k in before if not torch.allclose(before[k], after[k], rtol=1e-5, atol=1e-6)]
    assert not moved, " ".join(moved)

    rec = killed_then_resumed(tiny_cfg(tiny_root, tmp_path / "cut", **kw))
    assert rec["resumed"] == 1 and _metrics(rec) == _metrics(ref)
    assert [e.get("drift") for e in rec["epochs"]] == [e.get("drift") for e in ref["epochs"]]
