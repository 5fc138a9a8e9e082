"""Prediction drift (da/selection/drift.py) against a count by hand, the wholesale relabelling that every other
validator scores as highly as the truth, and the ``guarded`` rule that refuses it."""

import numpy as np
import pytest
import torch

from da.methods import TargetPass
from da.selection import REGISTRY, EpochOutputs, SourcePredictions, best_epoch, score_epoch
from da.selection.drift import MIN_IMAGES, WHOLESALE, prediction_drift


def test_drift_against_counting_by_hand():
    rng = np.random.default_rng(0)
    ref, cur = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    ref[:3] = 3  # class 3 predicted often enough; class 2 below MIN_IMAGES
    ref[ref == 2] = 1
    ref[:MIN_IMAGES - 1] = 2
    d = prediction_drift(torch.tensor(ref), torch.tensor(cur), 4)
    for c in range(4):
        n = np.sum(ref == c)
        if n < MIN_IMAGES:
            assert torch.isnan(d.changed[c]) and torch.isnan(d.to_share[c])
            continue
        moved = [np.sum((ref == c) & (cur == k)) / n if k != c else -1 for k in range(4)]
        assert d.changed[c] == pytest.approx(np.mean(cur[ref == c] != c))
        assert d.to_share[c] == pytest.approx(max(moved)) and int(d.to[c]) == int(np.argmax(moved))
    assert d.largest == pytest.approx(np.nanmax(d.to_share.numpy()))
    summary = d.summary(["a", "b", "c", "d"])
    assert set(summary["classes"]) == {"a", "b", "d"}
    assert summary["changed"] == pytest.approx(np.mean(cur != ref), abs=1e-4)


def _clustered(seed=0, per=30, c=3):
    """Target features in c tight clusters and a model that predicts each cluster's class confidently."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(c, 8)) * 5
    labels = np.repeat(np.arange(c), per)
    features = centres[labels] + rng.normal(size=(len(labels), 8)) * 0.3
    logits = np.eye(c)[labels] * 6 + rng.normal(size=(len(labels), c)) * 0.5
    src = SourcePredictions(torch.tensor(rng.normal(size=(40, c))), torch.tensor(rng.normal(size=(40, 8))),
                            torch.tensor(rng.integers(0, c, 40)))
    return src, torch.tensor(features), torch.tensor(logits), torch.tensor(labels)


def test_two_clusters_swapped_score_as_the_truth_for_every_validator_but_drift():
    src, features, logits, _ = _clustered()
    reference = logits.argmax(1)  # the start model was right
    swapped = logits[:, [1, 0, 2]]  # clusters 0 and 1 relabelled wholesale as each other
    truth_scores, _ = score_epoch(EpochOutputs(src, TargetPass(logits, features), reference))
    swap_scores, _ = score_epoch(EpochOutputs(src, TargetPass(swapped, features), reference))
    others = [v for v in REGISTRY if v != "drift"]
    assert len(others) >= 6
    for v in others:  # invariant to a permutation of the clusters: blind to the collapse
        assert swap_scores[v] == pytest.approx(truth_scores[v], rel=1e-6, abs=1e-9), v
    assert truth_scores["drift"] == 0.0 and swap_scores["drift"] == -1.0 < -WHOLESALE

    # the guard refuses the swapped epoch where 'last' and every other validator keep it
    history = [truth_scores, truth_scores, swap_scores]
    assert best_epoch(history, "last") == 3 and best_epoch(history, "guarded") == 2
    assert best_epoch([swap_scores, dict(swap_scores, drift=-0.9)], "guarded") == 2  # none passes: least moved
    assert best_epoch([truth_scores, dict(truth_scores, drift=-0.3)], "guarded") == 2  # below WHOLESALE passes


def test_partial_correction_is_not_wholesale():
    """Adaptation that fixes a confusion moves the wrongly predicted share of a class, not the class."""
    src, features, logits, labels = _clustered()
    start = logits.clone()  # the start model called 10 images of cluster 1 class 0
    start[torch.nonzero(labels == 1)[:10, 0]] = torch.tensor([6.0, 0.0, 0.0], dtype=start.dtype)
    drift = prediction_drift(start.argmax(1), logits.argmax(1), 3)
    assert drift.largest == pytest.approx(10 / 40)  # of the 40 the start model called 0, 10 went to 1
    assert REGISTRY["drift"]().score(EpochOutputs(src, TargetPass(logits, features), start.argmax(1))) > -WHOLESALE
    assert np.isnan(REGISTRY["drift"]().score(EpochOutputs(src, TargetPass(logits, features))))


def test_source_predictions_are_the_stage1_classifier_read_through_the_class_map():
    from da.selection.drift import source_predictions

    rng = np.random.default_rng(1)
    z, w, b = rng.normal(size=(50, 6)), rng.normal(size=(5, 6)), rng.normal(size=5)
    classes = ["Airport", "Meadow", "Farmland", "Beach", "Industrial"]  # stage 1's; Airport and Beach not shared
    label_of = {"Meadow": 0, "Farmland": 1, "Industrial": 2}
    logits = z @ w.T + b
    logits[:, [0, 3]] = -np.inf
    expected = [label_of[classes[k]] for k in logits.argmax(1)]
    got = source_predictions(torch.tensor(z), torch.tensor(w), torch.tensor(b), classes, label_of)
    assert got.tolist() == expected
    with pytest.raises(ValueError, match="none of the source model's classes"):
        source_predictions(torch.tensor(z), torch.tensor(w), torch.tensor(b), classes, {"Forest": 0})


def test_a_two_stage_run_measures_drift_from_its_stage1_model_and_a_one_stage_run_is_guarded_as_last(tiny_root, tmp_path):
    import json

    from da.train import run_experiment
    from test_engine import tiny_cfg

    two = json.loads(open(run_experiment(tiny_cfg(tiny_root, tmp_path / "two", method="mcc", epochs=2))).read())
    for e in two["epochs"]:
        drift = e["drift"]
        assert 0 <= drift["changed"] <= 1 and -e["scores"]["drift"] == pytest.approx(drift["largest_wholesale_share"], abs=5e-5)  # the record rounds to 4 places
        assert sum(c["images"] for c in drift["classes"].values()) <= two["split_sizes"]["target_train"]
    one = json.loads(open(run_experiment(tiny_cfg(tiny_root, tmp_path / "one", method="mcc", stages=1, epochs=2))).read())
    assert all("drift" not in e and np.isnan(e["scores"]["drift"] if e["scores"]["drift"] is not None else np.nan)
               for e in one["epochs"])
    assert best_epoch([e["scores"] for e in one["epochs"]], "guarded") == 2
