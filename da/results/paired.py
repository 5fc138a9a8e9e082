"""Paired comparisons: per-seed differences between two configurations and an interval on their mean.

Two runs are a pair when everything but the compared factor is the same, the training seed and the split
seed included: they share the data split, the stage-1 model and the random draws that do not depend on
the method, so the per-seed difference removes the spread the two have in common.  The interval is the
paired Student t interval, mean(d) ± t_{0.975, n-1} · s.d.(d) / sqrt(n); with 3 seeds t = 4.30, so an
interval excludes 0 only when the differences agree in sign and are large against their spread.  "Better"
is written only where it does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from da.settings import USED_BY, used_by

PAIR_KEYS = ("split_seed", "seed")  # what identifies the two runs of a pair


@dataclass(frozen=True)
class Paired:
    """The differences a - b of the pairs (in key order), their mean, s.d. and the 95 % paired t interval."""

    keys: tuple[tuple, ...]
    diffs: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def mean(self) -> float:
        return float(np.mean(self.diffs)) if self.diffs else math.nan

    @property
    def std(self) -> float:
        return float(np.std(self.diffs, ddof=1)) if self.n > 1 else math.nan

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        if self.n < 2:
            return (math.nan, math.nan)
        half = stats.t.ppf(0.5 + level / 2, self.n - 1) * self.std / math.sqrt(self.n)
        return (self.mean - half, self.mean + half)

    @property
    def excludes_zero(self) -> bool:
        low, high = self.interval()
        return bool(low > 0 or high < 0)

    def verdict(self, a: str, b: str) -> str:
        """One phrase: which is better, or that the interval does not say."""
        if self.n < 2:
            return f"{self.n} pair(s): no interval"
        if not self.excludes_zero:
            return "interval includes 0: no difference shown"
        return f"{a} better" if self.mean > 0 else f"{b} better"


def paired(a: pd.DataFrame, b: pd.DataFrame, col: str = "target_acc") -> Paired:
    """The pairs of runs in ``a`` and ``b`` with the same split seed and seed; runs without a partner are
    left out (a missing seed shortens the comparison, it never mismatches it).  Each side must be one
    configuration: two runs of one side with the same split seed and seed are an error, not a choice."""
    def by_key(side: pd.DataFrame, name: str) -> dict[tuple, float]:
        keys = [tuple(r[k] for k in PAIR_KEYS) for _, r in side.iterrows()]
        if len(set(keys)) != len(keys):
            twice = sorted({k for k in keys if keys.count(k) > 1})[0]
            raise ValueError(f"paired comparison: side {name} holds two runs of split seed {twice[0]} and seed "
                             f"{twice[1]} (two configurations pooled?): compare one configuration at a time")
        return dict(zip(keys, side[col].astype(float)))

    left, right = by_key(a, "a"), by_key(b, "b")
    keys = tuple(sorted(set(left) & set(right)))
    return Paired(keys, tuple(left[k] - right[k] for k in keys))


def format_paired(p: Paired, digits: int = 1) -> dict[str, str]:
    """The cells of a paired comparison: per-pair differences, mean ± s.d., the interval, pairs."""
    low, high = p.interval()
    return {"diffs": ", ".join(f"{d:+.{digits}f}" for d in p.diffs),
            "mean": f"{p.mean:+.{digits}f} ± {p.std:.{digits}f}" if p.n > 1 else f"{p.mean:+.{digits}f}",
            "interval": "–" if math.isnan(low) else f"[{low:+.{digits}f}, {high:+.{digits}f}]",
            "n": str(p.n)}


def configuration_label(row: dict, factors: list[str]) -> str:
    """A configuration as a table reads it: the method (source-only, reference), its prior estimate if any,
    then the other factors that vary."""
    from da.results.tables import LABELS

    if row["method"] == "source_only":
        name = "reference" if row.get("target_labeled_fraction", 0) >= 1 else "source-only"
    else:
        name = str(row["method"])
    if row.get("prior"):
        name += f" + prior ({row['prior']})"
    parts = str(row["method"]).split("+")  # a method's own setting is named only on the rows of a method that reads it
    others = [f"{LABELS.get(f, f)} {row[f]}" for f in factors if f not in ("method", "prior", "target_labeled_fraction")
              and (f not in USED_BY or (row["method"] != "source_only" and used_by(f, parts)))]
    return ", ".join([name, *others])


ANCHORS = ("method", "prior", "target_labeled_fraction")  # what tells source-only and the reference from a method


def configuration_groups(runs: pd.DataFrame, factors: list[str]) -> list[tuple[dict, pd.DataFrame]]:
    """The runs of each configuration (the values of ``factors`` but the pairing keys), with those values."""
    factors = [f for f in factors if f not in PAIR_KEYS]
    return [(dict(zip(factors, key if isinstance(key, tuple) else (key,))), g)
            for key, g in runs.groupby(factors, sort=True, dropna=False)]


def matching_source_only(groups: list[tuple[dict, pd.DataFrame]], row: dict) -> pd.DataFrame | None:
    """The source-only runs of ``groups`` to compare configuration ``row`` with: the same value of every factor
    but the anchors and the methods' own settings (source-only has none), a field it never reads aside
    (:func:`~da.results.tables.anchor_rows`), or None."""
    from da.results.gap import is_source_only
    from da.results.tables import anchor_rows

    anchors = [(r, b) for r, b in groups if is_source_only(b.iloc[:1]).iloc[0]]
    if not anchors:
        return None
    table = pd.DataFrame([r for r, _ in anchors])
    match = anchor_rows(table, row, [f for f in row if f not in ANCHORS and f not in USED_BY])
    return anchors[match.index[0]][1] if len(match) else None


def paired_table(runs: pd.DataFrame, factors: list[str], col: str = "target_acc") -> pd.DataFrame:
    """Every configuration against the source-only runs with the same other factors, each prior-aware
    configuration against its uniform-prior counterpart, and the best label-free configuration against the
    runner-up (by mean ``col``): per-pair differences (points), their
    mean ± s.d. and the 95 % paired t interval; then the best against each other label-free method (not
    source-only, which has its own rows).  Rows that use target labels (the reference) are compared with
    source-only like the rest, but are never the best or the runner-up."""
    from da.results.gap import is_reference, is_source_only

    factors = [f for f in factors if f not in PAIR_KEYS]
    groups = configuration_groups(runs, factors)
    rows = []
    for row, g in groups:
        if is_source_only(g.iloc[:1]).iloc[0]:
            continue
        base = matching_source_only(groups, row)
        if base is not None:
            rows.append({"comparison": f"{configuration_label(row, factors)} − source-only", "kind": "vs source-only",
                         "uses_target_labels": bool(is_reference(g.iloc[:1]).iloc[0]),
                         "paired": paired(g, base, col)})
    if "prior" in factors:  # a prior-aware variant against the same method with the uniform prior
        for row, g in groups:
            if not row["prior"]:
                continue
            base = [b for r, b in groups if not r["prior"] and all(r[f] == row[f] for f in factors if f != "prior")]
            if base:
                rows.append({"comparison": f"{configuration_label(row, factors)} − {configuration_label({**row, 'prior': ''}, factors)}",
                             "kind": "prior vs uniform", "uses_target_labels": False, "paired": paired(g, base[0], col)})
    free = [(row, g) for row, g in groups if not (g["target_labeled_fraction"] >= 1).any()
            and not is_source_only(g.iloc[:1]).iloc[0]]
    free.sort(key=lambda rg: -rg[1][col].mean())
    for rank, (r2, g2) in enumerate(free[1:]):  # the best against the runner-up, then against every other one
        (r1, g1) = free[0]
        rows.append({"comparison": f"{configuration_label(r1, factors)} − {configuration_label(r2, factors)}",
                     "kind": "best vs runner-up" if rank == 0 else "best vs another",
                     "uses_target_labels": False, "paired": paired(g1, g2, col)})
    return pd.DataFrame(rows)


def render_paired_table(table: pd.DataFrame, caption: str = "") -> str:
    header = ["comparison", "per-seed differences (points)", "mean ± s.d. (points)", "95 % interval (paired t)",
              "pairs", "reading"]
    lines = ([caption, ""] if caption else []) + ["| " + " | ".join(header) + " |",
                                                 "| " + " | ".join("---" for _ in header) + " |"]
    for _, r in table.iterrows():
        p: Paired = r["paired"]
        cells = format_paired(p)
        a, b = r["comparison"].split(" − ")
        name = r["comparison"] + (" (uses target labels)" if r["uses_target_labels"] else "")
        lines.append("| " + " | ".join([name, cells["diffs"], cells["mean"], cells["interval"], cells["n"],
                                        p.verdict(a, b)]) + " |")
    return "\n".join(lines) + "\n"
