"""NRC (da/methods/nrc.py): its loss against a numpy computation with loops, its reciprocal and expanded
neighbourhoods against a brute-force search of the memory, its declared settings (flag, check, hash), the
prior-aware diversity term, and a run that is killed and resumed bit-identically."""

import json

import numpy as np
import pytest
import torch

from da.cli import build_parser
from da.config import ConfigError, RunConfig
from da.methods import StepOutputs, TargetPass, build_method
from da.methods.nrc import NeighbourhoodReciprocityLoss
from test_engine import _metrics, killed_then_resumed, tiny_cfg
from da.train import train_stage


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _numpy_loss(logits, s_k, a, s_m, w, s_self, q):
    p = _softmax(logits)
    b = len(p)
    l_n = -sum(a[i, k] * s_k[i, k] @ p[i] for i in range(b) for k in range(s_k.shape[1])) / b
    l_e = -sum(w[i, k, m] * s_m[i, k, m] @ p[i] for i in range(b) for k in range(s_m.shape[1])
               for m in range(s_m.shape[2])) / b
    l_self = -sum(s_self[i] @ p[i] for i in range(b)) / b
    pbar = p.mean(0)
    return l_n + l_e + l_self + float(np.sum(pbar * np.log(pbar / q)))


@pytest.mark.parametrize("uniform", [True, False])
def test_loss_is_the_papers_four_terms_in_numpy(uniform):
    rng = np.random.default_rng(1)
    b, k, m, c = 5, 3, 2, 4
    logits = rng.normal(size=(b, c))
    s_k, s_m, s_self = _softmax(rng.normal(size=(b, k, c))), _softmax(rng.normal(size=(b, k, m, c))), _softmax(rng.normal(size=(b, c)))
    a = rng.choice([1.0, 0.1], size=(b, k))
    w = rng.choice([0.1, 0.0], size=(b, k, m))
    q = np.full(c, 1 / c) if uniform else np.array([0.4, 0.3, 0.2, 0.1])
    t = lambda x: torch.tensor(x)  # noqa: E731
    got = NeighbourhoodReciprocityLoss()(t(logits), t(s_k), t(a), t(s_m), t(w), t(s_self), None if uniform else t(q))
    assert got.item() == pytest.approx(_numpy_loss(logits, s_k, a, s_m, w, s_self, q), rel=1e-5)


def test_reciprocal_and_expanded_neighbours_from_the_memory():
    rng = np.random.default_rng(0)
    n, d, c, k, m = 12, 3, 4, 2, 2
    features = rng.normal(size=(n, d))
    logits = rng.normal(size=(n, c)) * 2
    method = build_method(RunConfig(method="nrc", nrc_k=k, nrc_m=m), c, d)
    method.on_epoch_start(0, TargetPass(torch.tensor(logits, dtype=torch.float32), torch.tensor(features, dtype=torch.float32)))
    batch = np.array([0, 5, 7])
    out = StepOutputs(logits_s=torch.zeros(3, c), z_s=torch.zeros(3, d), y_s=torch.zeros(3, dtype=torch.long),
                      logits_t=torch.tensor(logits[batch], dtype=torch.float32, requires_grad=True),
                      z_t=torch.tensor(features[batch], dtype=torch.float32), progress=0.5, idx_t=torch.tensor(batch))
    loss = method(out)["nrc"]
    # brute force: cosine neighbours of the memory (the batch's rows rewritten with the same values)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    near = lambda i, kk: list(np.argsort(-sim[i], kind="stable")[:kk])  # noqa: E731
    probs = _softmax(logits)
    s_k = np.stack([probs[near(i, k)] for i in batch])
    a = np.array([[1.0 if i in near(j, k) else 0.1 for j in near(i, k)] for i in batch])
    s_m = np.stack([np.stack([probs[near(j, m)] for j in near(i, k)]) for i in batch])
    w = np.array([[[0.0 if x == i else 0.1 for x in near(j, m)] for j in near(i, k)] for i in batch])
    expected = _numpy_loss(logits[batch], s_k, a, s_m, w, probs[batch], np.full(c, 1 / c))
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    assert (a == 1.0).any() and (a == 0.1).any() and (w == 0.0).any()  # both kinds of neighbour, self left out
    loss.backward()
    assert out.logits_t.grad.abs().sum() > 0


def test_settings_are_declared_once_and_reach_flags_checks_and_hash():
    help_text = " ".join(build_parser("x").format_help().split())
    assert "--nrc-k" in help_text and "--nrc-m" in help_text and "--nrc-r" in help_text
    with pytest.raises(ConfigError, match=r"--nrc-r must be >= 0 and <= 1 \(nrc.s setting\), got 2.0"):
        RunConfig(method="nrc", nrc_r=2.0).validate()
    assert RunConfig(method="nrc").hashed_dict()["nrc_k"] == 3
    assert "nrc_k" not in RunConfig(method="mcc").hashed_dict()
    assert RunConfig(method="nrc+mcc", nrc_k=5).config_hash() != RunConfig(method="nrc+mcc").config_hash()


def test_nrc_run_resumes_bit_identically_after_a_kill(tiny_root, tmp_path):
    kw = dict(method="nrc+mcc", stages=1, epochs=2, nrc_k=2, nrc_m=1)
    ref = json.loads(open(train_stage(tiny_cfg(tiny_root, tmp_path / "ref", **kw), stage=2)).read())
    assert all(np.isfinite(e["loss"]["nrc"]) and e["loss"]["nrc"] != 0 for e in ref["epochs"])
    rec = killed_then_resumed(tiny_cfg(tiny_root, tmp_path / "cut", **kw))
    assert rec["resumed"] == 1 and _metrics(rec) == _metrics(ref)
    assert [e["loss"] for e in rec["epochs"]] == [e["loss"] for e in ref["epochs"]]
