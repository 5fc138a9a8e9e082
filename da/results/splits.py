"""How much of a configuration's spread comes from the data split: runs on several split seeds x training seeds.

For one configuration with k split seeds and n training seeds each, the one-way random-effects analysis
of variance splits the spread of the k·n accuracies into a part between splits and a part within them:
MS_within = mean over splits of the within-split variance, MS_between = n · variance of the split means,
sigma²_split = max(0, (MS_between - MS_within) / n) and sigma²_seed = MS_within.  The table reports the
mean ± s.d. over all runs, both s.d. and the split's share of the variance sigma²_split / (sigma²_split +
sigma²_seed).  With 3 x 3 runs these are rough estimates: they say which source of spread dominates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from da.results.tables import varying_factors


def split_components(values: pd.DataFrame, col: str = "target_acc") -> dict[str, float]:
    """``values`` has ``split_seed`` and ``col``: the mean, total s.d. and the variance components."""
    groups = [g[col].to_numpy(dtype=float) for _, g in values.groupby("split_seed")]
    sizes = {len(g) for g in groups}
    allv = values[col].to_numpy(dtype=float)
    out = {"n": len(allv), "splits": len(groups), "mean": float(allv.mean()),
           "std": float(allv.std(ddof=1)) if len(allv) > 1 else float("nan")}
    if len(groups) < 2 or len(sizes) != 1 or min(sizes) < 2:  # unbalanced or too small: no decomposition
        return out | {"split_std": float("nan"), "seed_std": float("nan"), "split_share": float("nan")}
    n = sizes.pop()
    ms_within = float(np.mean([g.var(ddof=1) for g in groups]))
    ms_between = n * float(np.var([g.mean() for g in groups], ddof=1))
    var_split = max(0.0, (ms_between - ms_within) / n)
    total = var_split + ms_within
    return out | {"split_std": var_split ** 0.5, "seed_std": ms_within ** 0.5,
                  "split_share": var_split / total if total > 0 else float("nan")}


def split_table(runs: pd.DataFrame, col: str = "target_acc") -> tuple[pd.DataFrame, list[str]]:
    """One row per configuration (every varying factor but the split seed and the seed)."""
    factors = [f for f in (varying_factors(runs) or ["method"]) if f != "split_seed"] or ["method"]
    rows = []
    for key, g in runs.groupby(factors, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        anchors = {f: g[f].iloc[0] for f in ("method", "prior", "target_labeled_fraction")}
        rows.append(anchors | dict(zip(factors, key)) | split_components(g, col))
    table = pd.DataFrame(rows)
    # the gap closed by the pooled means, where the runs hold both anchors (same other factors)
    from da.results.gap import is_reference, is_source_only

    others = [f for f in factors if f not in ("method", "prior", "target_labeled_fraction")]
    closed = []
    for _, r in table.iterrows():
        same = np.logical_and.reduce([table[f] == r[f] for f in others] or [np.ones(len(table), bool)])
        so, ref = table[same & is_source_only(table)], table[same & is_reference(table)]
        if so.empty or ref.empty or is_source_only(table.loc[[r.name]]).iloc[0] or is_reference(table.loc[[r.name]]).iloc[0]:
            closed.append(float("nan"))
        else:
            base, top = so["mean"].iloc[0], ref["mean"].iloc[0]
            closed.append(100 * (r["mean"] - base) / (top - base) if top != base else float("nan"))
    return table.assign(gap_closed=closed), factors


def render_split_table(table: pd.DataFrame, factors: list[str], caption: str) -> str:
    from da.results.tables import LABELS, VALUE_TEXT

    header = [LABELS.get(f, f) for f in factors] + ["target acc (%), all runs", "s.d. from the split (points)",
                                                    "s.d. from the seed (points)", "split's share of the variance (%)",
                                                    "gap closed (%)", "runs (split seeds)"]
    lines = [caption, "", "| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    num = lambda v, fmt: "–" if np.isnan(v) else format(v, fmt)
    for _, r in table.iterrows():
        cells = [str(VALUE_TEXT.get(f, {}).get(r[f], r[f])) for f in factors]
        cells += [f"{r['mean']:.1f} ± {num(r['std'], '.1f')}", num(r["split_std"], ".1f"), num(r["seed_std"], ".1f"),
                  num(100 * r["split_share"], ".0f"), num(r["gap_closed"], ".0f"), f"{r['n']} ({r['splits']})"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
