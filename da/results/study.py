"""The study table: what choosing hyperparameters without target labels costs.

For a study of ``da-hpo``: the target test accuracy of the label-free choice (the complete trial with the
best objective) next to that of the default configuration (the base config, trial 0) and next to the
ORACLE, the trial with the best target test accuracy.  The oracle looks at target labels: it is the
yardstick for the choice, never a result and never used to choose.  Accuracies are each trial's, at its
own selected epoch (the run's record); the objective comes from the study's journal.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
from scipy.stats import spearmanr

from da.hpo.report import best_row, trial_rows
from da.hpo.study import RESULTS_DIR, load_study_dir, quiet_optuna
from da.records import load_record
from da.results.tables import render_cells_latex, render_cells_markdown
from da.rundir import RECORD_FILE
from da.selection import RANK
from da.utils.io import atomic_write_text

STUDY_TABLE_FILE = "study.md"


def record_folders(sdir: Path, runs: str | os.PathLike | None, stored_out: str | None) -> list[Path]:
    """Where a study's run directories may be, in order: ``runs`` when given; the folder its workers wrote
    to; then relative to the study's own folder (``<out>/studies/<name>``), because the stored path is
    absolute and names the machine the study ran on: ``<out>`` itself (the whole folder moved) and
    ``<out>/runs`` (the records archived beside the study, as committed in results/hpo)."""
    out_here = Path(sdir).resolve().parent.parent
    folders = [Path(runs)] if runs else []
    if stored_out:
        folders.append(Path(stored_out))
    folders += [out_here, out_here / "runs"]
    return list(dict.fromkeys(folders))


def _record_path(row: dict[str, Any], folders: list[Path]) -> Path:
    """A complete trial's record: under the given runs folders, by its run directory's name (archived runs
    keep it), else where the worker wrote it."""
    for folder in folders:
        path = folder / row["run_dir"] / RECORD_FILE
        if path.is_file():
            return path
    if row.get("record") and Path(row["record"]).is_file():
        return Path(row["record"])
    # --runs: an option of both programs that read records (da-hpo --table and da-tables --study)
    raise FileNotFoundError(f"trial {row['number']}: no record of its run {row['run_dir']} under "
                            f"{', '.join(str(f) for f in folders)} (nor at {row.get('record')}); give the folder "
                            f"that holds the study's run directories with --runs")


def study_summary(sdir: str | os.PathLike, runs: str | os.PathLike | None = None) -> dict[str, Any]:
    """The study in ``sdir`` with each complete trial's target test accuracy (%), the default, the label-free
    choice and the oracle trial.  Records are looked up where ``record_folders`` says."""
    quiet_optuna()
    sdir = Path(sdir)
    study = load_study_dir(sdir)
    definition = study.user_attrs.get("definition", {})
    folders = record_folders(sdir, runs, study.user_attrs.get("out"))
    rows = trial_rows(study, sdir, probe_locks=False)
    for r in rows:
        r["target_acc"] = None
        if r["state"] == "complete":
            record = load_record(_record_path(r, folders))
            r["target_acc"] = 100 * record["target_test"]["accuracy"]
    default = next((r for r in rows if r["default"]), None)
    return {"name": study.study_name, "study_dir": str(sdir), "definition": definition, "rows": rows,
            "complete": sum(r["state"] == "complete" for r in rows),
            "failed": sum(r["state"] == "failed" for r in rows),
            "default": default, "choice": best_row(rows, "objective"), "oracle": best_row(rows, "target_acc")}


def _acc(row: dict[str, Any] | None) -> str:
    if row is None or row.get("target_acc") is None:
        return "–"
    return f"{row['target_acc']:.1f} (trial {row['number']})"


def _diff(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    if a is None or b is None or a.get("target_acc") is None or b.get("target_acc") is None:
        return "–"
    d = a["target_acc"] - b["target_acc"]
    return "0.0" if abs(d) < 0.05 else f"{d:+.1f}"


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def study_tables(summary: dict[str, Any]) -> list[tuple[str, pd.DataFrame]]:
    """The study's two tables as (caption, formatted cells): the label-free choice against the default and the
    oracle trial, and every trial; Markdown and LaTeX are rendered from them (da.results.tables)."""
    d = summary["definition"]
    base = d.get("base", {})
    objective = d.get("objective")
    objective_text = (f"rank (rank-average over the trials of {', '.join(d.get('rank_validators', []))})"
                      if objective == RANK else objective)
    choice, default, oracle = summary["choice"], summary["default"], summary["oracle"]
    caption = (f"Study {summary['name']}: {base.get('method')} on {base.get('source')} -> {base.get('target')}, "
               f"{summary['complete']} complete trials ({summary['failed']} failed), sampler {d.get('sampler')} "
               f"(seed {d.get('seed')}). Target test accuracy (%) at each trial's selected epoch. The configuration is "
               f"chosen by the label-free objective {objective_text}, which reads no target label; the ORACLE column "
               f"is the trial with the best target test accuracy, which looks at target labels: it only measures "
               f"what choosing without labels costs, and is never used to choose.")
    head = pd.DataFrame([{"objective": objective,
                          "trials (complete / failed)": f"{summary['complete']} / {summary['failed']}",
                          "default configuration": _acc(default), "label-free choice": _acc(choice),
                          "choice - default (points)": _diff(choice, default),
                          "ORACLE trial (uses target labels)": _acc(oracle),
                          "oracle - choice (points)": _diff(oracle, choice)}])
    second = ""
    done = [r for r in summary["rows"] if r["state"] == "complete" and r["objective"] is not None
            and r["target_acc"] is not None]
    if len(done) > 2:  # at full precision: the trial table below rounds the objective to 4 decimals
        rho = spearmanr([r["objective"] for r in done], [r["target_acc"] for r in done])
        second = (f"Spearman correlation of the objective with target accuracy over the {len(done)} complete trials "
                  f"(objective at full precision): {rho.statistic:+.3f} (p = {rho.pvalue:.3f}).\n\n")
    second += "Every trial (default: the base config; chosen: the label-free choice; oracle: best target accuracy)."
    names = list(dict.fromkeys(k for r in summary["rows"] for k in r["params"]))
    rows = []
    for r in summary["rows"]:
        notes = [n for n, row in (("default", default), ("chosen", choice), ("oracle", oracle))
                 if row is not None and row["number"] == r["number"]]
        state = r["state"] + (f": {r['error'].splitlines()[0][:80]}" if r["state"] == "failed" and r["error"] else "")
        rows.append({"trial": r["number"], **{k: _value(r["params"].get(k, "–")) for k in names},
                     f"{objective} (objective)": "–" if r["objective"] is None or r["state"] != "complete"
                     else f"{r['objective']:.4f}",
                     "target acc (%), for judging only": "–" if r["target_acc"] is None else f"{r['target_acc']:.1f}",
                     "state": state, "note": ", ".join(notes)})
    return [(caption, head), (second, pd.DataFrame(rows))]


def study_figure_data(summary: dict[str, Any]) -> dict:
    """Every complete trial in trial order: its objective, the best objective so far (what the study would choose
    had it stopped there) and its target test accuracy (%, for judging only); the default, the label-free choice
    and the oracle trial by number."""
    from da.results.figures import json_number

    done = [r for r in summary["rows"] if r["state"] == "complete" and r["objective"] is not None]
    best, trials = None, []
    for r in sorted(done, key=lambda r: r["number"]):
        best = r["objective"] if best is None else max(best, r["objective"])
        trials.append({"number": r["number"], "objective": json_number(r["objective"], 5),
                       "best_so_far": json_number(best, 5), "target_acc": json_number(r["target_acc"], 2)})
    number = lambda row: None if row is None else row["number"]  # noqa: E731
    return {"name": summary["name"], "objective": summary["definition"].get("objective"), "trials": trials,
            "default": number(summary["default"]), "choice": number(summary["choice"]),
            "oracle": number(summary["oracle"])}


def study_figure(data: dict, out: Path) -> list[Path]:
    """Left: the objective of each trial and the best so far (the search's history); right: the objective against
    target accuracy, the default, the label-free choice and the oracle trial marked."""
    import matplotlib.pyplot as plt

    from da.results.figures import palette, save_figure

    trials = data["trials"]
    numbers = [t["number"] for t in trials]
    objective = [t["objective"] for t in trials]
    colours = palette(3)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.plot(numbers, objective, "o", color="grey", ms=4, label="trial")
    ax1.step(numbers, [t["best_so_far"] for t in trials], where="post", color=colours[0], label="best so far")
    ax1.set_xlabel("trial")
    ax1.set_ylabel(f"objective ({data['objective']})")
    ax1.set_title("Search history", fontsize=9)
    ax1.legend(fontsize=7, frameon=False)
    ax2.scatter(objective, [t["target_acc"] for t in trials], color="grey", s=14)
    for (key, name), colour in zip((("default", "default"), ("choice", "label-free choice"),
                                    ("oracle", "oracle (target labels)")), colours):
        hit = [t for t in trials if t["number"] == data[key]]
        if hit:
            ax2.scatter([hit[0]["objective"]], [hit[0]["target_acc"]], s=70, facecolors="none", edgecolors=colour,
                        linewidths=1.8, label=f"{name}: trial {hit[0]['number']}")
    ax2.set_xlabel(f"objective ({data['objective']})")
    ax2.set_ylabel("target test accuracy (%), for judging only")
    ax2.set_title("Objective against target accuracy", fontsize=9)
    ax2.legend(fontsize=7, frameon=False)
    fig.suptitle(f"Study {data['name']}: {len(trials)} complete trials", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out, f"study_{data['name']}")


def render_study_markdown(summary: dict[str, Any]) -> str:
    return "\n".join(render_cells_markdown(table, caption) for caption, table in study_tables(summary))


def render_study_latex(summary: dict[str, Any]) -> str:
    return "\n".join(render_cells_latex(table, caption.replace("\n\n", " "), f"tab:study-{summary['name']}-{i}",
                                        left=("objective", "state", "note"))
                     for i, (caption, table) in enumerate(study_tables(summary)))


def write_study_table(sdir: str | os.PathLike, dest: str | os.PathLike | None = None,
                      runs: str | os.PathLike | None = None) -> Path:
    """Write the study table (Markdown, atomically) to ``dest``, by default ``<study>/results/study.md``, and its
    LaTeX beside it (``.tex``)."""
    summary = study_summary(sdir, runs)
    if not summary["complete"]:
        raise ValueError(f"study {sdir}: no complete trial yet, so no table; see da-hpo --status")
    dest = Path(dest) if dest else Path(sdir) / RESULTS_DIR / STUDY_TABLE_FILE
    atomic_write_text(dest.with_suffix(".tex"), render_study_latex(summary))
    return atomic_write_text(dest, render_study_markdown(summary))
