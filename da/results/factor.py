"""One factor of the recipe side by side (the fine-tuning strategy, the weight average, ...): for each method,
every value's target accuracy (mean ± s.d. over seeds) and its paired per-seed difference to the same method at
the baseline value, with the 95 % paired t interval (:mod:`da.results.paired`).  The reference (source-only with
every target-train label) is a method of its own here, paired with the reference at the baseline value."""

from __future__ import annotations

from typing import Any, Callable

import pandas as pd

from da.config import RunConfig
from da.results.gap import is_reference
from da.results.paired import PAIR_KEYS, format_paired, paired
from da.results.tables import varying_factors

REFERENCE = "reference (uses target labels)"


def held_factors(runs: pd.DataFrame, factor: str, baseline: Any) -> list[str]:
    """The other factors that vary among the runs at ``baseline``: a row of :func:`factor_table` holds each of
    them at one value, so that a configuration is paired only with itself at the baseline (a folder that varies
    the weight average and the strategy together pairs the averaged partial:3 runs with the plain partial:3 runs,
    not with every partial:3 run).  A factor that moves only with ``factor`` (partial:5's stage-1 strategy) is not
    held: it names no configuration of its own at the baseline."""
    base = runs[runs[factor] == baseline]
    return [f for f in varying_factors(runs) if f not in (factor, "method", "target_labeled_fraction", *PAIR_KEYS)
            and base[f].astype(str).nunique() > 1]


def _named(method: str, away: list[tuple[str, Any]]) -> str:
    return f"{method} ({', '.join(f'{f} {v}' for f, v in away)})" if away else method


def factor_table(runs: pd.DataFrame, factor: str, baseline: Any, col: str = "target_acc",
                 extra: Callable[[pd.DataFrame], dict] | None = None) -> pd.DataFrame:
    """One row per (method, value of ``factor``), source-only, then the reference, then the methods by name, the
    ``baseline`` value first in each; ``extra(runs of the row)`` adds columns of the caller's own.  Where other
    factors vary at the baseline (:func:`held_factors`), a method's rows are per value of them too, and its name
    says which (``shot+mcc (weight_ema 0.99)``)."""
    rows = []
    held = held_factors(runs, factor, baseline)
    runs = runs.assign(method=runs["method"].where(~is_reference(runs), REFERENCE))
    if held:  # a held factor is named where it is away from its default
        default = RunConfig()
        runs = runs.assign(method=[_named(r["method"], [(f, r[f]) for f in held if r[f] != getattr(default, f, None)])
                                   for _, r in runs.iterrows()])
    for (method, value), g in runs.groupby(["method", factor], sort=False):
        base = runs[(runs["method"] == method) & (runs[factor] == baseline)]
        rows.append({"method": method, factor: value, "n": len(g), "mean": g[col].mean(), "std": g[col].std(ddof=1),
                     **(extra(g) if extra else {}),
                     "paired": paired(g, base, col) if value != baseline and len(base) else None})
    table = pd.DataFrame(rows)
    order = {m: i for i, m in enumerate(sorted(table["method"].unique(),
                                               key=lambda m: (m != "source_only", m != REFERENCE, m)))}
    table["_m"] = table["method"].map(order)
    table["_s"] = table[factor].map(lambda v: (v != baseline, len(str(v)), str(v)))
    return table.sort_values(["_m", "_s"]).drop(columns=["_m", "_s"]).reset_index(drop=True)


def render_factor_table(table: pd.DataFrame, factor: str, baseline: Any, caption: str, header: str | None = None,
                        extra: tuple[tuple[str, Callable[[pd.Series], str]], ...] = (),
                        show: Callable[[Any], str] = str) -> str:
    """Markdown of :func:`factor_table`: method, the factor's value (column ``header``, each value as ``show``
    writes it), accuracy, the ``extra`` columns (title, cell of a row), then the paired difference to
    ``baseline``."""
    head = ["method", header or factor, "target acc. (%)", *(title for title, _ in extra),
            f"− {show(baseline)}, per seed (points)", "mean ± s.d.", "95 % interval (paired t)", "reading"]
    lines = [caption, "", "| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for _, r in table.iterrows():
        name = "source-only" if r["method"] == "source_only" else r["method"]
        cells = [name, show(r[factor]), f"{r['mean']:.1f} ± {r['std']:.1f} (n={r['n']})", *(cell(r) for _, cell in extra)]
        p = r["paired"]
        if p is None:
            cells += ["(baseline)", "", "", ""]
        else:
            f = format_paired(p)
            cells += [f["diffs"], f["mean"], f["interval"], p.verdict(show(r[factor]), show(baseline))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
