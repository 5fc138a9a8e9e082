"""Ablation tables: mean +- std over seeds per configuration, the gain over source-only, best in bold.

One summary DataFrame (numbers) feeds both renderers, Markdown and LaTeX (booktabs through pandas'
Styler), so the two never disagree.  Rows are the factors that vary across the runs (the seed aside);
runs that differ only in their seed form one row.  A row with fewer seeds than the others is flagged in
its ``seeds`` cell rather than silently averaged with the rest.  The label-free selected result and the
oracle (best target-test epoch, which looks at target labels) never share a table.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from da.config import RunConfig, config_fields
from da.settings import USED_BY, used_by

# Fields that never define an ablation row: the seed is what rows average over; the rest say where a run ran.
NON_FACTORS = {"seed"} | {f.name for f in config_fields() if f.metadata.get("hash") is False}
FACTOR_ORDER = ("stages", "method", "cls_loss")
LABELS = {"stages": "stages", "method": "method", "cls_loss": "cls loss", "prior": "target prior",
          "target_labeled_fraction": "target labels"}
# how a factor's values read in a table ('' prior: uniform, none estimated; 1.0 target labels: the reference)
VALUE_TEXT = {"prior": {"": "uniform"},
              "target_labeled_fraction": {0.0: "none", 1.0: "all (reference, uses target labels)"}}


def varying_factors(runs: pd.DataFrame) -> list[str]:
    fields = [f.name for f in config_fields() if f.name not in NON_FACTORS and f.name in runs.columns]
    varying = [f for f in fields if runs[f].astype(str).nunique() > 1]
    return sorted(varying, key=lambda f: (FACTOR_ORDER.index(f) if f in FACTOR_ORDER else len(FACTOR_ORDER), f))


def summarise(runs: pd.DataFrame, metrics: dict[str, str], expected_seeds: int | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Per group of seeds: the factors, n, and mean/std of each metric column (name -> label)."""
    factors = varying_factors(runs) or ["method"]
    expected = expected_seeds or int(runs.groupby("group").size().max())
    rows = []
    for _, g in runs.groupby("group", sort=False):
        row = {f: g[f].iloc[0] for f in factors}
        row["n"] = len(g)
        row["expected"] = expected
        row["seeds"] = ",".join(str(s) for s in sorted(g["seed"]))
        keys = list(zip(g["split_seed"], g["seed"])) if "split_seed" in g else [(0, sd) for sd in g["seed"]]
        for col in metrics:
            values = g[col].to_numpy(dtype=float)
            row[f"{col}_mean"] = float(np.mean(values))
            row[f"{col}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
            row[f"{col}_values"] = dict(zip(keys, values.tolist()))  # per (split seed, seed): for paired tests
        rows.append(row)
    table = pd.DataFrame(rows)
    order = {f: (sorted(table[f].unique(), key=_factor_key(f))) for f in factors}
    table = table.sort_values(factors, key=lambda s: s.map(lambda v: order[s.name].index(v)), kind="stable")
    return table.reset_index(drop=True), factors


def _factor_key(field: str):
    def key(value):
        if field == "method":  # source-only first: it is the baseline every other row is read against
            return (value != "source_only", str(value))
        if isinstance(value, (int, float, np.number)):
            return (0, value)
        return (1, value != default, str(value))  # text factors: the config default (the baseline) first
    default = getattr(RunConfig(), field, None)
    return key


# Fields read only by pseudo-labels and the prior estimate: source-only without a prior and the reference train
# the same at every value, so they anchor a method's row at any value (gap_warm's adapt_from_epoch 1 rows).
INERT_FOR_ANCHORS = ("adapt_from_epoch",)


def anchor_rows(frame: pd.DataFrame, row, factors: list[str]) -> pd.DataFrame:
    """The rows of ``frame`` (anchor candidates: source-only or the reference) with ``row``'s value of every
    factor in ``factors``, where a field of INERT_FOR_ANCHORS may differ on a candidate without a prior; a
    candidate equal on every factor comes first."""
    if frame.empty:
        return frame
    inert = frame["prior"].eq("") if "prior" in frame else pd.Series(True, index=frame.index)
    same = np.ones(len(frame), bool)
    exact = np.ones(len(frame), bool)
    for f in factors:
        equal = (frame[f] == row[f]).to_numpy()
        exact &= equal
        same &= equal | (inert.to_numpy() if f in INERT_FOR_ANCHORS else False)
    order = np.argsort(~exact[same], kind="stable")
    return frame[same].iloc[order]


def add_gain(table: pd.DataFrame, factors: list[str], col: str) -> pd.DataFrame:
    """``<col>_gain``: the mean minus that of the source-only row with the same other factors."""
    table = table.copy()
    gains, values = [], []
    for _, row in table.iterrows():
        if "method" not in factors or row["method"] == "source_only":
            gains.append(float("nan"))
            values.append({})
            continue
        # a method's own setting (aad_k) varies with the method: source-only has it at its default, unused
        match = anchor_rows(table[table["method"] == "source_only"], row,
                            [f for f in factors if f != "method" and f not in USED_BY])
        gains.append(float(row[f"{col}_mean"] - match[f"{col}_mean"].iloc[0]) if len(match) else float("nan"))
        values.append(paired_gain_values(row[f"{col}_values"], match[f"{col}_values"].iloc[0]) if len(match) else {})
    table[f"{col}_gain"] = gains
    table[f"{col}_gain_values"] = values
    return table


def paired_gain_values(values: dict, base: dict) -> dict:
    """Per (split seed, seed) present in both: the value minus its source-only partner's."""
    return {k: values[k] - base[k] for k in values if k in base}


def shown_best(rows: pd.DataFrame, mean_col: str, values_col: str, lower_better: bool = False) -> bool:
    """Whether the best row of ``rows`` (highest mean, or lowest) is shown to be better than the runner-up:
    the 95 % paired t interval of their per-seed differences excludes 0.  "Best" is written only then."""
    from da.results.paired import Paired

    ranked = rows.dropna(subset=[mean_col]).sort_values(mean_col, ascending=lower_better, kind="stable")
    if len(ranked) < 2:
        return False
    a, b = ranked[values_col].iloc[0], ranked[values_col].iloc[1]
    keys = sorted(set(a) & set(b))
    return Paired(tuple(keys), tuple(a[k] - b[k] for k in keys)).excludes_zero


def ablation_table(runs: pd.DataFrame, expected_seeds: int | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Target-test accuracy and macro F1 (percent, at the epoch selected on source validation)."""
    table, factors = summarise(runs, {"target_acc": "target acc", "target_f1": "target macro-F1"}, expected_seeds)
    return add_gain(table, factors, "target_acc"), factors


def oracle_table(runs: pd.DataFrame, expected_seeds: int | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The oracle: target-test accuracy at the best target-test epoch (uses target labels; an upper bound)."""
    table, factors = summarise(runs, {"oracle_acc": "oracle acc", "oracle_f1": "oracle macro-F1"}, expected_seeds)
    return table, factors


def baseline_comparison(runs: pd.DataFrame, baseline: pd.DataFrame, col: str = "target_acc") -> tuple[pd.DataFrame, list[str]]:
    """Each group of ``runs`` against the ``baseline`` runs with the same ablation factors (stages, method,
    cls_loss), the question being whether a change of protocol moved the results: both means ± s.d., the
    difference, and whether it lies within one baseline seed s.d."""
    keys = [f for f in FACTOR_ORDER if f in runs.columns and f in baseline.columns]

    def by_key(frame: pd.DataFrame) -> dict[tuple, np.ndarray]:
        return {k if isinstance(k, tuple) else (k,): g[col].to_numpy(dtype=float) for k, g in frame.groupby(keys)}

    ours, theirs = by_key(runs), by_key(baseline)
    factors = [f for f in keys if runs[f].astype(str).nunique() > 1] or ["method"]
    rows = []
    for key, values in ours.items():
        if key not in theirs:
            continue
        base = theirs[key]
        sd = lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")
        diff = float(values.mean() - base.mean())
        row = dict(zip(keys, key))
        rows.append({**{f: row[f] for f in factors}, "base_n": len(base), "base_mean": float(base.mean()),
                     "base_std": sd(base), "n": len(values), "mean": float(values.mean()), "std": sd(values),
                     "diff": diff, "within_1sd": bool(abs(diff) <= sd(base))})
    table = pd.DataFrame(rows)
    if not table.empty:
        order = {f: sorted(table[f].unique(), key=_factor_key(f)) for f in factors}
        table = table.sort_values(factors, key=lambda c: c.map(lambda v: order[c.name].index(v)), kind="stable")
    return table.reset_index(drop=True), factors


def render_baseline_comparison(table: pd.DataFrame, factors: list[str], caption: str) -> str:
    head = [LABELS.get(f, f) for f in factors] + ["baseline (%)", "this (%)", "difference (points)",
                                                  "within one baseline s.d."]
    lines = [caption, "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for _, r in table.iterrows():
        cells = [str(r[f]) for f in factors] + [f"{r['base_mean']:.1f} ± {r['base_std']:.1f} (n={r['base_n']})",
                                                f"{r['mean']:.1f} ± {r['std']:.1f} (n={r['n']})", ("0.0" if abs(r["diff"]) < 0.05 else f"{r['diff']:+.1f}"),
                                                "yes" if r["within_1sd"] else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _class_shares(confusion, axis: int) -> np.ndarray:
    counts = np.asarray(confusion, dtype=float).sum(axis=axis)
    return 100 * counts / counts.sum()


def prediction_shares(runs: pd.DataFrame, expected_seeds: int | None = None) -> tuple[pd.DataFrame, list[str], dict]:
    """A label-shift diagnostic that reads no target label: per class, the share (%) of target-test images
    *predicted* as that class (column sums of the confusion matrix), mean and s.d. over seeds; and the
    class shares of the source (row sums of the source-validation confusion matrix, a stratified split,
    hence the source-train shares too). Marginal alignment pulls these towards the source shares.
    Returns the table, its factors and {class: source share}."""
    classes = runs["record"].iloc[0]["classes"]
    shares = np.stack([_class_shares(r["target_test"]["confusion"], 0) for r in runs["record"]])
    runs = runs.assign(**{f"share_{c}": shares[:, i] for i, c in enumerate(classes)})
    table, factors = summarise(runs, {f"share_{c}": c for c in classes}, expected_seeds)
    source = _class_shares(runs["record"].iloc[0]["source_val"]["confusion"], 1)
    return table, factors, dict(zip(classes, source.round(1).tolist()))


# ---------------------------------------------------------------------------------------------- rendering
def _cells(table: pd.DataFrame, factors: list[str], bold, pm: str, fmt_gain, esc=lambda t: t
           ) -> tuple[list[str], list[list[str]]]:
    metric_cols = [c[:-5] for c in table.columns if c.endswith("_mean")]
    names = {"target_acc": "target acc (%)", "target_f1": "target macro-F1 (%)", "oracle_acc": "oracle acc (%)",
             "oracle_f1": "oracle macro-F1 (%)", "pad": "proxy A-distance",
             "target_acc_corrected": "prior-corrected acc (%)", "prior_l1": "prior L1 error"}
    names.update({c: f"{c[len('share_'):]} (%)" for c in metric_cols if c.startswith("share_")})
    names.update({c: f"{c.split('_')[1]} -> {c.split('_')[2]} (%)" for c in metric_cols if c.startswith("conf_")})
    names.update({c: f"{c[len('recall_'):]} recall (%)" for c in metric_cols if c.startswith("recall_")})
    no_best = {c for c in metric_cols if c.startswith(("share_", "conf_", "recall_"))}  # descriptive, no best
    lower_better = {"pad", "prior_l1"}  # a smaller distance or error is the better value
    digits = {"pad": 2, "prior_l1": 3}
    header = [esc(LABELS.get(f, f)) for f in factors] + [esc(names.get(c, c)) for c in metric_cols]
    gain_cols = [c for c in table.columns if c.endswith("_gain")]
    header += ["gain vs source-only (points)" for _ in gain_cols]
    if "gap_closed" in table.columns:
        header.append(esc("gap closed (%)"))
    header.append("seeds")
    # the reference uses target labels: it is no contender for the best value of a column
    contenders = table[~_uses_target_labels(table)]
    best = {c: (contenders[f"{c}_mean"].min() if c in lower_better else contenders[f"{c}_mean"].max())
            for c in metric_cols}
    best.update({c: table[c].max() for c in gain_cols})
    # bold only where the best is shown to beat the runner-up (paired per seed, the interval excludes 0)
    shown = {c: f"{c}_values" in table and shown_best(contenders, f"{c}_mean", f"{c}_values", c in lower_better)
             for c in metric_cols}
    shown.update({c: f"{c}_values" in table and shown_best(table, c, f"{c}_values") for c in gain_cols})
    rows = []
    for _, r in table.iterrows():
        # a method's own setting in a row whose method does not read it is no value of that row
        cells = [esc("–" if f in USED_BY and "method" in r and not used_by(f, str(r["method"]).split("+"))
                     else str(VALUE_TEXT.get(f, {}).get(r[f], r[f]))) for f in factors]
        for c in metric_cols:
            d = digits.get(c, 1)
            if math.isnan(r[f"{c}_mean"]):
                cells.append("–")
                continue
            std = "n/a" if math.isnan(r[f"{c}_std"]) else f"{r[f'{c}_std']:.{d}f}"
            text = f"{r[f'{c}_mean']:.{d}f} {pm} {std}"
            is_best = (c not in no_best and shown[c] and np.isclose(r[f"{c}_mean"], best[c])
                       and not _uses_target_labels(r))
            cells.append(bold(text) if is_best else text)
        for c in gain_cols:
            if math.isnan(r[c]):
                cells.append("–")
            else:
                text = fmt_gain(r[c])
                cells.append(bold(text) if shown[c] and np.isclose(r[c], best[c]) else text)
        if "gap_closed" in table.columns:
            cells.append("–" if math.isnan(r["gap_closed"]) else f"{r['gap_closed']:.0f}")
        flag = "" if r["n"] >= r["expected"] else f" (missing {r['expected'] - r['n']})"
        cells.append(f"{r['n']}{flag}")
        rows.append(cells)
    return header, rows


def _uses_target_labels(rows):
    """True for the rows (a table, or one row) of runs trained with every target-train label."""
    if "target_labeled_fraction" not in rows:
        return False if isinstance(rows, pd.Series) else np.zeros(len(rows), bool)
    return rows["target_labeled_fraction"] >= 1


def render_markdown(table: pd.DataFrame, factors: list[str], caption: str = "") -> str:
    header, rows = _cells(table, factors, bold=lambda t: f"**{t}**", pm="±", fmt_gain=lambda g: f"{g:+.1f}")
    lines = ([caption, ""] if caption else []) + ["| " + " | ".join(header) + " |",
                                                 "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """Text as LaTeX typesets it literally (class names may hold &, $, braces, ...)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def render_cells_markdown(table: pd.DataFrame, caption: str) -> str:
    """A Markdown table of already formatted cells (a non-default index becomes the first column, ``class``), for
    every task's tables that are not ablations (detection, HPO studies)."""
    if not isinstance(table.index, pd.RangeIndex):
        table = table.reset_index(names="class")
    header = [str(c) for c in table.columns]
    lines = [caption, "", "| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def render_cells_latex(table: pd.DataFrame, caption: str, label: str, left: tuple[str, ...] = ("class",)) -> str:
    """The same table in LaTeX (booktabs, through pandas' Styler): every cell escaped, ± as $\\pm$; the columns
    in ``left`` left-aligned, the rest right-aligned."""
    if not isinstance(table.index, pd.RangeIndex):
        table = table.reset_index(names="class")

    def tex(v) -> str:
        return latex_escape(str(v)).replace("±", r"$\pm$").replace("<", r"\textless{}").replace(">", r"\textgreater{}")

    cells = table.astype(str).map(tex)
    cells.columns = [tex(c) for c in table.columns]
    align = "".join("l" if c in left else "r" for c in table.columns)
    return cells.style.hide(axis="index").to_latex(hrules=True, caption=tex(caption), label=label,
                                                   column_format=align, position_float="centering")


def render_latex(table: pd.DataFrame, factors: list[str], caption: str = "", label: str = "") -> str:
    header, rows = _cells(table, factors, bold=lambda t: rf"\textbf{{{t}}}", pm=r"$\pm$",
                          fmt_gain=lambda g: f"${g:+.1f}$", esc=latex_escape)
    frame = pd.DataFrame(rows, columns=header)
    styler = frame.style.hide(axis="index")
    return styler.to_latex(hrules=True, caption=latex_escape(caption) or None, label=label or None,
                           column_format="l" * len(factors) + "r" * (len(header) - len(factors)),
                           position_float="centering" if caption else None)
