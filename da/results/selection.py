"""Model selection after the fact: re-select each run's epoch under another label-free rule, and compare
the rules (``validator_table``) on the target accuracy of the epochs they pick.

Each record keeps every validator's score per epoch (schema 2), so any rule of ``da.selection`` can be
applied later without retraining; version-1 records only know ``source_acc``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from da.config import RunConfig
from da.records import RecordError
from da.results.tables import latex_escape
from da.results.paired import Paired
from da.selection import DEFAULT, GUARDED, LAST, RANK, best_epoch, selection_scores, validator_names
from da.selection.drift import DriftValidator

DRIFT = DriftValidator.name


def epoch_scores(record: dict) -> list[dict[str, float]]:
    """Per-epoch validator scores of a record (version 1: source-val accuracy only)."""
    return [e.get("scores") or {"source_acc": e["source_val"]["accuracy"]} for e in record["epochs"]]


class MixedVersions(RecordError):
    """Records whose scores of one validator were made by two versions of it: never pooled."""


def _read_validators(record: dict, name: str) -> list[str]:
    """The scored validators that rule ``name`` reads in ``record``."""
    if name == LAST:
        return []
    if name == GUARDED:
        return [DRIFT]
    if name == RANK:
        return list(RunConfig.from_record(record["config"]).rank_validators)
    return [name]


def _versions(runs: pd.DataFrame) -> dict[str, int | None]:
    """Each validator's version in ``runs`` where all agree (a record that keeps none: version 1)."""
    seen: dict[str, set] = {}
    for rec in runs["record"]:
        kept = rec.get("validator_versions") or {}
        for name in epoch_scores(rec)[0]:
            seen.setdefault(name, set()).add(kept.get(name, 1))
    return {name: next(iter(v)) for name, v in seen.items() if len(v) == 1}


def check_versions(runs: pd.DataFrame, name: str) -> None:
    """Raise :class:`MixedVersions` where the runs' scores of a validator that rule ``name`` reads come from
    different versions of it (``da.selection.base``; a record that keeps no versions has version 1), or
    where one run's own scores mix two versions (resumed across the change)."""
    seen: dict[str, dict] = {}
    for _, r in runs.iterrows():
        versions = r["record"].get("validator_versions") or {}
        for v in _read_validators(r["record"], name):
            version = versions.get(v, 1)
            if version is None:
                raise MixedVersions(f"run {r['run_dir']}: its {v!r} scores mix two versions of the validator (resumed "
                                    f"across a change of it); rerun it afresh")
            seen.setdefault(v, {}).setdefault(version, r["run_dir"])
    for v, by_version in seen.items():
        if len(by_version) > 1:
            examples = "; ".join(f"version {k}: {run}" for k, run in sorted(by_version.items()))
            raise MixedVersions(f"the {v!r} scores of these runs come from {len(by_version)} versions of the "
                                f"validator ({examples}), which one table never pools: rerun the older runs, or "
                                f"tabulate them apart")


def reselect(runs: pd.DataFrame, name: str) -> pd.DataFrame:
    """``runs`` with ``selected_epoch``, ``target_acc`` and ``target_f1`` (percent) taken at the epoch rule
    ``name`` picks in each run (``rank``: each run's own ``rank_validators``), and ``confusion``, that epoch's
    target-test confusion matrix where the record keeps one per epoch (runs made since it does; else None: the
    record's confusion is that of the epoch selected during training only)."""
    if name not in validator_names():
        raise ValueError(f"--selection {name!r} is not valid; choose from {', '.join(validator_names())}")
    check_versions(runs, name)
    runs = runs.copy()
    picked, acc, f1, confusion = [], [], [], []
    for _, r in runs.iterrows():
        rec = r["record"]
        try:
            epoch = best_epoch(epoch_scores(rec), name, RunConfig.from_record(rec["config"]).rank_validators)
        except KeyError as err:
            raise RecordError(f"run {r['run_dir']}: {err.args[0]}; its record predates that validator "
                              f"(schema {rec['schema_version']}): rerun it or select with source_acc") from None
        tgt = rec["epochs"][epoch - 1]["target_test"]
        picked.append(epoch)
        acc.append(100 * tgt["accuracy"])
        f1.append(100 * tgt["macro_f1"])
        confusion.append(tgt.get("confusion"))
    return runs.assign(selected_epoch=picked, target_acc=acc, target_f1=f1, confusion=confusion)



def _scored(record: dict, rule: str) -> bool:
    """Whether ``record`` has the scores that ``rule`` reads (``guarded`` reads ``drift``'s)."""
    return (DRIFT if rule == GUARDED else rule) in epoch_scores(record)[0]


def control_first(names: list[str]) -> list[str]:
    """Rules in table order: the two controls (source accuracy, the last epoch) first, then the others."""
    controls = [DEFAULT, LAST]
    return [n for n in controls if n in names] + [n for n in names if n not in controls]


def validator_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per rule, the controls first: over the runs, the mean target accuracy (%) of the epochs it
    selects, its mean gap to the oracle epoch (points; >= 0), how often it picks the oracle epoch, the
    Spearman rank correlation of its score with target accuracy over all epochs of all runs (pooled;
    ``rank`` is relative within a run, so it has none; ``last``'s score is the epoch number), and, per run,
    its selected accuracy minus that of the last epoch (the control that selects nothing) as a paired
    comparison (``vs_last``).  A validator that some record has no score for (the record predates it) is left
    out, and named in ``table.attrs["left_out"]`` where other records have it (one that no record has is
    simply absent); one whose scores come from two versions of it is left out and named in
    ``table.attrs["mixed_versions"]``."""
    rows, left_out, mixed = [], [], []
    last = reselect(runs, LAST)["target_acc"].to_numpy(dtype=float)
    keys = tuple((r["run_dir"],) for _, r in runs.iterrows())
    for name in control_first(validator_names()):
        try:
            chosen = reselect(runs, name)
        except MixedVersions:
            mixed.append(name)  # never pooled: left out and named
            continue
        except RecordError:
            if any(_scored(rec, name) for rec in runs["record"]):  # newer than some of the records
                left_out.append(name)
            continue  # newer than all of them: nothing to compare, nothing to say
        oracle = runs["oracle_acc"].to_numpy(dtype=float)
        row = {"validator": name, "runs": len(runs), "selected_acc": float(chosen["target_acc"].mean()),
               "selected_acc_std": float(chosen["target_acc"].std(ddof=1)) if len(runs) > 1 else float("nan"),
               "gap_to_oracle": float(np.mean(oracle - chosen["target_acc"].to_numpy(dtype=float))),
               "picks_oracle_epoch": float(np.mean(chosen["selected_epoch"].to_numpy() == runs["oracle_epoch"].to_numpy())),
               "vs_last": Paired(keys, tuple(chosen["target_acc"].to_numpy(dtype=float) - last))}
        if name != RANK:
            scores, accs = [], []
            for rec in runs["record"]:
                scores += selection_scores(epoch_scores(rec), name)
                accs += [e["target_test"]["accuracy"] for e in rec["epochs"]]
            row["spearman"] = float(spearmanr(scores, accs).statistic) if len(set(scores)) > 1 else float("nan")
        else:
            row["spearman"] = float("nan")
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["left_out"] = left_out
    table.attrs["mixed_versions"] = mixed
    table.attrs["versions"] = {v: k for v, k in sorted(_versions(runs).items()) if k != 1 and v in set(table["validator"])}
    return table


def render_validator_table(table: pd.DataFrame, fmt: str = "markdown") -> str:
    """Markdown or LaTeX; in bold the best selected accuracy where it is shown against the runner-up."""
    cols = {"selected_acc": "target acc at selected epoch (%)", "gap_to_oracle": "gap to oracle (points)",
            "picks_oracle_epoch": "picks the oracle epoch (%)", "spearman": "Spearman vs target acc (all epochs)"}
    # bold: the best selected accuracy (and gap to the oracle, the same comparison) only where the paired per-run
    # difference to the runner-up has a 95 % interval that excludes 0; the other columns describe, they rank nothing
    ranked = table.sort_values("selected_acc", ascending=False, kind="stable")
    first, second = ranked["vs_last"].iloc[0], ranked["vs_last"].iloc[1]
    shown = Paired(first.keys, tuple(a - b for a, b in zip(first.diffs, second.diffs))).excludes_zero
    nan = float("nan")
    best = {"selected_acc": table["selected_acc"].max() if shown else nan,
            "gap_to_oracle": table["gap_to_oracle"].min() if shown else nan, "picks_oracle_epoch": nan, "spearman": nan}
    bold = (lambda t: f"**{t}**") if fmt == "markdown" else (lambda t: rf"\textbf{{{t}}}")
    pm = "±" if fmt == "markdown" else r"$\pm$"
    rows = []
    for _, r in table.iterrows():
        name = r["validator"] + (" (control)" if r["validator"] in (DEFAULT, LAST) else "")
        cells = [name if fmt == "markdown" else latex_escape(name)]
        for c in cols:
            v = r[c]
            if np.isnan(v):
                cells.append("–")
                continue
            text = {"selected_acc": f"{v:.1f} {pm} {r['selected_acc_std']:.1f}", "gap_to_oracle": f"{v:.2f}",
                    "picks_oracle_epoch": f"{100 * v:.0f}", "spearman": f"{v:+.3f}"}[c]
            cells.append(bold(text) if np.isclose(v, best[c]) else text)
        p = r["vs_last"]
        low, high = p.interval()
        cells.append("–" if r["validator"] == LAST else
                     f"{p.mean:+.2f} [{low:+.2f}, {high:+.2f}]")
        cells.append(str(int(r["runs"])))
        rows.append(cells)
    header = ["validator", *cols.values(), "vs last epoch, per run (points, 95 % interval)", "runs"]
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"
    frame = pd.DataFrame(rows, columns=[latex_escape(h) for h in header])
    return frame.style.hide(axis="index").to_latex(hrules=True, column_format="l" + "r" * (len(header) - 1))
