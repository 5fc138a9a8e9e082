"""da.results.transfer: one pair's ranking of configurations against the other's, checked against sums by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from da.results.transfer import pair_scores, transfer, transfer_markdown
from da.scripts.tables import main as tables_main

# (method, label_smoothing, fixmatch_threshold) -> mean target accuracy on each pair; the two seeds sit at -/+ 1
CONFIGS = {("mcc", 0.0, 0.95): (70.0, 80.0), ("shot+mcc", 0.0, 0.95): (65.0, 84.0),
           ("fixmatch+mcc", 0.0, 0.95): (61.0, 86.0), ("fixmatch+mcc", 0.0, 0.9): (63.0, 82.0),
           ("mcc", 0.1, 0.95): (72.0, 85.0)}
# label_smoothing -> (source-only, reference) on each pair
ANCHORS = {0.0: ((60.0, 80.0), (70.0, 90.0)), 0.1: ((62.0, 82.0), (71.0, 91.0))}


def _runs(side: int, only=None) -> pd.DataFrame:
    source, target = ("AID", "RSSCN7") if side == 0 else ("RSSCN7", "AID")
    rows = []

    def add(method, smoothing, threshold, fraction, mean):
        for seed, offset in ((0, -1.0), (1, 1.0)):
            rows.append({"source": source, "target": target, "method": method, "prior": "", "seed": seed,
                         "split_seed": 0, "target_labeled_fraction": fraction, "label_smoothing": smoothing,
                         "fixmatch_threshold": threshold, "epochs": 4, "target_acc": mean + offset})

    for (method, smoothing, threshold), accs in CONFIGS.items():
        if only is None or method in only:
            add(method, smoothing, threshold, 0.0, accs[side])
    for smoothing, anchors in ANCHORS.items():
        add("source_only", smoothing, 0.95, 0.0, anchors[side][0])
        add("source_only", smoothing, 0.95, 1.0, anchors[side][1])
    return pd.DataFrame(rows)


def _ranks(values) -> np.ndarray:  # 1 = highest; no ties in CONFIGS
    return np.argsort(np.argsort(-np.asarray(values))) + 1


def test_gap_closed_is_against_the_anchors_of_each_configurations_own_recipe():
    scores = pair_scores(_runs(0)).scores
    closed = {name.split(",")[0] + (" ls" if "label_smoothing" in name else ""): c
              for name, c in scores["closed"].items() if not name.startswith("fixmatch")}
    assert closed == pytest.approx({"mcc": 100 * (70 - 60) / 20, "shot+mcc": 25.0, "mcc ls": 100 * (72 - 62) / 20})
    assert (scores["n"] == 2).all()


def test_rank_agreement_and_the_cost_of_each_choice_match_a_computation_by_hand():
    t = transfer(_runs(0), _runs(1))
    a = np.array([v[0] for v in CONFIGS.values()])
    b = np.array([v[1] for v in CONFIGS.values()])
    ra, rb = _ranks(a), _ranks(b)
    assert t.spearman == pytest.approx(np.corrcoef(ra, rb)[0, 1])
    signs = [np.sign((a[i] - a[j]) * (b[i] - b[j])) for i, j in itertools.combinations(range(len(a)), 2)]
    assert t.kendall == pytest.approx(sum(signs) / len(signs))
    assert sorted(t.table["rank_a"]) == sorted(ra) and len(t.table) == len(CONFIGS)
    # on AID -> RSSCN7: RSSCN7 -> AID's best is fixmatch+mcc at 0.95 (86), 61 here; the best here is mcc + smoothing
    on_a = t.choice_on("a")
    assert on_a["chosen_label"] == "fixmatch+mcc, fixmatch_threshold 0.95" and on_a["chosen_acc"] == pytest.approx(61.0)
    assert on_a["oracle_label"] == "mcc, label_smoothing 0.1" and on_a["regret"] == pytest.approx(11.0)
    assert on_a["mean_acc"] == pytest.approx(a.mean())
    assert on_a["half"] == 2  # mcc and mcc + smoothing close exactly half of their recipes' gaps
    # paired per seed: the seeds sit at -/+ 1 around every mean, so each difference is the same for both seeds
    assert on_a["regret_paired"]["mean"] == pytest.approx(11.0) and on_a["regret_paired"]["n"] == 2
    assert on_a["vs_random_paired"]["mean"] == pytest.approx(61.0 - a.mean())
    assert on_a["regret_paired"]["interval"] == "[+11.0, +11.0]"
    on_b = t.choice_on("b")
    assert on_b["chosen_label"] == "mcc, label_smoothing 0.1" and on_b["regret"] == pytest.approx(1.0)
    assert on_b["chosen_closed"] == pytest.approx(100 * (85 - 71) / 20)
    text = transfer_markdown(t)
    assert f"Spearman rho {t.spearman:+.2f}" in text and "a regret of 11.0 points" in text


def test_configurations_run_on_one_pair_only_are_left_out_and_three_shared_are_needed():
    t = transfer(_runs(0, only={"mcc", "shot+mcc"}), _runs(1))
    on_a = t.choice_on("a")  # what RSSCN7 -> AID chooses, fixmatch+mcc, was not run on AID -> RSSCN7
    assert len(t.table) == 3 and on_a["chosen_acc"] is None and on_a["regret"] is None
    assert "was not run on AID -> RSSCN7" in transfer_markdown(t)
    with pytest.raises(ValueError, match="needs at least 3"):
        transfer(_runs(0, only={"mcc"}), _runs(1))


def test_runs_of_two_designs_or_two_pairs_are_refused():
    mixed = _runs(0)
    mixed.loc[mixed.index[:2], "epochs"] = 16
    with pytest.raises(ValueError, match="differ in epochs"):
        pair_scores(mixed)
    with pytest.raises(ValueError, match="one pair"):
        pair_scores(pd.concat([_runs(0), _runs(1)], ignore_index=True))


def test_the_command_needs_both_pairs_folders(tmp_path, capsys):
    with pytest.raises(SystemExit):
        tables_main(["--transfer-a", str(tmp_path), "--out", str(tmp_path)])
    assert "--transfer-b" in capsys.readouterr().err
