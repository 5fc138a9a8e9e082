"""Label-free validators against independent numpy computations, the selection rules, and the proof that
no validator reads a target label."""

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from da.config import RunConfig
from da.methods import TargetPass
from da.rundir import BEST_FILE, EPOCHS_DIR, run_dir_for
from da.selection import REGISTRY, EpochOutputs, SourcePredictions, best_epoch, score_epoch, scored_validator_names, validator_names, validator_versions
from da.selection.dev import dev_risk
from da.train import checkpoint, train_stage
from test_engine import load, tiny_cfg


def _softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _entropy(p):
    return -np.sum(p * np.log(np.clip(p, 1e-300, None)), axis=-1)


def _outputs(seed=0, ns=40, nt=60, c=4, d=5):
    rng = np.random.default_rng(seed)
    src = SourcePredictions(torch.tensor(rng.normal(size=(ns, c)) * 2), torch.tensor(rng.normal(size=(ns, d))),
                            torch.tensor(rng.integers(0, c, ns)))
    tgt = TargetPass(torch.tensor(rng.normal(size=(nt, c)) * 2), torch.tensor(rng.normal(size=(nt, d)) + 0.5))
    return EpochOutputs(src, tgt)


def score(name, out):
    return REGISTRY[name]().score(out)


def test_names_and_default():
    assert validator_names()[0] == "source_acc" and validator_names()[-3:] == ["last", "rank", "guarded"]
    assert {"entropy", "im", "bnm", "snd", "class_ami", "dev"} <= set(validator_names())
    with pytest.raises(ValueError, match="--selection 'oracle' is not valid; choose from source_acc"):
        RunConfig(selection="oracle").validate()
    with pytest.raises(ValueError, match="--rank-validators 'rank' is not valid"):
        RunConfig(rank_validators=("rank",)).validate()


def test_source_accuracy_entropy_im_bnm_against_numpy():
    out = _outputs()
    ls, y = out.source_val.logits.numpy(), out.source_val.labels.numpy()
    p = _softmax(out.target_train.logits.numpy())
    assert score("source_acc", out) == pytest.approx(np.mean(ls.argmax(1) == y))
    assert score("entropy", out) == pytest.approx(-_entropy(p).mean())
    assert score("im", out) == pytest.approx(_entropy(p.mean(0)) - _entropy(p).mean())
    assert score("bnm", out) == pytest.approx(np.linalg.svd(p, compute_uv=False).sum() / len(p))


def test_snd_against_numpy():
    out = _outputs(1)
    p = _softmax(out.target_train.logits.numpy())
    q = p / np.linalg.norm(p, axis=1, keepdims=True)
    sim = q @ q.T / 0.05
    n = len(q)
    ent = []
    for i in range(n):
        row = np.delete(sim[i], i)
        s = np.exp(row - row.max())
        s /= s.sum()
        ent.append(_entropy(s))
    assert score("snd", out) == pytest.approx(np.mean(ent))
    # its temperature is a declared setting: read from the run's config, hashed only off its default
    cooler = RunConfig(snd_temperature=0.5)
    assert REGISTRY["snd"](cooler).score(out) != pytest.approx(np.mean(ent))
    assert score_epoch(out, cooler)[0]["snd"] == REGISTRY["snd"](cooler).score(out)
    assert "snd_temperature" not in RunConfig().hashed_dict() and cooler.hashed_dict()["snd_temperature"] == 0.5
    with pytest.raises(ValueError, match=r"--snd-temperature must be > 0 \(snd's setting\)"):
        RunConfig(snd_temperature=0.0).validate()


def test_class_ami_sees_cluster_structure():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 10
    labels = np.repeat(np.arange(3), 30)
    feats = centres[labels] + rng.normal(size=(90, 8))
    follows = TargetPass(torch.tensor(np.eye(3)[labels] * 5), torch.tensor(feats))
    ignores = TargetPass(torch.tensor(np.eye(3)[rng.permutation(labels)] * 5), torch.tensor(feats))
    src = _outputs().source_val
    assert score("class_ami", EpochOutputs(src, follows)) == pytest.approx(1.0)
    assert abs(score("class_ami", EpochOutputs(src, ignores))) < 0.1


def test_dev_risk_against_the_closed_form():
    rng = np.random.default_rng(3)
    losses, w = rng.uniform(0, 3, 50), rng.uniform(0.2, 3, 50)
    lw = losses * w
    eta = -np.cov(lw, w, ddof=1)[0, 1] / np.var(w, ddof=1)
    assert dev_risk(losses, w) == pytest.approx(lw.mean() + eta * w.mean() - eta)
    assert dev_risk(losses, np.ones(50)) == pytest.approx(losses.mean())  # no shift: the plain source risk
    # a domain classifier that cannot tell the domains apart gives weights near 1: DEV near the source risk
    out = _outputs(4, ns=200, nt=200)
    same = EpochOutputs(out.source_val, TargetPass(out.target_train.logits, out.source_val.features[torch.randperm(200)]))
    ce = torch.nn.functional.cross_entropy(out.source_val.logits, out.source_val.labels).item()
    assert -score("dev", same) == pytest.approx(ce, rel=0.15)


def _class_structured(order: str, seed: int = 0, c: int = 6, per_class: int = 40, d: int = 8) -> EpochOutputs:
    """Source validation with class-clustered features (rows sorted by class, as splits arrive, or shuffled)
    and a target that holds every class, shifted."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=3.0, size=(c, d))
    labels = np.repeat(np.arange(c), per_class)
    zs = means[labels] + rng.normal(size=(len(labels), d))
    logits = 2.0 * np.eye(c)[labels] + rng.normal(size=(len(labels), c))
    zt = means[rng.integers(0, c, 300)] + rng.normal(size=(300, d)) + 0.7
    rows = np.arange(len(labels)) if order == "sorted" else np.random.default_rng(seed + 1).permutation(len(labels))
    src = SourcePredictions(torch.tensor(logits[rows]), torch.tensor(zs[rows]), torch.tensor(labels[rows]))
    return EpochOutputs(src, TargetPass(torch.tensor(rng.normal(size=(300, c))), torch.tensor(zt)))


def test_dev_does_not_depend_on_the_order_of_the_rows():
    # version 1 cross-fitted on the rows in their order: with class-sorted rows each fold's domain classifier
    # had seen only half of the source classes, and the score moved with the order (issue 30)
    for seed in range(3):
        sorted_, shuffled = score("dev", _class_structured("sorted", seed)), score("dev", _class_structured("shuffled", seed))
        assert sorted_ == pytest.approx(shuffled, rel=0.1, abs=0.05)
    assert REGISTRY["dev"].version == 2


def _dev_version_1(out: EpochOutputs) -> float:
    """DEV as version 1 scored it: the two cross-fitting folds in the rows' order (results/README.md quotes it)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    zs, zt = out.source_val.features.double().numpy(), out.target_train.features.double().numpy()
    domain = np.r_[np.zeros(len(zs)), np.ones(len(zt))]
    d = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000)),
                          np.concatenate([zs, zt]), domain, cv=2, method="predict_proba")[: len(zs), 1]
    d = np.clip(d, 1e-6, 1 - 1e-6)
    losses = torch.nn.functional.cross_entropy(out.source_val.logits.double(), out.source_val.labels, reduction="none")
    return -dev_risk(losses.numpy(), (len(zs) / len(zt)) * d / (1 - d))


def test_dev_version_1_followed_the_row_order_as_the_results_say():
    sorted_, shuffled = _dev_version_1(_class_structured("sorted")), _dev_version_1(_class_structured("shuffled"))
    readme = (Path(__file__).resolve().parents[1] / "results" / "README.md").read_text()
    assert f"moved from {shuffled:.2f} to {sorted_:.1f} with the order alone" in readme


def test_rank_average_and_best_epoch():
    history = [{"a": 0.1, "b": 5.0}, {"a": 0.3, "b": 1.0}, {"a": 0.2, "b": 6.0}]
    ranks = (rankdata([0.1, 0.3, 0.2]) + rankdata([5.0, 1.0, 6.0])) / 2  # [1.5, 2, 2.5]
    assert best_epoch(history, "rank", ("a", "b")) == int(np.argmax(ranks)) + 1 == 3
    assert best_epoch(history, "a") == 2 and best_epoch(history, "b") == 3
    # relative: every new epoch re-ranks all the earlier ones
    assert best_epoch(history + [{"a": 0.4, "b": 0.5}], "rank", ("a", "b")) == 3
    assert best_epoch([{"a": 1.0}, {"a": 1.0}], "a") == 1  # the earliest among equals
    assert best_epoch([{"a": float("nan")}, {"a": 0.0}], "a") == 2
    assert best_epoch([{"a": None}, {"a": 0.0}], "a") == 2  # a NaN as records write it (null)
    with pytest.raises(KeyError, match="no score for epoch"):
        best_epoch([{"a": 1.0}], "b")


def test_no_validator_reads_a_target_label(tiny_root, tmp_path, monkeypatch):
    """Shuffling the labels of the target training split changes no score of any epoch."""
    import da.train.engine as engine

    cfg = tiny_cfg(tiny_root, tmp_path / "a", method="coral", stages=1, epochs=2)
    ref = load(train_stage(cfg, stage=2))
    real = engine.load_splits

    def shuffled(cfg_, stage):
        splits = real(cfg_, stage)
        part = splits.parts["target_train"]
        labels = [lab for _, lab in part.samples]
        perm = np.random.default_rng(1).permutation(labels)
        assert (perm != np.array(labels)).any()
        part.samples[:] = [(rel, int(lab)) for (rel, _), lab in zip(part.samples, perm)]
        return splits

    monkeypatch.setattr(engine, "load_splits", shuffled)
    rec = load(train_stage(tiny_cfg(tiny_root, tmp_path / "b", method="coral", stages=1, epochs=2), stage=2))
    assert [e["scores"] for e in rec["epochs"]] == [e["scores"] for e in ref["epochs"]]
    assert set(ref["epochs"][0]["scores"]) == set(scored_validator_names())
    assert all(np.isfinite(v) for e in ref["epochs"] for k, v in e["scores"].items() if k != "drift")
    assert all(e["scores"]["drift"] is None for e in ref["epochs"])  # one-stage: no source model to drift from
    assert ref["selection"] == "source_acc" and ref["schema_version"] == 2
    assert ref["validator_versions"] == validator_versions() and ref["validator_versions"]["dev"] == 2
    assert set(ref["epochs"][0]["validation_s"]) >= {"target_pass", "snd", "dev"}


def test_rank_selection_keeps_the_selected_epoch_model(tiny_root, tmp_path):
    cfg = tiny_cfg(tiny_root, tmp_path, method="source_only", stages=1, epochs=3, selection="rank",
                   rank_validators=("source_acc", "entropy"))
    rec = load(train_stage(cfg, stage=2))
    run_dir = run_dir_for(cfg, 2)
    scores = [e["scores"] for e in rec["epochs"]]
    assert rec["selected_epoch"] == best_epoch(scores, "rank", ("source_acc", "entropy"))
    assert rec["target_test"]["accuracy"] == rec["epochs"][rec["selected_epoch"] - 1]["target_test"]["accuracy"]
    assert checkpoint.load(run_dir / BEST_FILE)["epoch"] == rec["selected_epoch"]
    assert not (run_dir / EPOCHS_DIR).exists()


def test_score_epoch_times_every_validator():
    scores, seconds = score_epoch(_outputs())
    assert set(scores) == set(seconds) == set(REGISTRY) and all(s >= 0 for s in seconds.values())


def test_validator_versions_across_a_resume():
    from da.train.state import RunState

    fresh = RunState()
    fresh.note_validator_versions({"dev": 2, "im": 1})
    assert fresh.validator_versions == {"dev": 2, "im": 1}
    old = RunState(epoch=3)  # a checkpoint from before versions were kept: version 1 of everything
    with pytest.warns(UserWarning, match="'dev' changed from version 1 to 2"):
        old.note_validator_versions({"dev": 2, "im": 1})
    assert old.validator_versions == {"dev": None, "im": 1}  # dev's history mixes two estimators
    same = RunState(epoch=3, validator_versions={"dev": 2})
    same.note_validator_versions({"dev": 2, "snd": 1})  # a validator new since the start keeps its version
    assert same.validator_versions == {"dev": 2, "snd": 1}
