"""Do no harm: whether an adapted model ever loses to source-only, as a whole or on one class.

Per configuration (every row of the gap table but source-only and the reference), against the source-only
run of the same split seed and seed: how many runs lose accuracy, the smallest paired gain, and per class the change of its recall
(target test, at the reported epoch where the records keep a confusion matrix per epoch, else at the
epoch kept in training).  A class that loses
more than ``CLASS_HARM`` points in some run is named with the run and where its images went.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from da.results.gap import GAP_FACTORS, is_reference, is_source_only
from da.results.load import reported_confusion
from da.results.paired import PAIR_KEYS, configuration_groups, configuration_label, matching_source_only, paired
from da.results.tables import varying_factors

CLASS_HARM = 20.0  # points of one class's recall (issue 29: a loss beyond it must be explained)


def _rates(row) -> np.ndarray:
    m = np.asarray(reported_confusion(row), dtype=float)
    return 100 * m / np.maximum(m.sum(1, keepdims=True), 1)


def harm_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (the factors that vary in ``runs``, a method's own settings included, as the
    gap table's rows), each against the source-only runs with the same other factors: runs paired, runs losing
    to source-only, the smallest gain (points), the largest drop of one class's recall (class, points, split
    seed / seed, where its images went) and how many (run, class) drops exceed CLASS_HARM."""
    if not is_source_only(runs).any():
        raise ValueError("no source-only run to measure harm against")
    factors = [f for f in dict.fromkeys([*GAP_FACTORS, *varying_factors(runs)]) if f not in PAIR_KEYS]
    groups = configuration_groups(runs, factors)
    rows = []
    for row, g in groups:
        if is_source_only(g.iloc[:1]).iloc[0] or is_reference(g.iloc[:1]).iloc[0]:
            continue
        base = matching_source_only(groups, row)
        if base is None:
            continue
        base_rates = {tuple(r[k] for k in PAIR_KEYS): _rates(r) for _, r in base.iterrows()}
        p = paired(g, base)
        worst, over = None, 0
        for _, r in g.iterrows():
            pair = tuple(r[k] for k in PAIR_KEYS)
            if pair not in base_rates:
                continue
            rates, before = _rates(r), base_rates[pair]
            classes = r["record"]["classes"]
            change = np.diag(rates) - np.diag(before)
            over += int(np.sum(change < -CLASS_HARM))
            c = int(np.argmin(change))
            if worst is None or change[c] < worst["points"]:
                moved = rates[c].copy()
                moved[c] = -1
                worst = {"class": classes[c], "points": float(change[c]), "run": f"split {pair[0]} / seed {pair[1]}",
                         "went_to": classes[int(np.argmax(moved))], "share": float(moved.max())}
        rows.append({**row, "label": configuration_label(row, factors), "runs": p.n,
                     "losing": int(np.sum(np.array(p.diffs) < 0)), "min_gain": min(p.diffs) if p.n else np.nan,
                     "worst": worst, "class_drops": over})
    return pd.DataFrame(rows)


def render_harm_table(table: pd.DataFrame) -> str:
    lines = ["| method | runs paired | runs below source-only | smallest gain (points) | largest drop of one class's "
             f"recall (points) | class drops > {CLASS_HARM:.0f} points |", "| --- | --- | --- | --- | --- | --- |"]
    for _, r in table.iterrows():
        name = r["label"] + (f" + {100 * r['target_labeled_fraction']:.0f}% target labels"
                             if 0 < r["target_labeled_fraction"] < 1 else "")
        w = r["worst"]
        drop = "–" if w is None else (f"{w['class']} {w['points']:+.1f} ({w['run']}; now {w['share']:.0f} % "
                                      f"{w['went_to']})")
        lines.append(f"| {name} | {r['runs']} | {r['losing']} | {r['min_gain']:+.1f} | {drop} | {r['class_drops']} |")
    return "\n".join(lines) + "\n"
