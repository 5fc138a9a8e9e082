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


def test_figures_with_data_are_committed():
    assert {p.stem for p in COMMITTED} >= {"gain", "confusion_matrices", "validator_scores", "accuracy_by_method"}


@pytest.mark.parametrize("path", COMMITTED, ids=[str(p.relative_to(REPO / "results")) for p in COMMITTED])
def test_committed_figure_data_recompute_from_committed_records(path, monkeypatch):
    """What a committed figure shows is what its records give: its JSON (written with it by
    experiments/tables.py) against a recomputation with the command's own runs folder, sweeps and rule."""
    from da.results.figures import DATA
    from da.scripts.tables import selected_runs

    monkeypatch.chdir(REPO)
    saved = json.loads(path.read_text())
    source = saved["source"]
    assert not Path(source["runs"]).is_absolute(), "a committed figure's runs folder must be relative to the repo"
    fresh = selected_runs(source["runs"], source["sweeps"], source["selection"], strict=True)
    assert json.loads(json.dumps(DATA[saved["figure"]](fresh))) == saved["data"]
    assert path.with_suffix(".png").exists() and path.with_suffix(".pdf").exists()
