"""Ablation tables from a small committed set of run records (tests/data/records): golden files,
an independent recomputation of every cell, and the refusal of bad records."""

import copy
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from da.config import RunConfig
from da.records import RecordError
from da.results import ablation_table, load_runs, load_runs_of
from da.selection import scored_validator_names, validator_names

from conftest import REPO

DATA = REPO / "tests" / "data"


def regenerate(out):
    res = subprocess.run([sys.executable, str(REPO / "experiments" / "tables.py"), "--runs", str(DATA / "records"),
                          "--out", str(out), "--no-figures"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr


def test_tables_match_golden_files_byte_for_byte(tmp_path):
    regenerate(tmp_path / "a")
    regenerate(tmp_path / "b")
    for name in ("ablation.md", "ablation.tex", "oracle.md", "oracle.tex", "adistance.md", "adistance.tex",
                 "predicted_shares.md", "predicted_shares.tex"):
        produced = (tmp_path / "a" / "tables" / name).read_bytes()
        assert produced == (tmp_path / "b" / "tables" / name).read_bytes()  # deterministic
        assert produced == (DATA / "golden" / "tables" / name).read_bytes(), name


def _records():
    out = []
    for path in sorted((DATA / "records").glob("stage2-*/record.json")):
        out.append(json.loads(path.read_text()))
    return out


def test_cells_recomputed_independently():
    md = (DATA / "golden" / "tables" / "ablation.md").read_text()
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): [c.strip() for c in line.strip("|").split("|")]
            for line in md.splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")}
    groups = {}
    for r in _records():
        groups.setdefault((str(r["config"]["stages"]), r["config"]["method"]), []).append(r)
    assert set(groups) == set(rows)
    means = {}
    for key, recs in groups.items():
        acc = np.array([100 * r["target_test"]["accuracy"] for r in recs])
        f1 = np.array([100 * r["target_test"]["macro_f1"] for r in recs])
        means[key] = acc.mean()
        cells = rows[key]
        assert cells[2].strip("*") == f"{acc.mean():.1f} ± {acc.std(ddof=1):.1f}"
        assert cells[3].strip("*") == f"{f1.mean():.1f} ± {f1.std(ddof=1):.1f}"
        assert cells[-1].startswith(str(len(recs)))
        assert ("missing" in cells[-1]) == (len(recs) < 3)  # the dropped seed is flagged, not hidden
    for (stages, method), cells in rows.items():
        if method != "source_only":
            assert cells[4].strip("*") == f"{means[(stages, method)] - means[(stages, 'source_only')]:+.1f}"
    # bold only where the best is shown against the runner-up: a paired t-test per seed at the 5 % level
    from scipy.stats import ttest_rel

    ranked = sorted(means, key=means.get, reverse=True)
    per_seed = {k: {r["seed"]: 100 * r["target_test"]["accuracy"] for r in recs} for k, recs in groups.items()}
    shared = sorted(set(per_seed[ranked[0]]) & set(per_seed[ranked[1]]))
    shown = len(shared) > 1 and ttest_rel([per_seed[ranked[0]][s] for s in shared],
                                          [per_seed[ranked[1]][s] for s in shared]).pvalue < 0.05
    assert all(cells[2].startswith("**") == (shown and k == ranked[0]) for k, cells in rows.items())


def test_oracle_never_shares_a_table_with_the_selected_result():
    ablation = (DATA / "golden" / "tables" / "ablation.md").read_text()
    oracle = (DATA / "golden" / "tables" / "oracle.md").read_text()
    assert "oracle" not in ablation.lower() and "ORACLE, not a result" in oracle
    runs = load_runs(DATA / "records")
    table, _ = ablation_table(runs)
    assert not [c for c in table.columns if "oracle" in c]


def test_bad_records_are_left_out_with_a_warning_or_refused_under_strict(tmp_path):
    shutil.copytree(DATA / "records", tmp_path / "runs")
    n_all = len(load_runs(tmp_path / "runs"))
    victims = sorted((tmp_path / "runs").glob("stage2-*/record.json"))[:4]
    rec = json.loads(victims[0].read_text())
    rec["schema_version"] = 99
    victims[0].write_text(json.dumps(rec))
    rec = json.loads(victims[1].read_text())
    del rec["target_test"]
    victims[1].write_text(json.dumps(rec))
    victims[2].write_text("{truncated")
    rec = json.loads(victims[3].read_text())
    rec["target_test"]["accuracy"] = 97.0  # a percentage where a fraction belongs
    victims[3].write_text(json.dumps(rec))
    with pytest.warns(UserWarning) as caught:
        runs = load_runs(tmp_path / "runs")
    assert len(runs) == n_all - 4
    text = "\n".join(str(w.message) for w in caught)
    assert f"{victims[0]}: schema_version 99" in text and f"{victims[1]}: incomplete, lacks target_test" in text
    assert f"{victims[2]}: unreadable" in text and f"{victims[3]}: target_test accuracy = 97.0 is not a fraction" in text
    with pytest.raises(RecordError, match="4 bad run record") as info:
        load_runs(tmp_path / "runs", strict=True)
    assert all(str(v) in str(info.value) for v in victims)
    res = subprocess.run([sys.executable, str(REPO / "experiments" / "tables.py"), "--runs", str(tmp_path / "runs"),
                          "--out", str(tmp_path / "out"), "--no-figures", "--strict"], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 2 and "4 bad run record(s)" in res.stderr and "Traceback" not in res.stderr


def test_a_run_found_twice_counts_once(tmp_path):
    shutil.copytree(DATA / "records", tmp_path / "runs")
    one = sorted((tmp_path / "runs").glob("stage2-*"))[0]
    shutil.copytree(one, tmp_path / "runs" / "copy" / one.name)
    with pytest.warns(UserWarning, match="counted once"):
        runs = load_runs(tmp_path / "runs")
    assert len(runs) == len(load_runs(DATA / "records"))


def test_latex_escapes_what_class_names_may_hold():
    from da.results.tables import latex_escape

    assert latex_escape(r"R&D $5 {x}_1 #2 ~^ 50% a\b") == (
        r"R\&D \$5 \{x\}\_1 \#2 \textasciitilde{}\textasciicircum{} 50\% a\textbackslash{}b")


@pytest.mark.parametrize("runs,sweep,out,extra", [
    ("runs", "ablation", "", []), ("methods/runs", "methods", "methods/", []),
    ("fast_path/runs", "fast_path", "fast_path/", ["--baseline", "results/methods/runs", "--baseline-sweep", "methods"]),
    ("gap/runs", "gap", "gap/", []), ("gap_shifted/runs", "gap_shifted", "gap_shifted/", []),
    ("gap_warm/runs", "gap", "gap_warm/", ["--sweep", "gap_warm"]),
    ("rsscn7_aid/runs", "rsscn7_aid", "rsscn7_aid/", []), ("published6/runs", "published6", "published6/", []),
    # gap_splits trained with bnm and reports the last epoch, the rule chosen on the other pair
    ("gap_splits/runs", "gap_splits", "gap_splits/", ["--selection", "last"]),
    ("rsscn7_aid_splits/runs", "rsscn7_aid_splits", "rsscn7_aid_splits/", ["--selection", "last"]),
    ("rsscn7_aid_budget/runs", "rsscn7_aid_budget", "rsscn7_aid_budget/", []),
    ("half_gap/runs", "half_gap", "half_gap/", ["--selection", "last"]),
    ("rsscn7_aid_half_gap/runs", "rsscn7_aid_half_gap", "rsscn7_aid_half_gap/", ["--selection", "last"]),
    ("consistency/runs", "consistency", "consistency/", ["--selection", "last"]),
    ("rsscn7_aid_consistency/runs", "rsscn7_aid_consistency", "rsscn7_aid_consistency/", []),
    ("shifted_prior/runs", "shifted_prior", "shifted_prior/", ["--selection", "last"]),
    ("rsscn7_aid_lora/runs", "rsscn7_aid_lora", "rsscn7_aid_lora/", []),
    ("rsscn7_aid_budget32/runs", "rsscn7_aid_budget32", "rsscn7_aid_budget32/", []),
    ("dev_rescore/runs", "dev_rescore", "dev_rescore/", []),
    ("consistency_ema/runs", "consistency", "consistency_ema/", ["--sweep", "consistency_ema", "--selection", "last"]),
    ("rsscn7_aid_consistency_ema/runs", "rsscn7_aid_consistency", "rsscn7_aid_consistency_ema/",
     ["--sweep", "rsscn7_aid_consistency_ema"]),
    ("neighbours/runs", "consistency", "neighbours/",
     ["--sweep", "consistency_ema", "--sweep", "neighbours", "--sweep", "strong_views", "--selection", "last"]),
    ("rsscn7_aid_neighbours/runs", "rsscn7_aid_consistency", "rsscn7_aid_neighbours/",
     ["--sweep", "rsscn7_aid_consistency_ema", "--sweep", "rsscn7_aid_neighbours", "--sweep", "rsscn7_aid_strong_views"]),
    ("target_batch/runs", "target_batch", "target_batch/", ["--selection", "last"]),
    ("shifted_splits/runs", "shifted_splits", "shifted_splits/", ["--selection", "last"]),
    ("rsscn7_aid_target_batch/runs", "rsscn7_aid_target_batch", "rsscn7_aid_target_batch/", []),
    ("smoothing/runs", "smoothing", "smoothing/", ["--selection", "last"]),
    ("rsscn7_aid_smoothing/runs", "rsscn7_aid_smoothing", "rsscn7_aid_smoothing/", []),
    ("rsscn7_aid_smoothing_splits/runs", "rsscn7_aid_smoothing_splits", "rsscn7_aid_smoothing_splits/", []),
    ("fixmatch_splits/runs", "fixmatch_splits", "fixmatch_splits/", ["--selection", "last"]),
    ("rsscn7_aid_fixmatch_splits/runs", "rsscn7_aid_fixmatch_splits", "rsscn7_aid_fixmatch_splits/", []),
    ("smoothing_splits/runs", "smoothing_splits", "smoothing_splits/", ["--selection", "last"]),
    ("shifted_smoothing_splits/runs", "shifted_smoothing_splits", "shifted_smoothing_splits/", ["--selection", "last"]),
    ("weight_ema/runs", "weight_ema", "weight_ema/", ["--selection", "last"]),
    ("rsscn7_aid_weight_ema/runs", "rsscn7_aid_weight_ema", "rsscn7_aid_weight_ema/", []),
    ("rsscn7_aid_weight_ema_splits/runs", "rsscn7_aid_weight_ema_splits", "rsscn7_aid_weight_ema_splits/", []),
    ("finalists/runs", "finalists", "finalists/", ["--selection", "last"]),
    ("rsscn7_aid_finalists/runs", "rsscn7_aid_finalists", "rsscn7_aid_finalists/", []),
    ("shot_frozen/runs", "shot_frozen", "shot_frozen/", ["--selection", "last"]),
    ("rsscn7_aid_shot_frozen/runs", "rsscn7_aid_shot_frozen", "rsscn7_aid_shot_frozen/", [])])
def test_committed_tables_regenerate_from_committed_records(tmp_path, monkeypatch, runs, sweep, out, extra):
    """What results/ shows is what its records give, with every record valid (--strict). In process (the
    program itself, without the import time of a subprocess per folder)."""
    from da.scripts.tables import main

    monkeypatch.chdir(REPO)
    assert main(["--runs", f"results/{runs}", "--sweep", sweep, "--out", str(tmp_path), "--no-figures",
                 "--expected-seeds", "3", "--strict", *extra]) == 0
    produced = {p.name for p in (tmp_path / "tables").glob("*.md")}
    committed = {p.name for p in (REPO / "results" / f"{out}tables").glob("*.md")}
    # a re-selected epoch has no stored predictions: its shares are not written
    assert {"ablation.md", "oracle.md", "paired.md"} <= committed
    assert ("predicted_shares.md" in committed) == (sweep not in ("gap_splits", "half_gap", "consistency",
                                                                  "shifted_prior", "target_batch",
                                                                  "shifted_splits", "smoothing", "fixmatch_splits",
                                                                  "smoothing_splits", "shifted_smoothing_splits",
                                                                  "weight_ema", "shot_frozen"))
    assert committed == produced, committed ^ produced  # nothing committed that the records no longer give
    for name in sorted(committed):
        assert (tmp_path / "tables" / name).read_text() == (REPO / "results" / f"{out}tables" / name).read_text(), name


def test_records_written_before_a_field_existed_get_its_default(tmp_path):
    shutil.copytree(DATA / "records", tmp_path / "runs")
    for path in (tmp_path / "runs").glob("*/record.json"):
        assert "source_sampling" not in json.loads(path.read_text())["config"]  # the committed records predate it
    runs = load_runs(tmp_path / "runs")
    assert set(runs["source_sampling"]) == {"shuffle"}
    assert list(runs["group"]) == list(load_runs(DATA / "records")["group"])


def test_sweep_filter_keeps_only_that_sweeps_runs(tmp_path):
    runs = load_runs(DATA / "records")
    one = runs[(runs["method"] == "source_only") & (runs["stages"] == 1)]
    assert len(one) >= 2 and len(one) < len(runs)
    # the record's config as it ran: fields added since then at their legacy values (from_record)
    cfg = {k: v for k, v in RunConfig.from_record(one["record"].iloc[0]["config"]).to_dict().items()
           if k not in ("seed", "method", "stages", "data_root", "out")}
    sweep = tmp_path / "only_source.yaml"
    sweep.write_text(json.dumps({"base": cfg, "grid": {"method": ["source_only"], "stages": [1]},
                                 "seeds": sorted(int(s) for s in one["seed"])}))  # JSON is YAML
    res = subprocess.run([sys.executable, str(REPO / "experiments" / "tables.py"), "--runs", str(DATA / "records"),
                          "--out", str(tmp_path / "out"), "--no-figures", "--sweep", str(sweep)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    body = [line for line in (tmp_path / "out" / "tables" / "ablation.md").read_text().splitlines()
            if line.startswith("| ") and "---" not in line][1:]
    assert len(body) == 1 and "source_only" in body[0] and f"| {len(one)} |" in body[0]


def test_predicted_shares_recomputed_from_confusion_matrices():
    md = (DATA / "golden" / "tables" / "predicted_shares.md").read_text()
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): [c.strip() for c in line.strip("|").split("|")]
            for line in md.splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")}
    shares: dict = {}
    for rec in _records():
        pred = np.asarray(rec["target_test"]["confusion"]).sum(axis=0)  # column sums: predictions, not labels
        shares.setdefault((str(rec["config"]["stages"]), rec["config"]["method"]), []).append(100 * pred / pred.sum())
    assert set(rows) == set(shares)
    for key, values in shares.items():
        mean = np.mean(values, axis=0)
        assert [cell.split(" ± ")[0] for cell in rows[key][2:9]] == [f"{m:.1f}" for m in mean], key
    assert "**" not in md  # no share is "best"
    first = _records()[0]
    source = np.asarray(first["source_val"]["confusion"]).sum(axis=1)
    assert f"fResident {100 * source[5] / source.sum():.1f}" in md


@pytest.mark.parametrize("folder", [DATA / "records", REPO / "results" / "runs"])
def test_config_hashes_of_committed_records_are_pinned(folder):
    """Refactoring the config must not move a run directory: every committed record's config hashes to the
    hash it was written with, which names its directory."""
    from da.config import RunConfig

    paths = sorted(folder.glob("stage*-*/record.json"))
    assert len(paths) >= 10
    for path in paths:
        rec = json.loads(path.read_text())
        assert RunConfig.from_record(rec["config"]).config_hash() == rec["config_hash"], path
        if "compile_prefix" not in rec["config"]:  # made before issue 15: today's defaults are another protocol
            assert RunConfig.from_dict(rec["config"]).config_hash() != rec["config_hash"], path
        assert path.parent.name == f"stage{rec['stage']}-{rec['config_hash']}"


def test_every_committed_record_rehashes_to_its_directory_name():
    """Issue 28: every committed record, classification and detection, in every results folder: its config hashes
    to the hash it was written with, which names its directory."""
    from da.config import RunConfig
    from da.detection.config import DetectionConfig

    for pattern, config, least in (("stage*-*", RunConfig.from_record, 500), ("det-*", DetectionConfig.from_dict, 8)):
        paths = sorted((REPO / "results").glob(f"**/{pattern}/record.json"))
        assert len(paths) >= least, pattern
        for path in paths:
            rec = json.loads(path.read_text())
            assert config(rec["config"]).config_hash() == rec["config_hash"], path
            assert path.parent.name == (f"stage{rec['stage']}-" if "stage" in rec else "det-") + rec["config_hash"], path


def _with_scores(tmp_path):
    """The committed records as schema-2 records whose 'im' score is the target accuracy itself and whose
    'entropy' score is its negation: a perfect and a perfectly wrong validator."""
    shutil.copytree(DATA / "records", tmp_path / "runs")
    for path in (tmp_path / "runs").glob("stage2-*/record.json"):
        rec = json.loads(path.read_text())
        rec["schema_version"] = 2
        for e in rec["epochs"]:
            acc = e["target_test"]["accuracy"]
            e["scores"] = {name: 0.0 for name in scored_validator_names()}
            e["scores"].update(source_acc=e["source_val"]["accuracy"], im=acc, entropy=-acc)
        path.write_text(json.dumps(rec))
    return tmp_path / "runs"


def test_reselect_and_validator_table(tmp_path):
    from da.results.selection import reselect, validator_table

    runs = load_runs(_with_scores(tmp_path))
    same = reselect(runs, "source_acc")
    assert list(same["target_acc"]) == list(runs["target_acc"]) and list(same["selected_epoch"]) == list(runs["selected_epoch"])
    by_im = reselect(runs, "im")
    assert np.allclose(by_im["target_acc"], runs["oracle_acc"])
    table = validator_table(runs).set_index("validator")
    assert table.loc["im", "gap_to_oracle"] == pytest.approx(0.0) and table.loc["im", "spearman"] == pytest.approx(1.0)
    assert table.loc["entropy", "spearman"] == pytest.approx(-1.0)
    assert table.loc["source_acc", "selected_acc"] == pytest.approx(runs["target_acc"].mean())
    worst = [min(e["target_test"]["accuracy"] for e in r["epochs"]) * 100 for r in runs["record"]]
    assert table.loc["entropy", "selected_acc"] == pytest.approx(np.mean(worst))


def test_tables_never_pool_two_versions_of_a_validator(tmp_path):
    from da.results.figures import validator_data
    from da.results.selection import MixedVersions, reselect, validator_table

    runs_dir = _with_scores(tmp_path)
    paths = sorted(runs_dir.glob("stage2-*/record.json"))
    rec = json.loads(paths[0].read_text())
    rec["validator_versions"] = {"im": 2}  # the others keep no versions: version 1
    paths[0].write_text(json.dumps(rec))
    runs = load_runs(runs_dir)
    with pytest.raises(MixedVersions, match=r"'im' scores of these runs come from 2 versions .*version 1: .*version 2: "):
        reselect(runs, "im")
    table = validator_table(runs)  # the pooled table leaves it out and names it
    assert "im" not in set(table["validator"]) and table.attrs["mixed_versions"] == ["im", "rank"]  # rank averages im
    assert "entropy" in set(table["validator"])
    assert "im" not in {v["validator"] for v in validator_data(runs)["validators"]}  # left out of the figure too
    assert len(reselect(runs, "entropy")) == len(runs)  # the other validators are one version: pooled
    for path in paths:  # every record made with version 2: pooled, and the table says which version
        r = json.loads(path.read_text())
        r["validator_versions"] = {"im": 2}
        path.write_text(json.dumps(r))
    table = validator_table(load_runs(runs_dir))
    assert "im" in set(table["validator"]) and table.attrs["versions"] == {"im": 2} and not table.attrs["mixed_versions"]
    rec["validator_versions"] = {"im": None}  # resumed across the change: one run's own scores mix
    paths[0].write_text(json.dumps(rec))
    with pytest.raises(MixedVersions, match="mix two versions"):
        reselect(load_runs(runs_dir), "im")


def test_tables_selection_flag(tmp_path):
    runs_dir = _with_scores(tmp_path)
    res = subprocess.run([sys.executable, str(REPO / "experiments" / "tables.py"), "--runs", str(runs_dir),
                          "--out", str(tmp_path / "out"), "--no-figures", "--selection", "im"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "(im)" in (tmp_path / "out" / "tables" / "ablation.md").read_text()
    vt = (tmp_path / "out" / "tables" / "validators.md").read_text()
    assert "| im |" in vt and "| rank |" in vt
    # version-1 records know only source-val accuracy: another rule is refused, naming a run
    res = subprocess.run([sys.executable, str(REPO / "experiments" / "tables.py"), "--runs", str(DATA / "records"),
                          "--out", str(tmp_path / "v1"), "--no-figures", "--selection", "snd"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "validator 'snd' has no score" in res.stderr and "stage2-" in res.stderr


def test_baseline_comparison_matches_groups_on_every_factor():
    from da.results.tables import baseline_comparison

    runs = load_runs(DATA / "records")
    shifted = runs.assign(target_acc=runs["target_acc"] - 1.0)  # the same runs, one point lower
    table, factors = baseline_comparison(runs, shifted)
    assert factors == ["stages", "method"] or set(factors) >= {"stages", "method"}
    assert len(table) == runs.groupby(["stages", "method", "cls_loss"]).ngroups
    for _, row in table.iterrows():
        same = (runs["stages"] == row["stages"]) & (runs["method"] == row["method"])
        if "cls_loss" in row:
            same &= runs["cls_loss"] == row["cls_loss"]
        values = runs[same]["target_acc"].to_numpy()
        assert row["diff"] == pytest.approx(1.0)
        assert row["mean"] == pytest.approx(values.mean()) and row["base_mean"] == pytest.approx(values.mean() - 1)
        assert row["std"] == pytest.approx(np.std(values, ddof=1))
        assert row["within_1sd"] == (1.0 <= np.std(values, ddof=1))
    only_stage2 = baseline_comparison(runs[runs["stages"] == 2], shifted)[0]
    assert set(only_stage2["method"]) == set(runs[runs["stages"] == 2]["method"])  # not matched to stage-1 rows
    assert np.allclose(only_stage2["diff"], 1.0)


def _gap_runs(shot_em=(80.0, 82.0), extra=()):
    """Hand-made runs of the gap comparison: source-only, the reference, SHOT and SHOT with a prior
    estimate, two seeds each, with confusion matrices of 3 classes whose cell (1, 0) is the big confusion."""
    import pandas as pd

    from da.results.load import group_hash

    variants = [({"method": "source_only"}, [60.0, 62.0]),
                ({"method": "source_only", "target_labeled_fraction": 1.0}, [90.0, 92.0]),
                ({"method": "shot"}, [75.0, 77.0]),
                ({"method": "shot", "prior": "em"}, list(shot_em)), *extra]
    rows = []
    for fields, accs in variants:
        for seed, acc in enumerate(accs):
            cfg = RunConfig(seed=seed, **fields).to_dict()
            confused = 40 - int(acc / 4)  # of 50 images of class 1, this many predicted as class 0
            prior = ({"estimator": "em", "estimate": [0.5, 0.3, 0.2], "true": [0.6, 0.3, 0.1], "l1_error": 0.2 + seed / 10,
                      "target_test": {"accuracy": (acc + 1) / 100, "macro_f1": 0.5}} if fields.get("prior") else None)
            record = {"classes": ["a", "b", "c"], "selected_epoch": 1,
                      "epochs": [{"prior": prior} if prior else {}],
                      "target_test": {"confusion": [[50, 0, 0], [confused, 50 - confused, 0], [0, 5, 45]]}}
            rows.append({**{k: (json.dumps(v) if isinstance(v, list) else v) for k, v in cfg.items()},
                         "target_acc": acc, "target_f1": acc - 5, "selected_epoch": 1,
                         "group": group_hash(cfg), "record": record})
    return pd.DataFrame(rows)


def test_gap_closed_prior_columns_and_confusions_recomputed_by_hand():
    from da.results.gap import confusion_pairs, confusion_table, gap_table
    from da.results.tables import render_markdown

    table, factors = gap_table(_gap_runs(), expected_seeds=2)
    assert factors[:3] == ["method", "prior", "target_labeled_fraction"]
    rows = {(r["method"], r["prior"], r["target_labeled_fraction"]): r for _, r in table.iterrows()}
    so, ref = 61.0, 91.0
    shot, shot_em = rows[("shot", "", 0.0)], rows[("shot", "em", 0.0)]
    assert shot["target_acc_gain"] == 76.0 - so and shot["gap_closed"] == pytest.approx(100 * (76 - so) / (ref - so))
    assert shot_em["gap_closed"] == pytest.approx(100 * (81 - so) / (ref - so))
    assert shot_em["target_acc_corrected_mean"] == pytest.approx(82.0)
    assert shot_em["prior_l1_mean"] == pytest.approx(0.25) and np.isnan(shot["prior_l1_mean"])
    for key in (("source_only", "", 0.0), ("source_only", "", 1.0)):
        assert np.isnan(rows[key]["gap_closed"])
    text = render_markdown(table, factors)
    reference_line = next(line for line in text.splitlines() if "reference, uses target labels" in line)
    assert "**" not in reference_line  # the reference is no contender for the best value
    # shot+em: best accuracy, 5 points above shot in both seeds (shown: bold); gap closed 20/30
    assert "**81.0 ± 1.4**" in text and "| 67 |" in text
    # 5 and 7 points above shot in its two seeds: the 95 % interval (t with 1 d.f.) includes 0, so no bold
    unshown = render_markdown(*gap_table(_gap_runs(shot_em=(80.0, 84.0)), expected_seeds=2))
    assert "82.0 ± 2.8" in unshown and "**82.0" not in unshown
    assert "uniform" in text
    assert confusion_pairs(_gap_runs(), count=1) == [("b", "a")]
    conf, _ = confusion_table(_gap_runs(), [("b", "a")], expected_seeds=2)
    first = conf.iloc[0]  # source-only: 40 - int(60 / 4) = 25 and 40 - int(62 / 4) = 25 of 50 confused
    assert first["conf_b_a_mean"] == pytest.approx(100 * 25 / 50)
    assert first["recall_b_mean"] == pytest.approx(100 * (50 - 25) / 50)
    # a method's own setting off its default (AaD's K) still finds the anchors, which have no such setting
    table, factors = gap_table(_gap_runs(extra=[({"method": "aad", "aad_k": 3}, [70.0, 74.0])]), expected_seeds=2)
    assert "aad_k" in factors
    aad = table[table["method"] == "aad"].iloc[0]
    assert aad["target_acc_gain"] == 72.0 - so and aad["gap_closed"] == pytest.approx(100 * 11 / 30)
    lines = render_markdown(table, factors).splitlines()
    assert next(line for line in lines if line.startswith("| aad |")).split(" | ")[factors.index("aad_k")] == "3"
    # rows whose method does not read aad_k show no value for it
    assert next(line for line in lines if line.startswith("| shot |")).split(" | ")[factors.index("aad_k")] == "–"
    with pytest.raises(ValueError, match="no target-supervised reference"):
        frame = _gap_runs()
        gap_table(frame[frame["target_labeled_fraction"] == 0])


def test_readme_headline_recomputes_from_the_committed_records(tmp_path, monkeypatch):
    """Every number of the README's headline block (both pairs under the protocol) is what the committed
    records give: the block is regenerated from them (da-tables --headline) and compared character for character,
    with the README and with results/headline.md."""
    from da.results.headline import headline_markdown, readme_block

    block = headline_markdown(REPO)
    assert readme_block((REPO / "README.md").read_text()) == block
    assert (REPO / "results" / "headline.md").read_text() == block
    from da.scripts.tables import main

    monkeypatch.chdir(REPO)
    assert main(["--headline", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "headline.md").read_text() == block


@pytest.mark.parametrize("pair,folders", [
    ("AID-RSSCN7", ["methods/runs", "fast_path/runs", "gap/runs", "gap_shifted/runs", "gap_splits/runs", "budget/runs"]),
    ("RSSCN7-AID", ["rsscn7_aid/runs", "rsscn7_aid_splits/runs", "rsscn7_aid_budget/runs"])])
def test_committed_validator_tables_per_pair_regenerate(tmp_path, monkeypatch, pair, folders):
    present = [f for f in folders if (REPO / "results" / f).is_dir()]
    args = [a for f in present for a in ("--validators-from", f"results/{f}")]
    from da.scripts.tables import main

    monkeypatch.chdir(REPO)
    assert main([*args, "--out", str(tmp_path)]) == 0
    committed = REPO / "results" / "pairs" / pair / "tables" / "validators.md"
    assert (tmp_path / "tables" / "validators.md").read_text() == committed.read_text()


def test_tables_copied_into_results_readme_are_the_committed_files():
    """results/README.md copies tables between `<!-- from: PATH -->` and `<!-- end -->`: each copy is the
    table of that committed file (which the tests above regenerate from the records), character for character."""
    import re

    text = (REPO / "results" / "README.md").read_text()
    blocks = re.findall(r"<!-- from: (\S+) -->\n(.*?)\n<!-- end -->", text, flags=re.S)
    assert len(blocks) >= 2 and len(blocks) == text.count("<!-- from: ")
    for path, copy in blocks:
        lines = (REPO / "results" / path).read_text().splitlines()
        table = "\n".join(lines[next(i for i, line in enumerate(lines) if line.startswith("|")):]).rstrip("\n")
        assert copy == table, path


def test_a_validator_newer_than_some_records_is_left_out_of_the_validator_table_and_named(tmp_path, monkeypatch):
    from da.scripts.tables import write_validator_tables
    from da.selection import REGISTRY, Validator

    class Newer(Validator):
        name = "newer_cls_test"

        def score(self, out):
            return 0.0

    runs = load_runs(REPO / "results" / "rsscn7_aid" / "runs", strict=True)
    monkeypatch.setitem(REGISTRY, Newer.name, Newer)
    write_validator_tables(runs, tmp_path, "these runs")
    text = (tmp_path / "validators.md").read_text()
    committed = (REPO / "results" / "rsscn7_aid" / "tables" / "validators.md").read_text()
    assert text == committed  # newer than every record: nothing to compare, nothing to say

    first = copy.deepcopy(runs["record"].iloc[0])
    first["epochs"][0]["scores"]["newer_cls_test"] = 0.0
    runs["record"] = [first] + list(runs["record"].iloc[1:])
    write_validator_tables(runs, tmp_path, "these runs")
    text = (tmp_path / "validators.md").read_text()
    assert "Left out: newer_cls_test, which some of these records have no score for" in text
    assert "| newer_cls_test" not in text and "| snd |" in text.replace(" (control)", "")
    assert text.split("\n\n", 1)[1] == committed.split("\n\n", 1)[1]  # the rest of the table is unchanged


def test_figures_never_average_two_settings_and_pick_their_t_sne_panels(tmp_path):
    """Issue 31: the bar chart averaged two mcc_weight values into one bar; the t-SNE showed the first 8
    methods by name; 13 methods repeated colours."""
    import pandas as pd

    from da.results import figures
    from da.results.load import group_hash

    runs = _gap_runs()
    extra = []
    for weight, accs in ((1.0, [70.0, 71.0]), (0.5, [78.0, 79.0])):
        for seed, acc in enumerate(accs):
            cfg = RunConfig(seed=seed, method="mcc", mcc_weight=weight).to_dict()
            extra.append({**{k: (json.dumps(v) if isinstance(v, list) else v) for k, v in cfg.items()},
                          "target_acc": acc, "target_f1": acc - 5, "selected_epoch": 1, "group": group_hash(cfg),
                          "record": {}})
    runs = pd.concat([runs, pd.DataFrame(extra)], ignore_index=True)
    labels = figures.config_labels(runs)
    assert {"mcc, mcc_weight 0.5", "mcc, mcc_weight 1.0"} <= set(labels)
    assert labels.nunique() == runs["group"].nunique()  # one label per configuration, never two in one bar
    assert len(set(figures.palette(13))) == 13
    panels, left_out = figures.tsne_panels(runs)
    shown = [p["label"] for p in panels]
    assert shown[0].startswith("source_only") and shown[-1].startswith("reference")
    assert "shot" in set(labels) and "shot, mcc_weight 1.0" not in set(labels)  # named where it is read only
    means = runs.assign(label=labels).groupby("label")["target_acc"].mean()
    free = means[[not (lab.startswith(("source_only", "reference"))) for lab in means.index]]
    assert shown[1] == free.idxmax() and set(left_out) == set(means.index) - set(shown)
    paths = figures.accuracy_by_method(runs, tmp_path)
    assert all(p.exists() for p in paths)


def test_harm_table_against_the_records():
    """Issue 29's do-no-harm check: runs below source-only and the worst class drop, recomputed here."""
    from da.results.harm import CLASS_HARM, harm_table

    runs = load_runs(REPO / "results" / "rsscn7_aid" / "runs", strict=True)
    runs = runs[runs["prior"] == ""]
    table = harm_table(runs).set_index("method")
    so = {(r["split_seed"], r["seed"]): r for _, r in runs[(runs["method"] == "source_only")
                                                           & (runs["target_labeled_fraction"] == 0)].iterrows()}

    def recall(rec):
        m = np.asarray(rec["target_test"]["confusion"], dtype=float)
        return 100 * np.diag(m) / m.sum(1)

    for method in ("mcc", "shot+mcc", "cdan"):
        g = runs[runs["method"] == method]
        gains = [r["target_acc"] - so[(r["split_seed"], r["seed"])]["target_acc"] for _, r in g.iterrows()]
        drops = [recall(r["record"]) - recall(so[(r["split_seed"], r["seed"])]["record"]) for _, r in g.iterrows()]
        row = table.loc[method]
        assert row["runs"] == 3 and row["losing"] == sum(x < 0 for x in gains)
        assert row["min_gain"] == pytest.approx(min(gains))
        assert row["worst"]["points"] == pytest.approx(min(d.min() for d in drops))
        assert row["class_drops"] == sum(int((d < -CLASS_HARM).sum()) for d in drops)
    assert "reference" not in " ".join(table.index) and "source_only" not in table.index


def test_harm_and_confusions_read_the_reported_epochs_confusion_where_records_keep_one_per_epoch():
    """Runs trained with one rule and reported with another: where each epoch's record keeps its confusion matrix
    (runs made since it does), harm and the confusion table are those of the reported epoch, not the kept one."""
    import pandas as pd

    from da.results.gap import confusion_table
    from da.results.harm import harm_table
    from da.results.load import group_hash
    from da.results.selection import reselect

    good, bad = [[10, 0], [0, 10]], [[2, 8], [0, 10]]  # bad: class a moved wholesale to b
    rows = []
    for fields, per_epoch in (({"method": "source_only"}, [good, good]),
                              ({"method": "source_only", "target_labeled_fraction": 1.0}, [good, good]),
                              ({"method": "mcc"}, [good, bad])):  # kept in training: epoch 1; last: epoch 2
        cfg = RunConfig(seed=0, **fields).to_dict()
        epochs = [{"epoch": i + 1, "scores": {"source_acc": 0.9 - i / 10},
                   "target_test": {"accuracy": np.trace(m) / 20, "macro_f1": 0.5, "confusion": m}}
                  for i, m in enumerate(per_epoch)]
        record = {"classes": ["a", "b"], "selected_epoch": 1, "config": cfg, "epochs": epochs, "schema_version": 2,
                  "target_test": {"confusion": per_epoch[0]}}
        rows.append({**{k: (json.dumps(v) if isinstance(v, list) else v) for k, v in cfg.items()},
                     "target_acc": 100.0, "target_f1": 50.0, "selected_epoch": 1, "group": group_hash(cfg),
                     "record": record, "run_dir": "x"})
    runs = pd.DataFrame(rows)
    kept = harm_table(runs).iloc[0]
    assert kept["worst"]["points"] == 0.0 and kept["class_drops"] == 0
    last = reselect(runs, "last")
    assert list(last["selected_epoch"]) == [2, 2, 2]
    worst = harm_table(last).iloc[0]["worst"]
    assert worst["class"] == "a" and worst["points"] == -80.0 and worst["went_to"] == "b" and worst["share"] == 80.0
    table, _ = confusion_table(last, [("a", "b")])
    assert table.set_index("method").loc["mcc", "conf_a_b_mean"] == 80.0


def test_per_class_tables_leave_out_whole_configurations_without_the_reported_epochs_confusion():
    """Records made before each epoch kept its confusion matrix, reported at another epoch than the one kept in
    training, have no confusion at the reported epoch: their configuration is left out whole (a subset of its
    runs would be a biased one) and named, and the others keep their per-class rows."""
    import pandas as pd

    from da.results.gap import confusion_known, with_known_confusions
    from da.results.load import group_hash
    from da.results.selection import reselect

    m = [[10, 0], [0, 10]]
    rows = []
    # (configuration, seed, per-epoch confusions kept?, epoch kept in training)
    for fields, seed, per_epoch, kept in (
            ({"method": "source_only"}, 0, True, 1), ({"method": "source_only"}, 1, False, 2),  # old, but kept = last
            ({"method": "mcc"}, 0, True, 1), ({"method": "mcc"}, 1, False, 1),  # old and kept != last: no confusion
            ({"method": "im"}, 0, True, 1), ({"method": "im"}, 1, True, 2)):
        cfg = RunConfig(seed=seed, **fields).to_dict()
        epochs = [{"epoch": i, "scores": {"source_acc": 0.5},
                   "target_test": {"accuracy": 1.0, "macro_f1": 1.0, **({"confusion": m} if per_epoch else {})}}
                  for i in (1, 2)]
        record = {"classes": ["a", "b"], "selected_epoch": kept, "config": cfg, "epochs": epochs,
                  "schema_version": 2, "target_test": {"confusion": m}}
        rows.append({**{k: (json.dumps(v) if isinstance(v, list) else v) for k, v in cfg.items()},
                     "target_acc": 100.0, "target_f1": 100.0, "selected_epoch": kept, "group": group_hash(cfg),
                     "record": record, "run_dir": "x"})
    last = reselect(pd.DataFrame(rows), "last")
    assert list(confusion_known(last)) == [True, True, True, False, True, True]
    known, left_out = with_known_confusions(last)
    assert sorted(known["method"]) == ["im", "im", "source_only", "source_only"]
    assert left_out == ["mcc"]
    everything, none_left = with_known_confusions(pd.DataFrame(rows))  # each run's own epoch: all known
    assert len(everything) == 6 and none_left == []


def test_anchors_ignore_adapt_from_epoch_only_where_they_have_no_prior():
    """Source-only without a prior trains the same at every adapt_from_epoch, so it anchors a method's row at any
    value; source-only with a prior reads it (the prior weights its loss from that epoch), so it must match."""
    import pandas as pd

    from da.results.tables import anchor_rows

    anchors = pd.DataFrame([{"method": "source_only", "prior": "", "adapt_from_epoch": 0, "acc": 68.4},
                            {"method": "source_only", "prior": "em", "adapt_from_epoch": 0, "acc": 65.2},
                            {"method": "source_only", "prior": "em", "adapt_from_epoch": 1, "acc": 68.7}])
    factors = ["prior", "adapt_from_epoch"]
    assert list(anchor_rows(anchors, {"prior": "", "adapt_from_epoch": 1}, factors)["acc"]) == [68.4]
    assert list(anchor_rows(anchors, {"prior": "em", "adapt_from_epoch": 1}, factors)["acc"]) == [68.7]
    assert list(anchor_rows(anchors.iloc[:2], {"prior": "em", "adapt_from_epoch": 1}, factors)["acc"]) == []
    both = pd.concat([anchors, pd.DataFrame([{"method": "source_only", "prior": "", "adapt_from_epoch": 1, "acc": 1.0}])])
    assert list(anchor_rows(both, {"prior": "", "adapt_from_epoch": 1}, factors)["acc"]) == [1.0, 68.4]  # exact first


def test_dev_version_2_section_recomputes_from_the_records():
    """results/README.md's DEV section: the DEV rows of the 15 committed gap records (version 1) and of their
    reruns (version 2), and how far the reruns are from the records."""
    from da.results.selection import validator_table
    from da.scripts.tables import selected_runs

    text = (REPO / "results" / "README.md").read_text()
    rows = {}
    for version, folder in ((1, "gap"), (2, "dev_rescore")):
        runs = selected_runs(str(REPO / "results" / folder / "runs"), ["dev_rescore"], None, strict=True)
        assert len(runs) == 15
        dev = validator_table(runs).set_index("validator").loc["dev"]
        low, high = dev["vs_last"].interval()
        rows[version] = (f"| {dev['selected_acc']:.1f} ± {dev['selected_acc_std']:.1f} | {dev['gap_to_oracle']:.2f} | "
                         f"{dev['spearman']:+.3f} | {dev['vs_last'].mean:+.2f} [{low:+.2f}, {high:+.2f}] |")
        assert rows[version] in text, rows[version]
    assert high < 0  # version 2's interval lies below 0: never the protocol's choice
    biggest, finals, identical = 0.0, [], 0
    for path in sorted((REPO / "results" / "dev_rescore" / "runs").glob("stage2-*/record.json")):
        new = json.loads(path.read_text())
        old = json.loads((REPO / "results" / "gap" / "runs" / path.parent.name / "record.json").read_text())
        diffs = [100 * abs(a["target_test"]["accuracy"] - b["target_test"]["accuracy"]) for a, b in zip(old["epochs"], new["epochs"])]
        same = all(a["loss"] == b["loss"] and a["source_val"] == b["source_val"]
                   and all(b["scores"][k] == v for k, v in a["scores"].items() if k != "dev")  # drift is newer than the records
                   and a["target_test"]["accuracy"] == b["target_test"]["accuracy"] for a, b in zip(old["epochs"], new["epochs"]))
        if same:
            identical += 1
            assert new["config"]["method"] in ("dann", "cdan") and all(a["scores"]["dev"] != b["scores"]["dev"] for a, b in zip(old["epochs"], new["epochs"]))
        else:
            biggest = max(biggest, max(diffs))
            finals.append(100 * (new["target_test"]["accuracy"] - old["target_test"]["accuracy"]))
    assert identical == 6 and len(finals) == 9
    assert f"at most {biggest:.2f} points" in text
    assert f"by {min(finals):.2f} to +{max(finals):.2f}" in text
    hours = sum(json.loads(p.read_text())["wall_time_s"] for p in (REPO / "results" / "dev_rescore" / "runs").glob("stage2-*/record.json")) / 3600
    assert f"The runs ({hours:.2f} core-hours of the records' wall times" in text


def test_ema_teacher_section_recomputes_from_the_records():
    """results/README.md's EMA-teacher section: each number it states is in the committed table it reads from
    (which the regeneration test rebuilds from the records), the teacher at 0.95 labels nothing on AID -> RSSCN7
    (its runs are MCC's, number for number), and the reruns of `consistency` reproduce the committed runs."""
    text = (REPO / "results" / "README.md").read_text()
    section = text[text.index("### An EMA teacher"):text.index("## The prior-aware variant")]
    quoted = {"consistency_ema/tables/confusions.md": ["46.4 ± 0.5", "65.6 ± 8.4", "70.3 ± 1.0", "58.3 ± 3.6",
                                                       "71.7 ± 6.0", "39.7 ± 3.5", "24.7 ± 7.9", "19.7 ± 8.6"],
              "consistency_ema/tables/harm.md": [
                  "| fixmatch+mcc, fixmatch_ema 0.0, fixmatch_relative True, fixmatch_threshold 0.9 | 3 | 2 | -3.6 | "
                  "aGrass -25.8 (split 0 / seed 1; now 36 % dRiverLake) | 3 |",
                  "| fixmatch+mcc, fixmatch_ema 0.0, fixmatch_relative False, fixmatch_threshold 0.95 | 3 | 0 | +0.8 | "
                  "gParking -17.5 (split 0 / seed 2; now 73 % cIndustry) | 0 |"],
              "consistency_ema/tables/gap.md": ["75.0 ± 1.3", "75.4 ± 1.0", "| 37 |", "70.8 ± 1.7"],
              "consistency_ema/tables/paired.md": ["| +0.4 ± 0.4 | [-0.6, +1.4] |"],
              "rsscn7_aid_consistency_ema/tables/gap.md": ["84.2 ± 0.6", "| 46 |", "85.6 ± 0.1", "| 53 |"],
              "rsscn7_aid_consistency_ema/tables/paired.md": ["| +1.4 ± 0.6 | [+0.0, +2.8] |"]}
    for path, cells in quoted.items():
        table = (REPO / "results" / path).read_text()
        for cell in cells:
            assert cell in table, (path, cell)
    for claim in ("46.4 ± 0.5 %", "65.6 ± 8.4", "70.3 ± 1.0 %", "58.3 ± 3.6 / 71.7 ± 6.0 %", "39.7 -> 24.7 / 19.7 %",
                  "2 of 3 runs", "25.8 points", "36 % of its", "(smallest gain +0.8 points)", "up to 17.5 points",
                  "(73 % of its images to cIndustry)", "(75.0 ± 1.3 %)", "75.4 ± 1.0 % (37 % of the",
                  "+0.4 [-0.6, +1.4]", "84.2 ± 0.6 % (46 %)", "85.6 ± 0.1 (53 %)", "-1.4 [-2.8, -0.0]", "70.8 %"):
        assert claim in section, claim
    records = {}
    for path in (REPO / "results" / "consistency_ema" / "runs").glob("stage2-*/record.json"):
        rec = json.loads(path.read_text())
        c = rec["config"]
        own = (c.get("fixmatch_ema", 0.0), c.get("fixmatch_relative")) if "fixmatch" in c["method"] else ()
        records[(c["method"], *own, rec["seed"])] = rec
    for seed in (0, 1, 2):
        ema, mcc = records[("fixmatch+mcc", 0.999, False, seed)], records[("mcc", seed)]
        assert all(e["loss"]["fixmatch"] == 0 for e in ema["epochs"])  # no weak view passes 0.95
        assert [e["target_test"]["accuracy"] for e in ema["epochs"]] == [e["target_test"]["accuracy"] for e in mcc["epochs"]]
        relative = records[("fixmatch+mcc", 0.999, True, seed)]  # labels some weak views in the first epoch only
        assert relative["epochs"][0]["loss"]["fixmatch"] > 0 and all(e["loss"]["fixmatch"] == 0 for e in relative["epochs"][1:])
    reruns = [rec for key, rec in records.items() if key[0].startswith("fixmatch") and key[1] == 0.0]
    assert len(reruns) == 12
    for rerun in reruns:  # every FixMatch rerun: the committed run's per-epoch losses and accuracies
        committed = json.loads((REPO / "results" / "consistency" / "runs" / f"stage2-{rerun['config_hash'][:12]}" / "record.json").read_text())
        assert [(e["loss"], e["target_test"]["accuracy"]) for e in rerun["epochs"]] == \
            [(e["loss"], e["target_test"]["accuracy"]) for e in committed["epochs"]]


def test_harm_table_has_a_row_per_configuration_and_paired_refuses_two_configurations_pooled():
    """Two settings of one method are two rows of the harm table (they were once pooled, and the paired
    count then came from whichever run of a seed came last); `paired` itself refuses a pooled side."""
    import pandas as pd

    from da.results.harm import harm_table
    from da.results.load import group_hash
    from da.results.paired import paired

    good, bad = [[10, 0], [0, 10]], [[2, 8], [0, 10]]
    rows = []
    for fields, m, acc in (({"method": "source_only"}, good, 90.0),
                           ({"method": "source_only", "target_labeled_fraction": 1.0}, good, 95.0),
                           ({"method": "fixmatch", "fixmatch_threshold": 0.95}, good, 92.0),
                           ({"method": "fixmatch", "fixmatch_threshold": 0.5}, bad, 60.0)):
        for seed in (0, 1):
            cfg = RunConfig(seed=seed, **fields).to_dict()
            record = {"classes": ["a", "b"], "selected_epoch": 1, "config": cfg, "schema_version": 2,
                      "epochs": [{"epoch": 1, "target_test": {"accuracy": acc / 100, "confusion": m}}],
                      "target_test": {"confusion": m}}
            rows.append({**{k: (json.dumps(v) if isinstance(v, list) else v) for k, v in cfg.items()},
                         "target_acc": acc, "selected_epoch": 1, "group": group_hash(cfg), "record": record})
    runs = pd.DataFrame(rows)
    table = harm_table(runs).set_index("label")
    assert list(table.index) == ["fixmatch, fixmatch_threshold 0.5", "fixmatch, fixmatch_threshold 0.95"]
    assert table.loc["fixmatch, fixmatch_threshold 0.5", "losing"] == 2
    assert table.loc["fixmatch, fixmatch_threshold 0.95", "losing"] == 0
    assert table.loc["fixmatch, fixmatch_threshold 0.95", "worst"]["points"] == 0.0
    with pytest.raises(ValueError, match="two runs of split seed 0 and seed 0"):
        paired(runs[runs["method"] == "fixmatch"], runs[runs["method"] == "source_only"].iloc[:2])


def test_neighbours_and_strong_views_section_recomputes_from_the_records():
    """results/README.md's section on NRC, the 0.99 teacher and strong views: every number it states is in the
    committed table, record or benchmark it reads from, and the protocol's choices are what
    best_configurations gives on the committed candidates."""
    import re
    import warnings

    import pandas as pd

    from da.results.protocol import best_configurations, configuration
    from da.results.selection import reselect

    text = (REPO / "results" / "README.md").read_text()
    section = " ".join(text[text.index("### NRC, a faster teacher"):text.index("## The prior-aware variant")].split())
    res = REPO / "results"
    fm = "fixmatch+mcc, fixmatch_ema {}, fixmatch_relative {}, fixmatch_strong {}, fixmatch_threshold {}"
    best2, ra95, t99 = fm.format(0.0, False, "train", 0.95), fm.format(0.0, False, "randaugment", 0.95), fm.format(0.99, False, "train", 0.95)
    quoted = {
        "neighbours/tables/paired.md": ["| nrc − source-only | +3.9, +5.4, +5.1 | +4.8 ± 0.8 | [+2.9, +6.7] |",
                                        "| nrc+mcc − source-only | +6.3, +5.8, +7.1 | +6.4 ± 0.7 | [+4.8, +8.1] |",
                                        f"| {ra95} − source-only | +4.0, -1.2, -1.9 | +0.3 ± 3.3 | [-7.8, +8.4] |",
                                        "| +0.0 ± 1.9 | [-4.6, +4.7] |"],
        "rsscn7_aid_neighbours/tables/paired.md": ["| nrc − source-only | +3.9, +4.1, +5.2 | +4.4 ± 0.7 | [+2.6, +6.2] |",
                                                   "| nrc+mcc − source-only | +8.5, +6.4, +7.3 | +7.4 ± 1.0 | [+4.8, +10.0] |",
                                                   f"| {best2} − {t99} | +1.1, +0.3, +0.4 | +0.6 ± 0.5 | [-0.6, +1.8] |",
                                                   f"| {best2} − {ra95} | +1.3, +2.5, -0.5 | +1.1 ± 1.5 | [-2.6, +4.8] |"],
        "neighbours/tables/gap.md": ["| nrc+mcc | – | – | – | – | none | uniform | 74.9 ± 1.5 |", "| mcc | – | – | – | – | none | uniform | 75.0 ± 1.3 |",
                                     "| fixmatch+mcc | 0.99 | False | train | 0.95 | none | uniform | 73.6 ± 1.8 | 72.8 ± 1.9 | +5.1 | 28 |",
                                     "| fixmatch+mcc | 0.0 | False | train | 0.95 | none | uniform | 70.8 ± 1.7 | 69.3 ± 1.5 | +2.4 | 13 |",
                                     "| fixmatch+mcc | 0.0 | False | randaugment | 0.95 | none | uniform | 68.8 ± 2.1 |",
                                     "| fixmatch+mcc | 0.0 | True | randaugment | 0.9 | none | uniform | 68.5 ± 0.9 |"],
        "rsscn7_aid_neighbours/tables/gap.md": ["| nrc+mcc | – | – | – | – | none | uniform | 82.1 ± 0.5 |", "| mcc | – | – | – | – | none | uniform | 84.1 ± 0.3 |",
                                                "| fixmatch+mcc | 0.99 | False | train | 0.95 | none | uniform | 85.0 ± 0.6 | 83.6 ± 0.7 | +10.2 | 50 |",
                                                "| fixmatch+mcc | 0.0 | False | train | 0.95 | none | uniform | 85.6 ± 0.1 | 85.1 ± 1.2 | +10.8 | 53 |",
                                                "| fixmatch+mcc | 0.999 | False | train | 0.95 | none | uniform | 84.2 ± 0.6 | 82.8 ± 0.8 | +9.4 | 46 |",
                                                "| fixmatch+mcc | 0.0 | False | randaugment | 0.95 | none | uniform | 84.5 ± 1.5 |"],
        "neighbours/tables/confusions.md": ["| nrc | – | – | – | – | none | 38.9 ± 1.9 | 53.9 ± 3.2 |",
                                            "| source_only | – | – | – | – | none | 46.4 ± 0.5 |", "| mcc | – | – | – | – | none | 43.6 ± 1.7 |",
                                            "| all (reference, uses target labels) | 23.1 ± 1.3 |",
                                            "| fixmatch+mcc | 0.99 | False | train | 0.95 | none | 49.4 ± 2.5 |"],
        "neighbours/tables/harm.md": ["| nrc | 3 | 0 | +3.9 | aGrass -13.3 (split 0 / seed 0; now 28 % bField) | 0 |",
                                      "| nrc+mcc | 3 | 0 |", f"| {t99} | 3 | 0 | +3.1 |", f"| {ra95} | 3 | 2 |",
                                      f"| {fm.format(0.0, True, 'randaugment', 0.9)} | 3 | 2 |"],
        "rsscn7_aid_neighbours/tables/harm.md": ["| nrc | 3 | 0 |", "| nrc+mcc | 3 | 0 |"]}
    for path, cells in quoted.items():
        table = " ".join((res / path).read_text().split())
        for cell in cells:
            assert cell in table, (path, cell)
    for claim in ("(+4.8 [+2.9, +6.7] points on AID -> RSSCN7, +4.4 [+2.6, +6.2] on RSSCN7 -> AID; with MCC +6.4 [+4.8, +8.1] "
                  "and +7.4 [+4.8, +10.0])", "(74.9 against 75.0 %; 82.1 against 84.1 %)",
                  "gParking -> cIndustry 38.9 ± 1.9 % (source-only 46.4, MCC 43.6, the reference 23.1) and gParking recall 53.9 ± 3.2 %",
                  "(down 13.3 points in one run, 28 % of its images to bField;", "73.6 ± 1.8 % (28 % of the gap)",
                  "70.8 without a teacher and 75.0 at 0.999", "(smallest gain +3.1 points)", "back to 49.4 ± 2.5 %",
                  "(85.0 ± 0.6 %, 50 %; no teacher is +0.6 [-0.6, +1.8] points above it", "(68.8 ± 2.1 and 68.5 ± 0.9 %; +0.3 "
                  "[-7.8, +8.4] and +0.0 [-4.6, +4.7]; 2 of 3 runs below source-only", "(84.5 ± 1.5 against 85.6 ± 0.1 %, the "
                  "difference +1.1 [-2.6, +4.8]", "(85.6 %), which gives 70.8 % (13 % of the gap)", "(75.5 %, tied with SHOT + MCC + AdaBN",
                  "47 % over 3 split seeds", "(FixMatch + MCC, 53 %)", "(the teacher at 0.99: 50 % and 73.6 %; at 0.999: 46 % and 75.0 %)"):
        assert claim in section, claim
    # the protocol at one setting of a method, on each pair's committed candidates (a rerun counted once)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")

        def candidates(folders):
            return reselect(load_runs_of([res / f / "runs" for f in folders], strict=True), "last")

        second, first = candidates(["rsscn7_aid_half_gap", "rsscn7_aid_neighbours"]), candidates(["half_gap", "neighbours"])
    pick2, pick1 = best_configurations(second, 1)[0], best_configurations(first, 2)
    assert pick2.startswith(best2 + ",") and pick1[0].startswith("shot+mcc,") and pick1[1].startswith("shot+mcc+adabn,")
    mean = lambda runs, c: runs[runs.apply(configuration, axis=1) == c]["target_acc"].mean()
    assert f"({mean(second, pick2):.1f} %), which gives" in section and mean(first, pick1[0]) == pytest.approx(mean(first, pick1[1]))
    assert f"({mean(first, pick1[0]):.1f} %, tied" in section
    bench = (res / "benchmarks" / "epoch_consistency.txt").read_text()
    ratio = {m.group(1): m.group(2) for m in re.finditer(r"^(\S+)\s.*\s(\d+\.\d\d)x$", bench, re.M)}
    base = re.search(r"^source_only\s.*\s(\d+\.\d)s\s+1\.00x$", bench, re.M).group(1)
    assert (f"MCC takes {ratio['mcc']}x source-only's ({base} s), SHOT + MCC and NRC + MCC {ratio['shot+mcc']}x, "
            f"FixMatch + MCC {ratio['fixmatch+mcc']}x") in section and ratio["shot+mcc"] == ratio["nrc+mcc"]
    assert f"with the 0.99 teacher {ratio['fixmatch+mcc:fixmatch_ema=0.99']}x" in section
    assert f"with RandAugment views {ratio['fixmatch+mcc:fixmatch_strong=randaugment']}x" in section
    assert all(float(r) > 1.5 for name, r in ratio.items() if name != "source_only")
    for folder, target, images in (("neighbours", "RSSCN7", 1960), ("rsscn7_aid_neighbours", "AID", 2457)):
        runs = load_runs(res / folder / "runs", strict=True)
        strong = runs[runs["fixmatch_strong"] == "randaugment"]["record"]
        built = [r["data_time_s"] for r in strong if not r["cache_hits"]["target_train"]]
        assert len(built) == 1 and f"{built[0]:.1f} s for {target}" in section.replace("for AID's", "for AID")
        assert strong.iloc[0]["split_sizes"]["target_train"] == images
        waited = sorted(r["data_time_s"] for r in strong if r["cache_hits"]["target_train"])
        assert f"{waited[-1]:.1f}" in section.split("waited for them")[1][:20] and max(waited[:-1]) < 1.0


def test_target_batch_section_recomputes_from_the_records_and_the_benchmark():
    """results/README.md's section on 16 target images a step: the tables it copies, every paired difference,
    gap closed and cost ratio it states, from the committed records and benchmark files."""
    import re
    import warnings

    from da.results.paired import format_paired, paired
    from da.results.selection import reselect

    text = (REPO / "results" / "README.md").read_text()
    section = " ".join(text[text.index("## The cost of a step"):text.index("## LoRA on the second pair")].split())
    res = REPO / "results"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pairs = {f: reselect(load_runs(res / f / "runs", strict=True), "last")
                 for f in ("target_batch", "rsscn7_aid_target_batch")}
    diffs = {}
    for folder, runs in pairs.items():
        assert len(runs) == 18 and set(runs["seed"]) == {0, 1, 2}  # 6 at 16 beside half_gap's 12
        so = runs[(runs["method"] == "source_only") & (runs["target_labeled_fraction"] == 0)]
        ref = runs[(runs["method"] == "source_only") & (runs["target_labeled_fraction"] == 1)]["target_acc"].mean()
        for method in ("mcc", "shot+mcc"):
            at = {b: runs[(runs["method"] == method) & (runs["target_batch_size"] == b)] for b in (16, 32)}
            d = paired(at[32], at[16])
            diffs[folder, method] = d
            cells = format_paired(d)
            assert f"{d.mean:+.1f} {cells['interval']}" in section, (folder, method)
            closed = {b: round(100 * (at[b]["target_acc"].mean() - so["target_acc"].mean())
                               / (ref - so["target_acc"].mean())) for b in (16, 32)}
            if folder == "rsscn7_aid_target_batch":
                assert f"from {closed[32]} to {closed[16]} % ({'MCC' if method == 'mcc' else 'SHOT + MCC'})" in section
            else:
                assert f"{closed[32]} to {closed[16]} %" in section
    assert all(d.mean > 0 for d in diffs.values())  # "the smaller batch loses in all four comparisons"
    assert [k for k, d in diffs.items() if d.excludes_zero] == [("rsscn7_aid_target_batch", "shot+mcc")]
    shot16 = pairs["target_batch"]
    so = shot16[(shot16["method"] == "source_only") & (shot16["target_labeled_fraction"] == 0)]
    gain = paired(shot16[(shot16["method"] == "shot+mcc") & (shot16["target_batch_size"] == 16)], so)
    assert not gain.excludes_zero and f"({gain.mean:+.1f} {format_paired(gain)['interval']}; one seed gains only " \
                                      f"{min(gain.diffs):+.1f})" in section

    def ratios(name):
        bench = (res / "benchmarks" / name).read_text()
        found = {m.group(1): m.group(2) for m in re.finditer(r"^(\S+)\s.*\s(\d+\.\d\d)x$", bench, re.M)}
        return found, re.search(r"^source_only\s.*\s(\d+\.\d)s\s+1\.00x$", bench, re.M).group(1)

    now, base = ratios("epoch_target_batch.txt")
    first, _ = ratios("epoch_target_batch_first.txt")
    old, _ = ratios("epoch_consistency.txt")
    assert f"a source-only epoch takes {base} s" in section
    assert (f"MCC {now['mcc']}x and SHOT + MCC {now['shot+mcc']}x at 32 target images, "
            f"{now['mcc:target_batch_size=16']}x and {now['shot+mcc:target_batch_size=16']}x at 16") in section
    assert all(float(now[f"{m}:target_batch_size=16"]) <= 1.5 < float(now[m]) for m in ("mcc", "shot+mcc"))
    assert f"measured {first['mcc:target_batch_size=16']}x and {first['shot+mcc:target_batch_size=16']}x at 16" in section
    assert f"{old['mcc']}x and {old['shot+mcc']}x (`benchmarks/epoch_consistency.txt`) or {now['mcc']}x and {now['shot+mcc']}x" in section


def test_shifted_splits_section_recomputes_from_the_records():
    """results/README.md's section on the prior-aware variant over 3 split seeds: its paired differences and
    counts from the committed records."""
    import warnings

    from da.results.paired import format_paired, paired
    from da.results.selection import reselect

    text = (REPO / "results" / "README.md").read_text()
    section = " ".join(text[text.index("### On 3 split seeds (`shifted_splits/`)"):text.index("## The cost of a step")].split())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = reselect(load_runs(REPO / "results" / "shifted_splits" / "runs", strict=True), "last")
    plain = (runs["method"] == "source_only") & (runs["prior"] == "")
    so, ref = runs[plain & (runs["target_labeled_fraction"] == 0)], runs[plain & (runs["target_labeled_fraction"] == 1)]
    em = runs[(runs["method"] == "shot+mcc") & (runs["prior"] == "em")]
    uniform = runs[(runs["method"] == "shot+mcc") & (runs["prior"] == "")]
    assert len(so) == len(em) == len(uniform) == len(ref) == 9 and set(runs["split_seed"]) == {0, 1, 2}
    assert sorted(ref.groupby("split_seed").size()) == [3, 3, 3]
    d = paired(em, uniform)
    assert d.excludes_zero and all(x > 0 for x in d.diffs) and d.n == 9
    assert f"positive in 9 of 9 pairs, {format_paired(d)['mean']} points, 95 % interval {format_paired(d)['interval']}" in section
    for side, name in ((em, "with the prior"), (uniform, "without it")):
        g = paired(side, so)
        assert not g.excludes_zero and f"{name} {g.mean:+.1f} {format_paired(g)['interval']}" in section
    losses = [sum(x < 0 for x in paired(side, so).diffs) for side in (uniform, em)]
    assert f"loses to source-only in {losses[0]} of 9 runs, the prior-aware one in {losses[1]}" in section
    assert f"{len(ref)} runs, 3 per split seed" in section
    so_acc, ref_acc = so["target_acc"].mean(), ref["target_acc"].mean()
    gap = [round(100 * (side["target_acc"].mean() - so_acc) / (ref_acc - so_acc)) for side in (em, uniform)]
    assert f"gap closed above ({gap[0]} % and {gap[1]} %) divides by their mean" in section


def test_ablation_section_reads_its_committed_table():
    """results/README.md's ablation section: its table is the committed tables/ablation.md (which regenerates
    from the records, above) and the numbers of its reading recompute from that table."""
    table = (REPO / "results" / "tables" / "ablation.md").read_text().splitlines()
    text = (REPO / "results" / "README.md").read_text()
    section = text[text.index("## The ablation (`tables/ablation.md`)"):text.index("## Why alignment does not help here")]
    rows = {}
    for line in table:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 7 and cells[0] in ("1", "2"):
            assert line in section
            rows[(int(cells[0]), cells[1], cells[2])] = (float(cells[3].split(" ± ")[0]), cells[5], cells[6])
    assert len(rows) == 18 and all(seeds == "3" for _, _, seeds in rows.values())
    prose = " ".join(section.split())
    assert "Every row has 3 seeds" in prose
    mmd = [rows[(s, "mmd", loss)] for s in (1, 2) for loss in ("ce", "focal")]
    assert f"({min(m[0] for m in mmd):.1f}-{max(m[0] for m in mmd):.1f} %)" in prose
    losses = [-float(m[1]) for m in mmd]
    assert f"MMD loses {min(losses):.1f}-{max(losses):.1f} points with cross-entropy and focal loss" in prose
    one, two = rows[(1, "mmd", "ohem")][1], rows[(2, "mmd", "ohem")][1]
    assert f"ties source-only in one stage ({one}) and loses {-float(two):.1f} in two" in prose and float(one) == 0


def test_docs_results_ablation_rows_are_the_committed_table():
    """docs/results.md repeats the ablation table: each of its rows is a row of the committed tables/ablation.md."""
    committed = set((REPO / "results" / "tables" / "ablation.md").read_text().splitlines())
    rows = [line for line in (REPO / "docs" / "results.md").read_text().splitlines()
            if line.startswith("| 1 | ") or line.startswith("| 2 | ")]
    assert len(rows) == 18 and all(row in committed for row in rows)


def last_epoch_runs(*folders):
    """The committed runs of results/<folder>/runs (a run archived in two folders counted once), at the last epoch."""
    import warnings

    from da.results.selection import reselect

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return reselect(load_runs_of([REPO / "results" / f / "runs" for f in folders], strict=True), "last")


def results_readme_section(start: str, end: str) -> str:
    """The text of results/README.md from the heading ``start`` to the heading ``end``, whitespace collapsed."""
    text = (REPO / "results" / "README.md").read_text()
    return " ".join(text[text.index(start):text.index(end)].split())


def confusion_share(runs, truth, predicted):
    """The mean over ``runs`` of the share (%) of class ``truth``'s target-test images predicted as ``predicted``,
    from each run's confusion matrix at the reported epoch."""
    classes = runs["record"].iloc[0]["classes"]
    i, j = classes.index(truth), classes.index(predicted)
    return np.mean([100 * np.asarray(c)[i, j] / np.asarray(c)[i].sum() for c in runs["confusion"]])


def test_smoothing_section_recomputes_from_the_records():
    """results/README.md's section on label smoothing and each pair's choice on 3 split seeds: every paired
    difference, share of the gap and mean it states, and both protocol choices, from the committed records."""
    import warnings

    import pandas as pd

    from da.results.paired import format_paired, paired
    from da.results.protocol import best_configurations, configuration

    text = (REPO / "results" / "README.md").read_text()
    section = " ".join(text[text.index("## Label smoothing on the source"):text.index("## LoRA on the second pair")].split())
    res = REPO / "results"

    def rows(runs, method, smoothing=0.0, reference=False):
        return runs[(runs["method"] == method) & (runs["label_smoothing"] == smoothing) & (runs["prior"] == "")
                    & ((runs["target_labeled_fraction"] == 1) == reference)]

    def quoted(d):
        return f"{d.mean:+.1f} {format_paired(d)['interval']}"

    def closed(runs, method, smoothing):
        so, ref = (rows(runs, "source_only", smoothing, r)["target_acc"].mean() for r in (False, True))
        return round(100 * (rows(runs, method, smoothing)["target_acc"].mean() - so) / (ref - so))

    first, second = last_epoch_runs("smoothing"), last_epoch_runs("rsscn7_aid_smoothing")
    for runs in (first, second):  # 3 seeds of every configuration, the smoothed reference included
        assert runs.groupby(["method", "label_smoothing", "target_labeled_fraction"]).size().eq(3).all()
    lift = {(name, m): paired(rows(runs, m, 0.1), rows(runs, m)) for name, runs in (("first", first), ("second", second))
            for m in ("source_only", "mcc", "shot+mcc")}
    assert (f"raises source-only by {quoted(lift['second', 'source_only'])} points (paired per seed; MCC by "
            f"{quoted(lift['second', 'mcc'])}) and SHOT + MCC by {quoted(lift['second', 'shot+mcc'])}") in section
    assert lift["second", "source_only"].excludes_zero and lift["second", "mcc"].excludes_zero
    assert f"(SHOT + MCC {quoted(lift['first', 'shot+mcc'])}, source-only {quoted(lift['first', 'source_only'])})" in section
    assert not any(lift["first", m].excludes_zero for m in ("source_only", "mcc", "shot+mcc"))
    assert (f"SHOT + MCC {closed(second, 'shot+mcc', 0.0)} -> {closed(second, 'shot+mcc', 0.1)} %, MCC "
            f"{closed(second, 'mcc', 0.0)} -> {closed(second, 'mcc', 0.1)} %") in section
    assert f"{closed(first, 'shot+mcc', 0.0)} -> {closed(first, 'shot+mcc', 0.1)} % of the gap for SHOT + MCC" in section
    confusions = " ".join((res / "smoothing" / "tables" / "confusions.md").read_text().split())
    for cell in ("| shot+mcc | 0.0 | none | 42.8 ± 4.6 | 50.3 ± 5.9 | 25.3 ± 4.9 |",
                 "| shot+mcc | 0.1 | none | 42.8 ± 3.2 | 50.8 ± 4.6 | 26.7 ± 4.4 |", "| source_only | 0.0 | none | 46.4 ± 0.5 |"):
        assert cell in confusions, cell
    for folder in ("smoothing", "rsscn7_aid_smoothing", "rsscn7_aid_smoothing_splits"):
        harm = [line for line in (res / folder / "tables" / "harm.md").read_text().splitlines() if "label_smoothing 0.1 |" in line]
        assert harm and all(line.split("|")[3].strip() == "0" and line.split("|")[6].strip() == "0" for line in harm), folder
    assert "cIndustry -8.3 (split 0 / seed 0; now 32 % gParking)" in (res / "smoothing" / "tables" / "harm.md").read_text()
    # the protocol: each pair's best configuration on the other pair's candidates
    cands1, cands2 = last_epoch_runs("half_gap", "neighbours", "smoothing"), last_epoch_runs("rsscn7_aid_half_gap", "rsscn7_aid_neighbours", "rsscn7_aid_smoothing")
    mean = lambda runs, c: runs[runs.apply(configuration, axis=1) == c]["target_acc"].mean()
    pick1, pick2 = best_configurations(cands1, 3), best_configurations(cands2, 2)
    assert pick1[0].startswith("shot+mcc,") and pick1[0].endswith("label_smoothing 0.1")
    assert pick1[1].startswith("mcc,") and pick1[2].startswith("shot+mcc,") and "label_smoothing" not in pick1[2]
    assert f"({mean(cands1, pick1[0]):.1f} %, ahead of MCC with smoothing {mean(cands1, pick1[1]):.1f} and SHOT + MCC without it {mean(cands1, pick1[2]):.1f})" in section
    assert pick2[0].startswith("fixmatch+mcc,") and pick2[1] == pick1[0]
    assert mean(cands2, pick2[0]) == pytest.approx(mean(cands2, pick2[1])) and f"have {mean(cands2, pick2[0]):.2f} %" in section
    # SHOT + MCC with smoothing on RSSCN7 -> AID, 3 split seeds x 3 seeds
    splits = last_epoch_runs("rsscn7_aid_smoothing_splits")
    assert len(splits) == 54 and splits.groupby("split_seed").size().eq(18).all()
    shot = rows(splits, "shot+mcc", 0.1)
    gain = paired(shot, rows(splits, "source_only", 0.1))
    assert len(gain.diffs) == 9 and min(gain.diffs) > 0 and "9 of 9 runs above source-only" in section
    so, ref = (rows(splits, "source_only", 0.1, r)["target_acc"].mean() for r in (False, True))
    assert (f"**{closed(splits, 'shot+mcc', 0.1)} % of the gap on RSSCN7 -> AID** against its own recipe's anchors "
            f"({shot['target_acc'].mean():.1f} ± {shot['target_acc'].std():.1f} %; source-only {so:.1f}, the reference "
            f"{ref:.1f}), its gain over source-only {quoted(gain)} points") in section
    plain_so, plain_ref = (rows(splits, "source_only", 0.0, r)["target_acc"].mean() for r in (False, True))
    assert f"it is {round(100 * (shot['target_acc'].mean() - plain_so) / (plain_ref - plain_so))} %" in section
    assert f"the headline's SHOT + MCC {quoted(paired(shot, rows(splits, 'shot+mcc')))} points" in section
    assert closed(splits, "shot+mcc", 0.1) >= 50
    with warnings.catch_warnings():  # the caveat: split seed 2's stage 1, retrained, against the headline's
        warnings.simplefilter("ignore")
        ours, theirs = (load_runs(res / f / "runs", stage=1, strict=True) for f in ("rsscn7_aid_smoothing_splits", "rsscn7_aid_splits"))
    val = {name: r[r["split_seed"] == 2]["record"].iloc[0]["epochs"][-1]["source_val"]["accuracy"]
           for name, r in (("ours", ours), ("theirs", theirs))}
    assert val["ours"] != val["theirs"] and f"{100 * val['ours']:.1f} against {100 * val['theirs']:.1f} %" in section
    # FixMatch + MCC, the tie-break's choice, on AID -> RSSCN7, 3 split seeds x 3 seeds
    fix = last_epoch_runs("fixmatch_splits")
    assert len(fix) == 36 and fix.groupby("split_seed").size().eq(12).all()
    fm, so = rows(fix, "fixmatch+mcc"), rows(fix, "source_only")
    gain, behind = paired(fm, so), paired(fm, rows(fix, "shot+mcc"))
    assert min(gain.diffs) > 0 and max(behind.diffs) < 0 and behind.excludes_zero
    share = closed(fix, "fixmatch+mcc", 0.0)
    assert (f"FixMatch + MCC closes **{share} % of the gap on AID -> RSSCN7** ({fm['target_acc'].mean():.1f} ± "
            f"{fm['target_acc'].std():.1f} %), above source-only in 9 of 9 runs ({quoted(gain)} points)") in section
    assert f"in every one ({quoted(behind)}," in section
    assert (f"MCC reads {rows(fix, 'shot+mcc')['target_acc'].mean():.1f} % and {closed(fix, 'shot+mcc', 0.0)} %" in section)
    assert f"SHOT + MCC with smoothing: {mean(cands1, pick1[0]):.1f} % and {closed(first, 'shot+mcc', 0.1)} % of its recipe's gap" in section
    assert f"the best candidate on this pair's own split seed 0 {closed(first, 'shot+mcc', 0.1)} %" in section
    readme = " ".join((REPO / "README.md").read_text().split())
    assert (f"closes {closed(splits, 'shot+mcc', 0.1)} % of its recipe's gap there over 3 split seeds "
            f"({shot['target_acc'].mean():.1f} %)") in readme
    assert f"FixMatch + MCC at {fm['target_acc'].mean():.1f} % ({share} %)" in readme


def test_load_runs_of_counts_a_run_archived_twice_once(tmp_path):
    """A choice may cite two folders that hold the same run (a rerun archived for two sweeps): counted once."""
    one = sorted((DATA / "records").glob("stage2-*"))[0]
    shutil.copytree(one, tmp_path / "other" / one.name)
    alone = load_runs(DATA / "records")
    assert len(load_runs(tmp_path / "other")) == 1
    both = load_runs_of([DATA / "records", tmp_path / "other"])
    assert len(both) == len(alone) and sorted(both["config_hash"]) == sorted(alone["config_hash"])


def test_tie_section_recomputes_from_the_records():
    """results/README.md's "The tie read on 3 split seeds": the tie's reading on RSSCN7 -> AID's 9 runs per
    candidate, FixMatch + MCC's share there, and SHOT + MCC with smoothing on AID -> RSSCN7's 3 split seeds."""
    import warnings

    from da.results.paired import format_paired, paired
    from da.results.protocol import best_configurations, configuration
    from da.results.selection import reselect

    text = (REPO / "results" / "README.md").read_text()
    section = " ".join(text[text.index("### The tie read on 3 split seeds"):text.index("## LoRA on the second pair")].split())
    readme = " ".join((REPO / "README.md").read_text().split())
    res = REPO / "results"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        second = reselect(load_runs_of([res / f / "runs" for f in ("rsscn7_aid_smoothing_splits", "rsscn7_aid_fixmatch_splits")],
                                        strict=True), "last")
        first = reselect(load_runs(res / "smoothing_splits" / "runs", strict=True), "last")

    def rows(runs, method, smoothing=0.0, reference=False):
        return runs[(runs["method"] == method) & (runs["label_smoothing"] == smoothing) & (runs["prior"] == "")
                    & ((runs["target_labeled_fraction"] == 1) == reference)]

    def quoted(d):
        return f"{d.mean:+.1f} {format_paired(d)['interval']}"

    def anchors(runs, smoothing=0.0):
        return tuple(rows(runs, "source_only", smoothing, r)["target_acc"].mean() for r in (False, True))

    def closed(acc, so_ref):
        return round(100 * (acc - so_ref[0]) / (so_ref[1] - so_ref[0]))

    # the tie on RSSCN7 -> AID, 9 runs per candidate (3 split seeds x 3 seeds)
    free = second[(second["target_labeled_fraction"] == 0) & (second["method"] != "source_only")]
    assert free.groupby(free.apply(configuration, axis=1)).size().eq(9).all()
    means = free.groupby(free.apply(configuration, axis=1))["target_acc"].mean()
    order = best_configurations(second, 3)
    assert order[0].startswith("shot+mcc,") and order[0].endswith("label_smoothing 0.1") and order[1].startswith("fixmatch+mcc,")
    assert (f"SHOT + MCC with smoothing {means[order[0]]:.2f} %, FixMatch + MCC {means[order[1]]:.2f} %, SHOT + MCC without "
            f"smoothing {means[order[2]]:.2f} %") in section
    fm, shot2 = rows(second, "fixmatch+mcc"), rows(second, "shot+mcc", 0.1)
    margin = paired(shot2, fm)
    assert not margin.excludes_zero and f"paired per split seed and seed {quoted(margin)} points" in section
    assert f"({means[order[0]]:.2f} against {means[order[1]]:.2f} %, a margin whose interval includes 0)" in readme
    gain2 = paired(fm, rows(second, "source_only"))
    assert min(gain2.diffs) > 0 and len(gain2.diffs) == 9
    harm = [line.split("|") for line in (res / "rsscn7_aid_fixmatch_splits" / "tables" / "harm.md").read_text().splitlines()
            if line.startswith("| fixmatch+mcc |")]
    assert len(harm) == 1 and harm[0][3].strip() == "0" and harm[0][6].strip() == "0"  # no run below, no class drop > 20
    assert (f"FixMatch + MCC closes {closed(fm['target_acc'].mean(), anchors(second))} % of RSSCN7 -> AID's gap over 3 split "
            f"seeds ({fm['target_acc'].mean():.1f} ± {fm['target_acc'].std():.1f} %), {quoted(gain2)} points") in section
    # SHOT + MCC with smoothing on AID -> RSSCN7, 3 split seeds x 3 seeds
    assert len(first) == 54 and first.groupby("split_seed").size().eq(18).all()
    shot = rows(first, "shot+mcc", 0.1)
    acc, own, plain = shot["target_acc"].mean(), anchors(first, 0.1), anchors(first)
    gain, lift, so_lift = (paired(shot, rows(first, "source_only", 0.1)), paired(shot, rows(first, "shot+mcc")),
                           paired(rows(first, "source_only", 0.1), rows(first, "source_only")))
    assert closed(acc, own) < 50 and min(gain.diffs) > 0 and lift.excludes_zero and not so_lift.excludes_zero
    assert (f"closes **{closed(acc, own)} % of its recipe's gap on AID -> RSSCN7** over 3 split seeds ({acc:.1f} ± "
            f"{shot['target_acc'].std():.1f} %; source-only {own[0]:.1f}, the reference {own[1]:.1f}; half would be "
            f"{(own[0] + own[1]) / 2:.1f} %) and {closed(acc, plain)} % against the headline's unsmoothed anchors; its gain "
            f"over source-only {quoted(gain)} points per run, 9 of 9 runs above source-only (the smallest gain "
            f"{min(gain.diffs):+.1f}), and {quoted(lift)} over SHOT + MCC without smoothing") in section
    assert f"Smoothing does not move source-only here ({quoted(so_lift)})" in section
    # per class at the last epoch, from each record's last-epoch confusion matrix (not through da.results)
    def last_rates(runs):
        m = np.array([r["epochs"][-1]["target_test"]["confusion"] for r in runs["record"]], dtype=float)
        return 100 * m / m.sum(axis=2, keepdims=True)

    classes = first["record"].iloc[0]["classes"]
    gp, ci, bf, ag = (classes.index(c) for c in ("gParking", "cIndustry", "bField", "aGrass"))
    so, ad, ref = (last_rates(r) for r in (rows(first, "source_only", 0.1), shot, rows(first, "source_only", 0.1, True)))
    assert (f"gParking -> cIndustry goes from {so[:, gp, ci].mean():.1f} % (source-only) to {ad[:, gp, ci].mean():.1f} % "
            f"(the reference: {ref[:, gp, ci].mean():.1f} %) and bField -> aGrass from {so[:, bf, ag].mean():.1f} to "
            f"{ad[:, bf, ag].mean():.1f} % (the reference: {ref[:, bf, ag].mean():.1f} %)") in section
    share = lambda k, j: round(100 * (so[:, k, j].mean() - ad[:, k, j].mean()) / (so[:, k, j].mean() - ref[:, k, j].mean()))
    assert f"closes {share(bf, ag)} % of the second confusion's gap and {share(gp, ci)} % of the first's" in section
    key = lambda runs: [(r["split_seed"], r["seed"]) for _, r in runs.iterrows()]
    assert key(rows(first, "source_only", 0.1).sort_values(["split_seed", "seed"])) == key(shot.sort_values(["split_seed", "seed"]))
    so_s, ad_s = (last_rates(r.sort_values(["split_seed", "seed"])) for r in (rows(first, "source_only", 0.1), shot))
    drops = np.diagonal(ad_s, axis1=1, axis2=2) - np.diagonal(so_s, axis1=1, axis2=2)
    run, c = np.unravel_index(np.argmin(drops), drops.shape)
    assert drops.min() > -20 and f"the largest is {classes[c]}'s {drops.min():+.1f} points" in section
    harm = [line.split("|") for line in (res / "smoothing_splits" / "tables" / "harm.md").read_text().splitlines()
            if line.startswith("| shot+mcc |")]
    assert len(harm) == 1 and harm[0][2].strip() == "9" and harm[0][3].strip() == "0" and harm[0][6].strip() == "0"
    assert f"{classes[c]} {drops.min():+.1f}" in harm[0][5]
    assert (f"over 3 split seeds ({acc:.1f} %), with no run below source-only and no class losing more than 20 points "
            f"in any of its {len(shot)} runs") in readme
    assert (f"AID -> RSSCN7: {closed(acc, own)} % of its recipe's gap ({closed(acc, plain)} % against the headline's "
            f"anchors)") in section
    assert f"which closes {closed(acc, own)} % of its recipe's gap on AID -> RSSCN7 over 3 split seeds ({acc:.1f} %)" in readme


def test_shifted_smoothing_section_recomputes_from_the_records():
    """results/README.md's "With smoothing: the tie's reading on the shifted target": every paired difference
    it states, from the committed records of shifted_smoothing_splits (27 new runs beside shifted_splits')."""
    import warnings

    from da.results.paired import format_paired, paired
    from da.results.selection import reselect

    text = (REPO / "results" / "README.md").read_text()
    start = text.index("### With smoothing: the tie's reading on the shifted target")
    section = " ".join(text[start:text.index("## The cost of a step")].split())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = reselect(load_runs(REPO / "results" / "shifted_smoothing_splits" / "runs", strict=True), "last")
    assert len(runs) == 63 and runs.groupby("split_seed").size().eq(21).all()

    def rows(method, smoothing=0.0, prior="", reference=False):
        return runs[(runs["method"] == method) & (runs["label_smoothing"] == smoothing) & (runs["prior"] == prior)
                    & ((runs["target_labeled_fraction"] == 1) == reference)]

    def quoted(d):
        return f"{d.mean:+.1f} {format_paired(d)['interval']}"

    def above(d):
        return sum(x > 0 for x in d.diffs)

    so, so_smoothed = rows("source_only"), rows("source_only", 0.1)
    em, uniform = rows("shot+mcc", 0.1, "em"), rows("shot+mcc", 0.1)
    d_em, d_uniform = paired(em, so), paired(uniform, so)
    assert len(d_em.diffs) == len(d_uniform.diffs) == 9
    assert (f"with the prior {quoted(d_em)} points ({above(d_em)} of 9 runs above), without it {quoted(d_uniform)} "
            f"({above(d_uniform)} of 9); against source-only of the same recipe {quoted(paired(em, so_smoothed))} and "
            f"{quoted(paired(uniform, so_smoothed))}") in section
    d_prior = paired(em, uniform)
    assert f"the uniform one**: {quoted(d_prior)}, positive in {above(d_prior)} of 9 pairs" in section
    assert (f"with the prior {quoted(paired(em, rows('shot+mcc', 0.0, 'em')))} against the unsmoothed prior-aware SHOT + "
            f"MCC, without it {quoted(paired(uniform, rows('shot+mcc')))}; source-only {quoted(paired(so_smoothed, so))}") in section
    # per class against source-only of the same recipe, at the last epoch, from the records' matrices
    def diag(frame):
        frame = frame.sort_values(["split_seed", "seed"])
        m = np.array([r["epochs"][-1]["target_test"]["confusion"] for r in frame["record"]], dtype=float)
        return 100 * np.diagonal(m, axis1=1, axis2=2) / m.sum(axis=2), [(a, b) for a, b in zip(frame["split_seed"], frame["seed"])]

    classes = runs["record"].iloc[0]["classes"]
    base, keys = diag(so_smoothed)
    counts = np.array(so_smoothed["record"].iloc[0]["target_test"]["confusion"]).sum(axis=1)
    head, tail = classes[int(np.argmax(counts))], classes[int(np.argmin(counts))]
    assert (head, tail) == ("fResident", "eForest")
    assert f"{head} is RSSCN7-LT's head class ({counts.max()} of its {counts.sum()} test images) and {tail} its tail ({counts.min()})" in section
    harm = {line.split("|")[1].strip(): line.split("|") for line in
            (REPO / "results" / "shifted_smoothing_splits" / "tables" / "harm.md").read_text().splitlines() if "label_smoothing 0.1 |" in line}
    for name, frame, said in (("shot+mcc, label_smoothing 0.1", uniform, "below source-only in {below} of 9 runs (the smallest gain {low:+.1f} points)"),
                              ("shot+mcc + prior (em), label_smoothing 0.1", em, "is below source-only in {below} of 9 runs (the smallest gain {low:+.1f})")):
        d = paired(frame, so_smoothed)
        assert said.format(below=sum(x < 0 for x in d.diffs), low=min(d.diffs)) in section
        after, k = diag(frame)
        assert k == keys
        change = after - base
        run = keys[int(np.argmin(change.min(axis=1)))]
        assert int(harm[name][6]) == int((change < -20).sum())
        if frame is uniform:
            i = classes.index(head)
            worst = change[:, i].min()
            assert (change < -20).sum() == 1 and change.min() == worst and f"{head} {worst:+.1f} points (split {run[0]} / seed {run[1]}" in section
        else:
            same = change[keys.index(run_uniform), classes.index(head)]
            assert (change < -20).sum() == 0 and f"loses {-same:.1f} points of {head} in the same run" in section
        run_uniform = run


def test_gap_warm_section_recomputes_from_the_records():
    """results/README.md's "From a trained classifier": every cell of its table and every paired difference,
    from the committed records of gap and gap_warm (gap_warm/runs)."""
    import re
    import warnings

    from da.results.paired import format_paired, paired
    from da.scripts.tables import selected_runs

    text = (REPO / "results" / "README.md").read_text()
    section = text[text.index("### From a trained classifier (`gap_warm/`)"):text.index("## Parameter-efficient fine-tuning")]
    flat = " ".join(section.split())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = selected_runs(str(REPO / "results" / "gap_warm" / "runs"), ["gap", "gap_warm"], None, True)
    warm = runs[runs["adapt_from_epoch"] == 1]
    assert len(warm) == 21 and warm.groupby(["method", "prior"]).size().eq(3).all()

    def rows(method, prior="", epoch=0, reference=False):
        return runs[(runs["method"] == method) & (runs["prior"] == prior) & (runs["adapt_from_epoch"] == epoch)
                    & ((runs["target_labeled_fraction"] == 1) == reference)]

    def quoted(d):
        return f"{d.mean:+.1f} {format_paired(d)['interval']}"

    def cell(g):
        acc = f"{g['target_acc'].mean():.1f} ± {g['target_acc'].std():.1f}"
        l1 = [r["epochs"][int(e) - 1].get("prior") for r, e in zip(g["record"], g["selected_epoch"])]
        return acc + (f" (prior L1 {np.mean([x['l1_error'] for x in l1]):.3f})" if l1[0] else "")

    so, ref = rows("source_only")["target_acc"].mean(), rows("source_only", reference=True)["target_acc"].mean()
    assert f"({so:.1f} and {ref:.1f} %)" in flat
    lines = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| method")
             and not line.startswith("| ---")]
    assert len(lines) == 7
    below, worst = {0: 0, 1: 0}, {0: 0.0, 1: 0.0}
    for line in lines:
        name, before, after, closed, gain = (c.strip() for c in line.strip("|").split("|"))
        method, prior = re.fullmatch(r"(.+?)(?: \+ prior \((em)\))?", name).groups()
        method = {"source-only": "source_only"}.get(method, method)
        e0, e1 = rows(method, prior or ""), rows(method, prior or "", 1)
        assert (before, after) == (cell(e0), cell(e1)), name
        assert closed == f"{100 * (e1['target_acc'].mean() - so) / (ref - so):.0f} %", name
        assert gain == quoted(paired(e1, rows("source_only"))), name
        if prior:
            for epoch, g in ((0, e0), (1, e1)):
                diffs = paired(g, rows("source_only")).diffs
                below[epoch] += sum(x < 0 for x in diffs)
                worst[epoch] = min(worst[epoch], min(diffs))
    assert (f"{below[1]} of their 12 runs are below source-only of the same seed, by at most {-worst[1]:.1f} points (at "
            f"epoch 0: {below[0]} of 12, by up to {-worst[0]:.1f})") in flat
    assert (f"SHOT {quoted(paired(rows('shot', epoch=1), rows('shot')))} and SHOT + MCC "
            f"{quoted(paired(rows('shot+mcc', epoch=1), rows('shot+mcc')))} points against epoch 0") in flat
    assert f"CBST gains the most ({quoted(paired(rows('cbst', epoch=1), rows('cbst')))})" in flat
    l1 = {e: [np.mean([r["epochs"][int(s) - 1]["prior"]["l1_error"] for r, s in zip(g["record"], g["selected_epoch"])])
              for _, g in runs[(runs["prior"] == "em") & (runs["adapt_from_epoch"] == e)].groupby("method")] for e in (0, 1)}
    sd = {e: [g["target_acc"].std() for _, g in runs[(runs["prior"] == "em") & (runs["adapt_from_epoch"] == e)].groupby("method")]
          for e in (0, 1)}
    assert (f"L1 {min(l1[1]):.3f}-{max(l1[1]):.3f} against {min(l1[0]):.3f}-{max(l1[0]):.3f}" in flat
            and max(l1[1]) < min(l1[0]))
    assert f"s.d. falls from {min(sd[0]):.0f}-{max(sd[0]):.0f} points to {min(sd[1]):.1f}-{max(sd[1]):.1f}" in flat
    assert (f"({rows('shot', 'em', 1)['target_acc'].mean():.1f} against {rows('shot', epoch=1)['target_acc'].mean():.1f} %)"
            in flat)
    closed0 = 100 * (rows("shot+mcc")["target_acc"].mean() - so) / (ref - so)
    assert f"as at epoch 0 ({closed0:.0f} %)" in flat
    stage1 = {r["init_weights"].split("/")[-2] for r in warm["record"]}
    assert stage1 == {"stage1-64615fe0cd87"}
    new = warm[warm["record"].map(lambda r: r["git_commit"].startswith("f3c6ebf"))]
    assert len(new) == 15 and set(warm.drop(new.index)["method"]) == {"shot"}
    in_gap = {p.name for p in (REPO / "results" / "gap" / "runs").iterdir()}
    assert not set(new["run_dir"].map(lambda d: d.rstrip("/").split("/")[-1])) & in_gap  # the pooled validator table stays as it was
    assert set(warm.drop(new.index)["run_dir"].map(lambda d: d.rstrip("/").split("/")[-1])) <= in_gap
    accs = [json.loads(p.read_text())["source_val"]["accuracy"] for p in
            (REPO / "results" / "gap" / "runs" / "stage1-64615fe0cd87" / "record.json",
             REPO / "results" / "smoothing_splits" / "runs" / "stage1-64615fe0cd87" / "record.json")]
    assert f"(source-validation accuracy {100 * accs[1]:.2f} %)" in flat and f"(`gap/runs/` ({100 * accs[0]:.2f} %)" not in flat
    assert f"the original one in `gap/runs/` ({100 * accs[0]:.2f} %)" in flat
    docs = " ".join((REPO / "docs" / "results.md").read_text().split())
    best = rows("shot+mcc", epoch=1)
    assert (f"`gap_warm`, {len(warm)} runs) the prior-aware rows lose no seed that way (s.d. {min(sd[1]):.1f}-{max(sd[1]):.1f} "
            f"points), SHOT + prior reaches {cell(rows('shot', 'em', 1)).split(' (')[0]} and SHOT {cell(rows('shot', epoch=1))}, "
            f"and the best row stays SHOT + MCC, {cell(best)} "
            f"({100 * (best['target_acc'].mean() - so) / (ref - so):.0f} % of the gap)") in docs
    assert warm.groupby(["method", "prior"])["target_acc"].mean().idxmax() == ("shot+mcc", "")
    harm = [line.split("|") for line in (REPO / "results" / "gap_warm" / "tables" / "harm.md").read_text().splitlines()
            if "adapt_from_epoch 1 |" in line]
    assert len(harm) == 7 and all(h[6].strip() == "0" for h in harm)
    assert "no class of an epoch-1 row loses more than 20 points against source-only" in flat
    drops0 = [float(line.split("|")[5].split()[1]) for line in
              (REPO / "results" / "gap_warm" / "tables" / "harm.md").read_text().splitlines()
              if "prior (em), adapt_from_epoch 0 |" in line]
    assert len(drops0) == 4 and f"lost up to {-min(drops0):.0f} points of one class in their bad seed" in flat
    gap_md = (REPO / "results" / "gap_warm" / "tables" / "gap.md").read_text()
    for line in lines:  # the table's gain and gap closed are gap.md's
        name, _, after, closed, gain = (c.strip() for c in line.strip("|").split("|"))
        assert any(after.split(" (")[0] in g and f"| {gain.split()[0]} | {closed.split()[0]} |" in g
                   for g in gap_md.splitlines() if "| 1 |" in g), name


TRANSFER_A = ["results/half_gap/runs", "results/neighbours/runs", "results/smoothing/runs"]
TRANSFER_B = ["results/rsscn7_aid_half_gap/runs", "results/rsscn7_aid_neighbours/runs", "results/rsscn7_aid_smoothing/runs"]


def test_transfer_section_recomputes_from_the_records(tmp_path, monkeypatch):
    """results/README.md's "Does one pair's ranking carry to the other?": the committed transfer table is what
    the candidates' records give, and every number of the prose below it recomputes."""
    from scipy.stats import spearmanr

    from da.results.transfer import transfer_of
    from da.scripts.tables import main

    monkeypatch.chdir(REPO)
    args = [x for a, b in zip(TRANSFER_A, TRANSFER_B) for x in ("--transfer-a", a, "--transfer-b", b)]
    assert main([*args, "--selection", "last", "--strict", "--no-figures", "--out", str(tmp_path)]) == 0
    committed = (REPO / "results" / "transfer" / "tables" / "transfer.md").read_text()
    assert (tmp_path / "tables" / "transfer.md").read_text() == committed

    t = transfer_of(TRANSFER_A, TRANSFER_B, "last", strict=True)
    text = (REPO / "results" / "README.md").read_text()
    flat = " ".join(text[text.index("## Does one pair's ranking carry"):text.index("## LoRA on the second pair")].split())
    n = len(t.table)
    assert f"{n} label-free configurations were run on both pairs" in flat
    assert f"Spearman rho {t.spearman:+.2f} across the {n} configurations (Kendall tau-b {t.kendall:+.2f})" in flat
    teacherless = t.table["method"].str.startswith("fixmatch") & t.table["own"].map(lambda o: o.get("fixmatch_ema", 0) == 0)
    ranks_b, ranks_a = sorted(t.table.loc[teacherless, "rank_b"]), sorted(t.table.loc[teacherless, "rank_a"])
    def listed(ranks):
        return f"{', '.join(map(str, ranks[:-1]))} and {ranks[-1]}"

    assert (f"the {teacherless.sum()} configurations of FixMatch (+ MCC) without an EMA teacher rank "
            f"{listed(ranks_b)} on RSSCN7 -> AID and {listed(ranks_a)} on AID -> RSSCN7") in flat
    rest = t.table[~teacherless]
    assert (f"the other {len(rest)} configurations agree (Spearman "
            f"{spearmanr(rest['acc_a'], rest['acc_b']).statistic:+.2f})") in flat
    on_a, on_b = t.choice_on("a"), t.choice_on("b")
    assert on_a["chosen_label"].startswith("fixmatch+mcc,") and on_b["chosen_label"] == "shot+mcc, label_smoothing 0.1"
    assert (f"gives {on_a['chosen_acc']:.1f} %, {on_a['regret']:.1f} points below the best configuration on "
            f"AID -> RSSCN7's own labels" in flat
            and f"and below the {on_a['mean_acc']:.1f} % that a configuration drawn at random" in flat)
    assert on_a["chosen_acc"] < on_a["mean_acc"]

    def per_seed(summary):
        return f"{summary['mean']:+.1f} {summary['interval']}"

    assert (f"own labels ({per_seed(on_a['regret_paired'])} per seed) and below" in flat
            and f"seed: {per_seed(on_a['vs_random_paired'])}, an interval that only just excludes 0)" in flat
            and on_a["vs_random_paired"]["interval"].endswith("-0.0]"))
    assert (f"a regret of {on_b['regret']:.1f} points, {per_seed(on_b['regret_paired'])} per seed) and beats the "
            f"random pick's average ({per_seed(on_b['vs_random_paired'])})") in flat
    assert (f"ties with the best there ({on_b['oracle_acc']:.1f} %, a regret of {on_b['regret']:.1f} points," in flat
            and round(on_b["chosen_acc"], 9) == round(on_b["oracle_acc"], 9))
    assert on_a["half"] == 0 and f"None of the {n} configurations closes half of it" in flat
    assert on_a["oracle_label"] == "shot+mcc, label_smoothing 0.1" and f"closes {on_a['oracle_closed']:.0f} %." in flat
    assert f"On RSSCN7 -> AID {on_b['half']} of the {n} do." in flat
    readme = " ".join((REPO / "README.md").read_text().split())
    assert (f"Over the {n} configurations both pairs ran on split seed 0, the pairs rank them alike only weakly "
            f"(Spearman {t.spearman:+.2f}), and none closes half of AID -> RSSCN7's gap even picked with its own "
            f"target labels (the best {on_a['oracle_closed']:.0f} %)") in readme


def test_depth_section_recomputes_from_the_records():
    """results/README.md's section on partial:5 against partial:3: the copied strategy tables regenerate from the
    committed records, and every accuracy, share of the gap, confusion, choice and cost it states recomputes."""
    import re

    from da.results.paired import paired
    from da.results.protocol import best_configurations, configuration
    from da.results.strategies import render_strategy_table, strategy_table

    section = results_readme_section("## How deep stage 2 trains", "## An average of the weights")
    res = REPO / "results"

    def rows(runs, method, strategy, reference=False):
        return runs[(runs["method"] == method) & (runs["strategy"] == strategy)
                    & ((runs["target_labeled_fraction"] == 1) == reference)]

    def closed(runs, strategy):
        so, ref = (rows(runs, "source_only", strategy, r)["target_acc"].mean() for r in (False, True))
        return round(100 * (rows(runs, "shot+mcc", strategy)["target_acc"].mean() - so) / (ref - so))

    first, second = last_epoch_runs("depth"), last_epoch_runs("rsscn7_aid_depth")
    for folder, runs in (("depth", first), ("rsscn7_aid_depth", second)):
        committed = (res / folder / "tables" / "strategies.md").read_text()
        assert render_strategy_table(strategy_table(runs), committed.split("\n\n")[0]) == committed, folder
        assert runs.groupby(["method", "strategy", "target_labeled_fraction"]).size().eq(3).all()
        assert (runs["label_smoothing"] == 0.1).all() and set(runs["strategy"]) == {"partial:3", "partial:5"}
    acc = {(name, s): rows(runs, "shot+mcc", s)["target_acc"].mean() for name, runs in (("first", first), ("second", second))
           for s in ("partial:3", "partial:5")}
    assert (f"{acc['first', 'partial:5']:.1f} against {acc['first', 'partial:3']:.1f} % on AID -> RSSCN7 and "
            f"{acc['second', 'partial:5']:.1f} against {acc['second', 'partial:3']:.1f} % on RSSCN7 -> AID") in section
    for runs in (first, second):
        assert not paired(rows(runs, "shot+mcc", "partial:5"), rows(runs, "shot+mcc", "partial:3")).excludes_zero
    drop = paired(rows(second, "source_only", "partial:5"), rows(second, "source_only", "partial:3"))
    assert max(drop.diffs) < 0 and drop.excludes_zero
    so5, so3 = (rows(second, "source_only", s)["target_acc"].mean() for s in ("partial:5", "partial:3"))
    assert f"({so5:.1f} against {so3:.1f} %, in every seed)" in section
    assert (f"{closed(second, 'partial:3')} -> {closed(second, 'partial:5')} % on RSSCN7 -> AID, "
            f"{closed(first, 'partial:3')} -> {closed(first, 'partial:5')} % on AID -> RSSCN7") in section
    assert closed(second, "partial:5") > closed(second, "partial:3") and acc["second", "partial:5"] < acc["second", "partial:3"]
    # the two confusions, from each run's last-epoch confusion matrix
    share = confusion_share

    shot5, shot3, ref5 = rows(first, "shot+mcc", "partial:5"), rows(first, "shot+mcc", "partial:3"), rows(first, "source_only", "partial:5", True)
    assert (f"gParking -> cIndustry {share(shot5, 'gParking', 'cIndustry'):.1f} % at partial:5 against "
            f"{share(shot3, 'gParking', 'cIndustry'):.1f} % (the reference of partial:5: {share(ref5, 'gParking', 'cIndustry'):.1f} %), "
            f"bField -> aGrass {share(shot5, 'bField', 'aGrass'):.1f} against {share(shot3, 'bField', 'aGrass'):.1f} %") in section
    # the choices, with these runs among the candidates
    cands1 = last_epoch_runs("half_gap", "neighbours", "smoothing", "depth")
    cands2 = last_epoch_runs("rsscn7_aid_half_gap", "rsscn7_aid_neighbours", "rsscn7_aid_smoothing", "rsscn7_aid_depth")
    pick1, pick2 = best_configurations(cands1, 1)[0], best_configurations(cands2, 2)
    assert pick1.startswith("shot+mcc,") and pick1.endswith("label_smoothing 0.1")  # partial:3: no strategy named
    assert pick2[0].startswith("fixmatch+mcc,") and pick2[1] == pick1
    mean = lambda runs, c: runs[runs.apply(configuration, axis=1) == c]["target_acc"].mean()
    assert mean(cands2, pick2[0]) == pytest.approx(mean(cands2, pick2[1]))
    # do no harm, and the cost
    for folder in ("depth", "rsscn7_aid_depth"):
        line = next(x for x in (res / folder / "tables" / "harm.md").read_text().splitlines() if "partial:5 |" in x)
        assert line.split("|")[3].strip() == "0" and line.split("|")[6].strip() == "0", folder
    new = [r for runs in (first, second) for r in runs["record"] if r["config"]["strategy"] == "partial:5"]
    hours = sum(r["wall_time_s"] for r in new) / 3600
    assert f"{len(new)} new runs, {hours:.1f} core-hours on the local Slurm" in section
    bench = (res / "benchmarks" / "epoch_depth.txt").read_text()
    epoch = {m.group(1): (m.group(2), m.group(3)) for m in re.finditer(r"^(\S+)\s.*\s(\d+\.\d)s\s+(\d+\.\d\d)x$", bench, re.M)}
    so3, so5, shot5 = epoch["source_only"], epoch["source_only:strategy=partial:5"], epoch["shot+mcc:strategy=partial:5"]
    assert so3[1] == "1.00" and float(shot5[1]) > 1.5
    assert (f"a source-only epoch takes {so5[0]} s at partial:5 against {so3[0]} s at partial:3 ({so5[1]}x), and SHOT + "
            f"MCC's at partial:5 {shot5[0]} s, {shot5[1]}x source-only's at partial:3") in section
    readme = " ".join((REPO / "README.md").read_text().split())
    assert (f"SHOT + MCC with smoothing gives {acc['first', 'partial:5']:.1f} against {acc['first', 'partial:3']:.1f} % "
            f"there, an interval that includes 0") in readme


def test_weight_average_section_recomputes_from_the_records():
    """results/README.md's section on --weight-ema: the copied weight-average tables regenerate from the committed
    records, and every accuracy, paired difference, per-epoch reading, share of the gap, confusion, choice and run
    count it states recomputes."""
    from da.results.factor import factor_table, render_factor_table
    from da.results.paired import format_paired, paired
    from da.results.protocol import best_configurations, configuration

    section = results_readme_section("## An average of the weights", "## LoRA on the second pair")
    res = REPO / "results"

    def rows(runs, method, ema, reference=False):
        return runs[(runs["method"] == method) & (runs["weight_ema"] == ema)
                    & ((runs["target_labeled_fraction"] == 1) == reference)]

    def acc(runs, method, ema, reference=False):
        return rows(runs, method, ema, reference)["target_acc"].mean()

    def closed(runs, ema):
        so, ref = acc(runs, "source_only", ema), acc(runs, "source_only", ema, True)
        return round(100 * (acc(runs, "shot+mcc", ema) - so) / (ref - so))

    def interval(p):
        return f"{p.mean:+.1f} {format_paired(p)['interval']}"

    first, second = last_epoch_runs("weight_ema"), last_epoch_runs("rsscn7_aid_weight_ema")
    for folder, runs in (("weight_ema", first), ("rsscn7_aid_weight_ema", second)):
        committed = (res / folder / "tables" / "weight_average.md").read_text()
        table = factor_table(runs, "weight_ema", 0.0)
        shown = render_factor_table(table, "weight_ema", 0.0, committed.split("\n\n")[0], header="weight average (decay)",
                                    show=lambda d: "none" if d == 0 else f"{d:g}")
        assert shown == committed, folder
        assert runs.groupby(["method", "weight_ema", "target_labeled_fraction"]).size().eq(3).all()
        assert (runs["label_smoothing"] == 0.1).all() and set(runs["weight_ema"]) == {0.0, 0.99}
    # the reruns against the committed records of the same hashes
    old_a, old_b = last_epoch_runs("smoothing"), last_epoch_runs("rsscn7_aid_smoothing")
    old = {k: r[(r["method"] == "shot+mcc") & (r["label_smoothing"] == 0.1)]["target_acc"].mean()
           for k, r in (("a", old_a), ("b", old_b))}
    assert (f"SHOT + MCC with smoothing gives {acc(first, 'shot+mcc', 0.0):.1f} % on AID -> RSSCN7 (`smoothing`'s "
            f"records: {old['a']:.1f}) and {acc(second, 'shot+mcc', 0.0):.1f} % on RSSCN7 -> AID "
            f"(`rsscn7_aid_smoothing`'s: {old['b']:.1f})") in section
    new = [r for runs in (first, second) for r in runs["record"]]
    assert f"{len(new)} stage-2 runs, {sum(r['wall_time_s'] for r in new) / 3600:.1f} core-hours" in section
    # the paired differences
    d = {(k, m): paired(rows(runs, m, 0.99), rows(runs, m, 0.0)) for k, runs in (("a", first), ("b", second))
         for m in ("shot+mcc", "source_only")}
    assert not d["a", "shot+mcc"].excludes_zero and d["b", "shot+mcc"].excludes_zero and max(d["b", "shot+mcc"].diffs) < 0
    assert not d["a", "source_only"].excludes_zero and not d["b", "source_only"].excludes_zero
    assert (f"SHOT + MCC with smoothing gives {acc(first, 'shot+mcc', 0.99):.1f} with the average against "
            f"{acc(first, 'shot+mcc', 0.0):.1f} % without it on AID -> RSSCN7 ({interval(d['a', 'shot+mcc'])} per seed) "
            f"and {acc(second, 'shot+mcc', 0.99):.1f} against {acc(second, 'shot+mcc', 0.0):.1f} % on RSSCN7 -> AID, "
            f"lower in every seed ({interval(d['b', 'shot+mcc'])})") in section
    assert (f"moves by {interval(d['a', 'source_only'])} and {interval(d['b', 'source_only'])} points") in section

    # per epoch: the average below the trained model for SHOT + MCC, above it for source-only on RSSCN7 -> AID
    def curve(runs, method, ema):
        return np.mean([[100 * e["target_test"]["accuracy"] for e in r["epochs"]]
                        for r in rows(runs, method, ema)["record"]], axis=0)

    for runs in (first, second):
        assert (curve(runs, "shot+mcc", 0.99) < curve(runs, "shot+mcc", 0.0)).all()
    assert (curve(second, "source_only", 0.99) > curve(second, "source_only", 0.0)).all()
    e_ema, e_plain = curve(second, "shot+mcc", 0.99), curve(second, "shot+mcc", 0.0)
    assert (f"{e_ema[0]:.1f} against {e_plain[0]:.1f} % after the first epoch, {e_ema[-1]:.1f} against "
            f"{e_plain[-1]:.1f} % after the fourth") in section
    # the gap, each against its own anchors, and the two confusions
    assert (f"closes {closed(first, 0.99)} % of AID -> RSSCN7's gap ({closed(first, 0.0)} % without it) and "
            f"{closed(second, 0.99)} % of RSSCN7 -> AID's ({closed(second, 0.0)} %)") in section
    share = confusion_share

    ema, plain = rows(first, "shot+mcc", 0.99), rows(first, "shot+mcc", 0.0)
    assert (f"gParking -> cIndustry {share(ema, 'gParking', 'cIndustry'):.1f} against "
            f"{share(plain, 'gParking', 'cIndustry'):.1f} %, bField -> aGrass {share(ema, 'bField', 'aGrass'):.1f} "
            f"against {share(plain, 'bField', 'aGrass'):.1f} %") in section
    for folder in ("weight_ema", "rsscn7_aid_weight_ema"):
        line = next(x for x in (res / folder / "tables" / "harm.md").read_text().splitlines() if "weight_ema 0.99 |" in x)
        assert line.split("|")[3].strip() == "0" and line.split("|")[6].strip() == "0", folder
    # the choices, with these runs among each pair's split-seed-0 candidates (a repeated run: the first folder's)
    cands1 = last_epoch_runs("half_gap", "neighbours", "smoothing", "depth", "weight_ema")
    cands2 = last_epoch_runs("rsscn7_aid_half_gap", "rsscn7_aid_neighbours", "rsscn7_aid_smoothing", "rsscn7_aid_depth",
                             "rsscn7_aid_weight_ema")
    mean = lambda runs, c: runs[runs.apply(configuration, axis=1) == c]["target_acc"].mean()
    pick1, pick2 = best_configurations(cands1, 3), best_configurations(cands2, 2)
    assert pick1[0].endswith("label_smoothing 0.1, weight_ema 0.99") and pick1[1] == pick1[0][:-len(", weight_ema 0.99")]
    assert (f"{mean(cands1, pick1[0]):.2f} % against {mean(cands1, pick1[1]):.2f} % for SHOT + MCC with smoothing "
            f"alone") in section
    assert (f"{-d['a', 'shot+mcc'].mean:.1f} points lower than its counterpart from the same stage-1 model "
            f"({interval(d['a', 'shot+mcc'])})") in section
    ema_b = [c for c in best_configurations(cands2, 50) if c.endswith("weight_ema 0.99")][0]
    assert mean(cands2, ema_b) < mean(cands2, pick2[1]) == pytest.approx(mean(cands2, pick2[0]))
    assert (f"RSSCN7 -> AID's candidates still tie at {mean(cands2, pick2[0]):.2f} %, the averaged SHOT + MCC "
            f"below them ({mean(cands2, ema_b):.2f} %)") in section
    # the choice run on RSSCN7 -> AID's 3 split seeds
    splits = last_epoch_runs("rsscn7_aid_weight_ema_splits")
    assert sorted(set(splits["split_seed"])) == [0, 1, 2] and (splits["label_smoothing"] == 0.1).all()
    so, ref = rows(splits, "source_only", 0.0), rows(splits, "source_only", 0.0, True)
    shot, averaged = rows(splits, "shot+mcc", 0.0), rows(splits, "shot+mcc", 0.99)
    share_of_gap = lambda g: round(100 * (g["target_acc"].mean() - so["target_acc"].mean())
                                   / (ref["target_acc"].mean() - so["target_acc"].mean()))
    over_so, under_shot = paired(averaged, so), paired(averaged, shot)
    assert over_so.n == under_shot.n == 9 and min(over_so.diffs) > 0 and max(under_shot.diffs) < 0
    assert share_of_gap(averaged) < 50 <= share_of_gap(shot)
    assert (f"gives **{averaged['target_acc'].mean():.1f} % on RSSCN7 -> AID over 3 split seeds, "
            f"{share_of_gap(averaged)} % of the gap** (against source-only {so['target_acc'].mean():.1f} and the "
            f"reference {ref['target_acc'].mean():.1f}") in section
    assert (f"above source-only in all 9 runs ({interval(over_so)} points per run) and below SHOT + MCC with smoothing "
            f"alone in all 9 ({interval(under_shot)}), which closes {share_of_gap(shot)} % here "
            f"({shot['target_acc'].mean():.1f} %; ") in section
    committed = (res / "rsscn7_aid_smoothing_splits" / "tables" / "splits.md").read_text()
    assert "| shot+mcc | 0.1 | none | 85.3 ± 0.7 | 0.4 | 0.7 | 25 | 50 | 9 (3) |" in committed  # "50 % with the committed"

    def recall(c):
        c = np.asarray(c)
        return 100 * np.diag(c) / c.sum(1)

    base = {(r.split_seed, r.seed): recall(r.confusion) for _, r in so.iterrows()}
    worst = max(float((base[r.split_seed, r.seed] - recall(r.confusion)).max()) for _, r in averaged.iterrows())
    assert worst < 20 and f"No class loses more than {worst:.1f} points against source-only in any run" in section
    assert (f"(76.03 against {acc(first, 'shot+mcc', 0.0):.2f} % for SHOT + MCC with smoothing alone from the "
            f"retrained stage 1)") in section and f"{mean(cands1, pick1[1]):.2f}" == "76.03"
    new = [r for r in splits["record"] if r["config"]["split_seed"] > 0]
    assert f"{len(new)} runs, {sum(r['wall_time_s'] for r in new) / 3600:.1f} core-hours" in section
    readme = " ".join((REPO / "README.md").read_text().split())
    assert (f"does not raise SHOT + MCC with smoothing either ({acc(first, 'shot+mcc', 0.99):.1f} against "
            f"{acc(first, 'shot+mcc', 0.0):.1f} % on AID -> RSSCN7, {acc(second, 'shot+mcc', 0.99):.1f} against "
            f"{acc(second, 'shot+mcc', 0.0):.1f} % on RSSCN7 -> AID), yet among AID -> RSSCN7's candidates it leads by "
            f"{mean(cands1, pick1[0]) - mean(cands1, pick1[1]):.2f} points") in readme
    assert (f"where it closes {share_of_gap(averaged)} % of the gap over 3 split seeds "
            f"({averaged['target_acc'].mean():.1f} %)") in readme


def test_finalists_section_recomputes_from_the_records():
    """results/README.md's section on the finalists rerun from one stage-1 model: each pair's finalists are what
    protocol.finalists gives on its candidates, they ran from one stage-1 model, and every mean, paired
    difference, choice, share of the gap and cost the section states recomputes from the committed records."""
    import re

    from da.results.paired import format_paired, paired
    from da.results.protocol import best_configurations, configuration, finalists

    section = results_readme_section("## Finalists on one stage-1 model", "## LoRA on the second pair")
    res = REPO / "results"

    def interval(p):
        return f"{p.mean:+.1f} {format_paired(p)['interval']}"

    pools = {"finalists": ("half_gap", "neighbours", "smoothing", "depth", "weight_ema"),
             "rsscn7_aid_finalists": ("rsscn7_aid_half_gap", "rsscn7_aid_neighbours", "rsscn7_aid_smoothing",
                                      "rsscn7_aid_depth", "rsscn7_aid_weight_ema")}
    picks = {}
    for folder, pool in pools.items():
        runs = last_epoch_runs(folder)
        names = runs.apply(configuration, axis=1)
        # the finalists of the candidates, and nothing else, each 3 seeds from one stage-1 model
        assert sorted(set(names)) == sorted(finalists(last_epoch_runs(*pool))), folder
        assert names.value_counts().eq(3).all() and len({r["inputs"]["init_weights"] for r in runs["record"]}) == 1
        order = best_configurations(runs, len(set(names)))
        picks[folder] = order[0]
        means = ", ".join(f"{runs[names == c]['target_acc'].mean():.2f}" for c in order)
        diffs = ", ".join(interval(paired(runs[names == order[0]], runs[names == c])) for c in order[1:])
        assert f"means {means} %" in section, (folder, means)
        assert f"the first against each other, per seed: {diffs} points" in section, (folder, diffs)
    assert picks["finalists"].startswith("shot+mcc,") and picks["finalists"].endswith("label_smoothing 0.1")
    assert picks["rsscn7_aid_finalists"].startswith("fixmatch+mcc,") and "threshold 0.95" in picks["rsscn7_aid_finalists"]
    # a run in a finalists folder and in the folder it was first archived in: the same stage-1 model, the same result
    same = 0
    for folder, first in (("finalists", "weight_ema"), ("rsscn7_aid_finalists", "rsscn7_aid_weight_ema")):
        a, b = last_epoch_runs(folder), last_epoch_runs(first)
        both = sorted(set(a["config_hash"]) & set(b["config_hash"]))
        for h in both:
            ra, rb = a[a["config_hash"] == h].iloc[0], b[b["config_hash"] == h].iloc[0]
            assert ra["record"]["inputs"] == rb["record"]["inputs"] and ra["target_acc"] == rb["target_acc"], h
        same += len(both)
    assert f"the {same} runs that both hold give the same target accuracy" in section
    # what each pair then reports on 3 split seeds: the rows of the committed tables (regenerated elsewhere)
    shot = (res / "rsscn7_aid_smoothing_splits" / "tables" / "splits.md").read_text()
    fix = (res / "fixmatch_splits" / "tables" / "splits.md").read_text()
    row_shot = next(line.split("|") for line in shot.splitlines() if line.startswith("| shot+mcc | 0.1 | none"))
    row_fix = next(line.split("|") for line in fix.splitlines() if line.startswith("| fixmatch+mcc | none"))
    assert (f"RSSCN7 -> AID reports SHOT + MCC with smoothing: {row_shot[4].split('±')[0].strip()} %, "
            f"{row_shot[8].strip()} % of the gap") in section
    assert (f"AID -> RSSCN7 reports FixMatch + MCC: {row_fix[3].split('±')[0].strip()} %, {row_fix[7].strip()} % "
            f"of the gap") in section
    # the two that RSSCN7 -> AID cannot tell apart, and what they give on AID -> RSSCN7
    second = last_epoch_runs("rsscn7_aid_smoothing_splits", "rsscn7_aid_fixmatch_splits")
    first = last_epoch_runs("smoothing_splits", "fixmatch_splits")

    def rows(runs, method, smoothing, reference=False):
        return runs[(runs["method"] == method) & (runs["label_smoothing"] == smoothing)
                    & ((runs["target_labeled_fraction"] == 1) == reference)]

    tie = paired(rows(second, "fixmatch+mcc", 0.0), rows(second, "shot+mcc", 0.1))
    assert tie.n == 9 and not tie.excludes_zero and f"{interval(tie)} over 3 split seeds" in section
    fix_a, shot_a = rows(first, "fixmatch+mcc", 0.0)["target_acc"], rows(first, "shot+mcc", 0.1)["target_acc"]
    assert len(fix_a) == len(shot_a) == 9 and round(shot_a.mean() - fix_a.mean()) == 6
    assert f"they are 6 points apart over 3 split seeds ({fix_a.mean():.1f} against {shot_a.mean():.1f} %)" in section
    assert min(paired(rows(second, "shot+mcc", 0.1), rows(second, "source_only", 0.1)).diffs) > 0  # "in every run"
    other = (res / "smoothing_splits" / "tables" / "splits.md").read_text()
    row_other = next(line.split("|") for line in other.splitlines() if line.startswith("| shot+mcc | 0.1 | none"))
    assert f"decides between {row_fix[7].strip()} and {row_other[8].strip()} % of the gap" in section
    new = [r for f in pools for r in last_epoch_runs(f)["record"]]
    assert f"{len(new)} stage-2 runs, {sum(r['wall_time_s'] for r in new) / 3600:.1f} core-hours" in section
    readme = " ".join((REPO / "README.md").read_text().split())
    fin = last_epoch_runs("rsscn7_aid_finalists")
    r2a = paired(fin[fin.apply(configuration, axis=1) == picks["rsscn7_aid_finalists"]], rows(fin, "shot+mcc", 0.1))
    assert (f"choose SHOT + MCC with smoothing for RSSCN7 -> AID again ({row_shot[8].strip()} % of its gap over 3 split "
            f"seeds) and FixMatch + MCC for AID -> RSSCN7 ({row_fix[7].strip()} %): two configurations that RSSCN7 -> AID "
            f"cannot tell apart ({interval(r2a)} points per seed) and that lie 6 points apart on AID -> RSSCN7") in readme
    # the cost of the average, one benchmark run
    bench = (res / "benchmarks" / "epoch_weight_ema.txt").read_text()
    epoch = {m.group(1): (m.group(2), m.group(3)) for m in re.finditer(r"^(\S+)\s.*\s(\d+\.\d)s\s+(\d+\.\d\d)x$", bench, re.M)}
    assert epoch["source_only"][1] == "1.00"
    for name in ("source_only:weight_ema=0.99", "shot+mcc", "shot+mcc:weight_ema=0.99", "fixmatch+mcc"):
        assert f"`{name}` {epoch[name][0]} s ({epoch[name][1]}x)" in section, name
    speed = " ".join((REPO / "docs" / "speed.md").read_text().split())
    assert (f"the weight average (`epoch_weight_ema.txt`) SHOT + MCC {epoch['shot+mcc:weight_ema=0.99'][1]}x against "
            f"{epoch['shot+mcc'][1]}x without it, FixMatch + MCC {epoch['fixmatch+mcc'][1]}x") in speed


def test_shot_frozen_section_recomputes_from_the_records():
    """results/README.md's section on SHOT's frozen classifier: every accuracy, paired difference, confusion and
    count it states recomputes from the committed records, and the frozen variant is no finalist of either pair."""
    from da.results.paired import format_paired, paired
    from da.results.protocol import configuration

    section = results_readme_section("## SHOT's frozen hypothesis", "## LoRA on the second pair")

    def rows(runs, method, frozen=None):
        x = runs[(runs["method"] == method) & (runs["target_labeled_fraction"] == 0)]
        return x if frozen is None else x[x["shot_freeze_classifier"] == frozen]

    def interval(p):
        return f"{p.mean:+.1f} {format_paired(p)['interval']}"

    first, second = last_epoch_runs("shot_frozen"), last_epoch_runs("rsscn7_aid_shot_frozen")
    for runs in (first, second):
        assert len({r["inputs"]["init_weights"] for r in runs["record"]}) == 1 and len(runs) == 12
        assert (runs["label_smoothing"] == 0.1).all()
    fa, ta = rows(first, "shot+mcc", True), rows(first, "shot+mcc", False)
    fb, tb = rows(second, "shot+mcc", True), rows(second, "shot+mcc", False)
    da, db = paired(fa, ta), paired(fb, tb)
    assert da.excludes_zero and da.mean < 0 and not db.excludes_zero
    assert (f"gives {fa['target_acc'].mean():.1f} % with it frozen against {ta['target_acc'].mean():.1f} % with it "
            f"trained ({interval(da)} points per seed") in section
    assert f"RSSCN7 -> AID {fb['target_acc'].mean():.1f} against {tb['target_acc'].mean():.1f} % ({interval(db)})" in section
    share = confusion_share
    assert (f"gParking -> cIndustry at {share(fa, 'gParking', 'cIndustry'):.1f} % (trained: "
            f"{share(ta, 'gParking', 'cIndustry'):.1f} %, source-only {share(rows(first, 'source_only'), 'gParking', 'cIndustry'):.1f} %)") in section
    gains = paired(fa, rows(first, "source_only")).diffs
    assert sum(g < 0 for g in gains) == 1 and f"(the smallest gain {min(gains):+.1f} points" in section
    for folder in ("shot_frozen", "rsscn7_aid_shot_frozen"):
        line = next(x for x in (REPO / "results" / folder / "tables" / "harm.md").read_text().splitlines()
                    if "shot_freeze_classifier True |" in x)
        assert line.split("|")[6].strip() == "0", folder
    # no finalist: more than 0.5 points below each pair's chosen finalist
    for frozen, folder in ((fa, "finalists"), (fb, "rsscn7_aid_finalists")):
        fin = last_epoch_runs(folder)
        best = fin.groupby(fin.apply(configuration, axis=1))["target_acc"].mean().max()
        assert frozen["target_acc"].mean() < best - 0.5, folder
    readme = " ".join((REPO / "README.md").read_text().split())
    assert (f"its classifier frozen, lowers SHOT + MCC with smoothing to {fa['target_acc'].mean():.1f} % on "
            f"AID -> RSSCN7") in readme
    new = [r for runs in (first, second) for r in runs["record"]
           if r["config"]["method"] == "source_only" or r["config"]["shot_freeze_classifier"]]
    assert f"{len(new)} new stage-2 runs, {sum(r['wall_time_s'] for r in new) / 3600:.1f} core-hours" in section
