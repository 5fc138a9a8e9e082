"""AaD (da/methods/aad.py): its loss against numpy, its neighbour memory, its two declared settings (flag, check,
hash) and a run end to end; the method is that one file."""

import json

import numpy as np
import pytest
import torch

from da.cli import build_parser
from da.config import ConfigError, RunConfig
from da.methods import StepOutputs, TargetPass, build_method
from da.methods.aad import AttractDisperseLoss
from da.train import run_experiment
from test_engine import tiny_cfg


def _softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_loss_is_the_papers_attract_minus_alpha_disperse_in_numpy():
    rng = np.random.default_rng(0)
    logits, neighbours = rng.normal(size=(6, 4)), _softmax(rng.normal(size=(6 * 3, 4))).reshape(6, 3, 4)
    p = _softmax(logits)
    attract = np.mean([sum(p[i] @ neighbours[i, j] for j in range(3)) for i in range(6)])
    disperse = np.mean([sum(p[i] @ p[m] for m in range(6) if m != i) for i in range(6)])
    got = AttractDisperseLoss()(torch.tensor(logits), torch.tensor(neighbours), 0.7).item()
    assert got == pytest.approx(-attract + 0.7 * disperse, rel=1e-6)


def test_neighbours_come_from_the_memory_by_cosine_and_never_the_example_itself():
    features = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.0]])
    logits = torch.eye(5, 3)[[0, 0, 1, 1, 2]] * 4
    method = build_method(RunConfig(method="aad", aad_k=1, aad_beta=0.0), 3, 2)
    method.on_epoch_start(0, TargetPass(logits, features))
    batch = torch.tensor([0, 2])
    out = StepOutputs(logits_s=torch.zeros(2, 3), z_s=torch.zeros(2, 2), y_s=torch.zeros(2, dtype=torch.long),
                      logits_t=logits[batch].clone().requires_grad_(), z_t=features[batch], progress=0.5, idx_t=batch)
    loss = method(out)["aad"]
    p = torch.softmax(logits[batch], 1)
    neighbour_probs = torch.softmax(logits[[1, 3]], 1)[:, None]  # 0's nearest other is 1, 2's is 3
    expected = -(p * neighbour_probs[:, 0]).sum(1).mean() + 1.0 * (2 * (p[0] @ p[1])) / 2  # alpha = 1 at beta 0
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert out.logits_t.grad.abs().sum() > 0
    assert method.alpha(0.5) == 1.0 and build_method(RunConfig(method="aad"), 3, 2).alpha(1.0) == pytest.approx(11 ** -5.0)


def test_settings_are_declared_once_and_reach_flags_checks_and_hash():
    help_text = " ".join(build_parser("x").format_help().split())
    assert "--aad-k" in help_text and "aad: nearest target neighbours" in help_text and ">= 1" in help_text
    with pytest.raises(ConfigError, match=r"--aad-k must be >= 1 \(aad's setting\), got 0") as info:
        RunConfig(method="aad", aad_k=0).validate()
    assert info.value.field == "aad_k"
    # hashed in runs that use aad (default included), left out of every other run's hash
    assert RunConfig(method="aad").hashed_dict()["aad_k"] == 5
    assert "aad_k" not in RunConfig(method="mcc").hashed_dict()
    assert RunConfig(method="mcc", aad_k=9).config_hash() == RunConfig(method="mcc").config_hash()
    assert RunConfig(method="aad+mcc", aad_k=9).config_hash() != RunConfig(method="aad+mcc").config_hash()


@pytest.mark.slow  # an end-to-end run: the default suite stays under 10 minutes on 2 slow cores
def test_aad_runs_end_to_end_and_writes_its_settings_into_the_record(tiny_root, tmp_path):
    record = json.loads(open(run_experiment(tiny_cfg(tiny_root, tmp_path, method="aad", stages=1, epochs=2,
                                                     aad_k=2))).read())
    assert record["config"]["aad_k"] == 2 and record["config"]["aad_beta"] == 5.0
    assert all(np.isfinite(e["loss"]["aad"]) and e["loss"]["aad"] != 0 for e in record["epochs"])
