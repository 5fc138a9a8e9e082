"""The figures with their data beside them (issue 31): gain over source-only, confusion matrices and the
validators against target accuracy, each checked against a computation from the records by hand; and the data
of every committed figure recomputed from the committed records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
SWEEP = "rsscn7_aid_consistency"  # 24 runs, a reference, three methods with settings of their own
COMMITTED = sorted((REPO / "results").glob("**/figures/*.json"))


@pytest.fixture(scope="module")
def runs():
    from da.scripts.tables import selected_runs

    return selected_runs(str(REPO / "results" / SWEEP / "runs"), [SWEEP], None, strict=True)


def _records():
    out = []
    for path in sorted((REPO / "results" / SWEEP / "runs").glob("stage2-*/record.json")):
        rec = json.loads(path.read_text())
        c = rec["config"]
        name = ("reference" if c.get("target_labeled_fraction", 0) >= 1 else "source-only") \
            if c["method"] == "source_only" else c["method"]
        if c["method"].startswith("fixmatch"):
            name += f" {c['fixmatch_relative']}"
        out.append((name, rec["seed"], rec))
    return out


def test_gain_bars_are_the_paired_per_seed_gains_of_the_records(runs):
    from da.results.figures import gain_data

    acc = {(name, seed): 100 * rec["target_test"]["accuracy"] for name, seed, rec in _records()}
    diffs = {name: [acc[(name, s)] - acc[("source-only", s)] for s in (0, 1, 2)]
             for name in {n for n, _ in acc} - {"source-only"}}
    (panel,) = gain_data(runs)["panels"]
    bars = {b["configuration"]: b for b in panel["bars"]}
    assert "mcc" in bars and not any(k.startswith(("source_only", "reference")) for k in bars)  # the anchors are lines
    d = diffs["mcc"]
    half = stats.t.ppf(0.975, 2) * np.std(d, ddof=1) / np.sqrt(3)
    assert bars["mcc"]["gain"] == pytest.approx(np.mean(d), abs=0.005)
    assert bars["mcc"]["interval"] == pytest.approx([np.mean(d) - half, np.mean(d) + half], abs=0.005)
    assert panel["reference_gain"] == pytest.approx(np.mean(diffs["reference"]), abs=0.005)
    assert bars["mcc"]["gap_closed"] == pytest.approx(100 * np.mean(d) / np.mean(diffs["reference"]), abs=0.05)
    gains = [b["gain"] for b in panel["bars"]]
    assert gains == sorted(gains, reverse=True)


def test_confusion_panels_average_the_row_normalised_matrices_of_their_runs(runs):
    from da.results.figures import config_labels, confusion_data

    data = confusion_data(runs)
    labels = [p["configuration"] for p in data["panels"]]
    assert labels[0] == "source_only" and labels[-1] == "reference (target labels)" and len(labels) == 3
    means = runs.assign(label=config_labels(runs)).groupby("label")["target_acc"].mean()
    free = means[[not lab.startswith(("source_only", "reference")) for lab in means.index]]
    assert labels[1] == free.idxmax()
    so = [np.asarray(rec["target_test"]["confusion"], float) for name, _, rec in _records() if name == "source-only"]
    expected = np.mean([100 * m / m.sum(1, keepdims=True) for m in so], axis=0)
    assert np.array(data["panels"][0]["matrix"]) == pytest.approx(expected, abs=0.05)
    assert data["panels"][0]["runs"] == 3


def test_validator_panels_give_the_validator_tables_spearman(runs):
    from da.results.figures import validator_data

    data = {v["validator"]: v for v in validator_data(runs)["validators"]}
    table = (REPO / "results" / SWEEP / "tables" / "validators.md").read_text()
    for name in ("bnm", "snd", "source_acc"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} "))
        assert data[name]["spearman"] == pytest.approx(float(row.split("|")[5]), abs=5e-4), name
        assert data[name]["points"] == sum(len(rec["epochs"]) for _, _, rec in _records())
    assert "last" not in data and "rank" not in data  # they score nothing of their own


def test_class_gain_is_the_paired_change_in_recall(runs):
    from da.results.figures import class_gain_data

    data = class_gain_data(runs)
    (panel,) = data["panels"]
    (mcc,) = [r for r in panel["rows"] if r["configuration"] == "mcc"]

    def recall(rec, k):
        c = np.array(rec["target_test"]["confusion"], dtype=float)
        return 100 * c[k, k] / c[k].sum()

    by_seed = {(name, seed): rec for name, seed, rec in _records()}
    for k in range(len(data["classes"])):
        diffs = [recall(by_seed[("mcc", s)], k) - recall(by_seed[("source-only", s)], k) for s in (0, 1, 2)]
        assert mcc["difference"][k] == pytest.approx(np.mean(diffs), abs=0.05)
    assert mcc["pairs"] == 3 and not any(r["configuration"] == "source_only" for r in panel["rows"])


def test_loss_curves_are_the_seed_means_of_the_records_losses(runs):
    from da.results.figures import config_labels, loss_data

    panels = {p["term"]: p for p in loss_data(runs)["panels"]}
    assert {"cls", "mcc"} <= set(panels)
    mcc = [rec for name, _, rec in _records() if name == "mcc"]
    (line,) = [l for l in panels["mcc"]["lines"] if l["configuration"] == "mcc"]
    by_hand = np.mean([[e["loss"]["mcc"] for e in rec["epochs"]] for rec in mcc], axis=0)
    assert line["runs"] == 3 and line["mean"] == pytest.approx(by_hand, abs=5e-5)
    assert not any(l["configuration"].startswith("source_only") for l in panels["mcc"]["lines"])  # no such term
    assert {l["configuration"] for l in panels["cls"]["lines"]} == set(config_labels(runs))


def test_predicted_shares_are_column_sums_and_the_truth_row_sums(runs):
    from da.results.figures import prior_data

    data = prior_data(runs)
    (only,) = [c for c in data["configurations"] if c["configuration"] == "source_only"]
    confusions = [np.array(rec["target_test"]["confusion"], dtype=float) for name, _, rec in _records()
                  if name == "source-only"]
    assert only["predicted"] == pytest.approx(np.mean([100 * c.sum(0) / c.sum() for c in confusions], axis=0), abs=0.05)
    assert data["target_test_shares"] == pytest.approx(100 * confusions[0].sum(1) / confusions[0].sum(), abs=0.05)
    assert sum(data["source_shares"]) == pytest.approx(100, abs=0.5)
    assert only["prior_estimate"] is None and only["prior_l1_error"] is None  # no --prior in this sweep


def test_detection_figure_data_from_the_records():
    from da.results.detection import detection_runs, map_per_epoch_data, per_class_ap_data

    folder = REPO / "results" / "detection" / "runs"
    runs = detection_runs(folder)
    recs = [json.loads(p.read_text()) for p in sorted(folder.glob("det-*/record.json"))]
    imagenet = [r for r in recs if r["config"]["weights"] in ("imagenet", "tf_efficientnet_lite0")
                and r["config"]["anchors"] == "default" and r["config"]["sampler"] == "default"]
    assert len(imagenet) == 3
    nms = f"nms_{imagenet[0]['headline_nms']:g}"
    (config,) = [c for c in per_class_ap_data(runs)["configurations"] if c["configuration"] == "ImageNet / default / default / ce"]
    airplane = [100 * r["test"][nms]["ap50_per_class"]["airplane"] for r in imagenet]
    assert config["ap50"][0] == pytest.approx(np.mean(airplane), abs=0.05)
    assert config["sd"][0] == pytest.approx(np.std(airplane, ddof=1), abs=0.05)
    (curve,) = [c for c in map_per_epoch_data(runs)["configurations"] if c["configuration"] == "ImageNet / default / default / ce"]
    assert curve["val_map_50"] == pytest.approx([100 * np.mean([r["history"][i]["val_map_50"] for r in imagenet])
                                                 for i in range(len(imagenet[0]["history"]))], abs=0.005)


def test_study_figure_history_and_marks():
    from da.results.study import study_figure_data, study_summary

    summary = study_summary(REPO / "results" / "hpo" / "studies" / "shot_mcc_rsscn7", REPO / "results" / "hpo" / "runs")
    data = study_figure_data(summary)
    trials = data["trials"]
    assert len(trials) == summary["complete"] and [t["number"] for t in trials] == sorted(t["number"] for t in trials)
    assert all(b >= a for a, b in zip([t["best_so_far"] for t in trials], [t["best_so_far"] for t in trials][1:]))
    done = [r for r in summary["rows"] if r["state"] == "complete"]
    best = max(done, key=lambda r: r["objective"])  # full precision (the JSON rounds to 5 digits)
    assert data["choice"] == best["number"] and trials[-1]["best_so_far"] == pytest.approx(best["objective"], abs=5e-6)
    assert data["oracle"] == max(done, key=lambda r: r["target_acc"])["number"] and data["default"] == 0


def test_figures_with_data_are_committed():
    assert {p.stem for p in COMMITTED} >= {"gain", "confusion_matrices", "validator_scores", "accuracy_by_method",
                                           "loss_curves", "prior_shares", "class_gain", "per_class_ap", "map_per_epoch",
                                           "study_shot_mcc_rsscn7"}
    for folder in ("label_shift", "gap_warm", "hpo", "detection", "transfer"):  # every results folder has figures
        assert list((REPO / "results" / folder / "figures").glob("*.json")), folder


@pytest.mark.parametrize("path", COMMITTED, ids=[str(p.relative_to(REPO / "results")) for p in COMMITTED])
def test_committed_figure_data_recompute_from_committed_records(path, monkeypatch):
    """What a committed figure shows is what its records give: its JSON (written with it by
    experiments/tables.py) against a recomputation with the command's own runs folder, sweeps and rule (a
    study's folder, a detection folder)."""
    monkeypatch.chdir(REPO)
    saved = json.loads(path.read_text())
    source = saved["source"]
    assert not any(Path(v).is_absolute() for v in source.values() if isinstance(v, str)), \
        "a committed figure's folders must be relative to the repo"
    if "study" in source:
        from da.results.study import study_figure_data, study_summary

        fresh = study_figure_data(study_summary(source["study"], source.get("runs")))
    elif "transfer_a" in source:
        from da.results.transfer import transfer_figure_data, transfer_of

        fresh = transfer_figure_data(transfer_of(source["transfer_a"], source["transfer_b"], source["selection"], True))
    elif "detection" in source:
        from da.results.detection import FIGURE_DATA, detection_runs

        fresh = FIGURE_DATA[saved["figure"]](detection_runs(source["detection"]))
    else:
        from da.results.figures import DATA
        from da.scripts.tables import selected_runs

        fresh = DATA[saved["figure"]](selected_runs(source["runs"], source["sweeps"], source["selection"], strict=True))
    assert json.loads(json.dumps(fresh)) == saved["data"]
    assert path.with_suffix(".png").exists() and path.with_suffix(".pdf").exists()


def test_pr_curves_from_records_that_keep_them(tmp_path):
    import shutil

    from da.results.detection import detection_runs, pr_curve_data, write_detection_report

    committed = REPO / "results" / "detection" / "runs"
    assert pr_curve_data(detection_runs(committed))["configurations"] == []  # recorded before the curves
    shutil.copytree(committed, tmp_path / "runs")
    rng = np.random.default_rng(0)
    curves = {}
    for path in sorted((tmp_path / "runs").glob("det-*/record.json")):
        rec = json.loads(path.read_text())
        nms = f"nms_{rec['headline_nms']:g}"
        rec["test"][nms]["pr50_per_class"] = {c: [round(float(v), 4) for v in np.sort(rng.uniform(size=101))[::-1]]
                                              for c in rec["classes"]}
        curves[path.parent.name] = rec["test"][nms]["pr50_per_class"]["airplane"]
        path.write_text(json.dumps(rec))
    runs = detection_runs(tmp_path / "runs")
    (cfg,) = [c for c in pr_curve_data(runs)["configurations"] if c["configuration"] == "ImageNet / default / default / ce"]
    members = runs[(runs["init"] == "ImageNet") & (runs["anchors"] == "default") & (runs["sampler"] == "default")]["run"]
    assert cfg["runs"] == 3
    assert cfg["precision"]["airplane"] == pytest.approx(np.mean([curves[r] for r in members], axis=0), abs=1e-4)
    written = write_detection_report(tmp_path / "runs", tmp_path / "out")
    assert (tmp_path / "out" / "figures" / "pr_curves.png") in written and (tmp_path / "out" / "figures" / "pr_curves.json").exists()
