"""Does one pair's ranking of configurations carry to the other?

The protocol reports on each pair the configuration that the *other* pair's records choose
(:func:`da.results.protocol.best_configurations`).  Over the configurations both pairs ran, this measures how
well that works: the rank agreement of their mean target accuracies across the pairs (Spearman's rho and
Kendall's tau-b), and, per pair, what the choice costs against the configuration that pair's own target labels
would pick (the oracle: it reads that pair's target labels, so it is a bound on what any choice could give,
never a result).  The gap closed of a configuration is against source-only and the reference of its own source
recipe (``label_smoothing`` ...), as in :func:`da.results.gap.gap_table`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, spearmanr

from da import settings as declared
from da.results.gap import is_reference, is_source_only
from da.results.paired import PAIR_KEYS, format_paired, paired
from da.results.protocol import (RECIPE_FIELDS, best_configurations, configuration, configuration_settings,
                                 pair_of, preferred)
from da.results.tables import render_cells_markdown, varying_factors

# what may differ between the runs of one pair's candidates: the configuration itself and the anchors' labels;
# anything else (a budget, a split seed, a backbone) would mix designs in one mean
_CONFIGURATION_FIELDS = {"method", "target_labeled_fraction", "prior", *RECIPE_FIELDS, *declared.USED_BY}


@dataclass(frozen=True)
class PairScores:
    """One pair's label-free configurations: mean target accuracy (%), runs and gap closed (%) of each."""
    pair: str
    scores: pd.DataFrame  # index: configuration; columns method, own and recipe (its settings), acc, n, closed
    choice: str  # best_configurations over these runs: what this pair's records choose for the other pair
    runs: dict  # configuration -> its runs, for comparisons paired per split seed and seed


def pair_scores(runs: pd.DataFrame) -> PairScores:
    """Per label-free configuration (no target label, no prior, not source-only) of one pair's runs, already
    selected by the pair's rule: its mean target accuracy, its runs, and the share of its recipe's gap closed."""
    pairs = {pair_of(s, t) for s, t in zip(runs["source"], runs["target"])}
    if len(pairs) != 1:
        raise ValueError(f"the runs of one pair are expected, these hold {', '.join(sorted(pairs))}")
    runs = runs[runs["prior"] == ""]
    mixed = [f for f in varying_factors(runs) if f not in _CONFIGURATION_FIELDS]
    if mixed:
        raise ValueError(f"the runs differ in {', '.join(mixed)}: pass the candidates of one design (one budget, "
                         f"one split seed, ...) so that every configuration's mean is over the same runs")
    recipe = runs.apply(lambda r: tuple(r[f] for f in RECIPE_FIELDS if f in r), axis=1)
    anchors = {}
    for key in recipe.unique():
        mine = runs[recipe == key]
        so, ref = mine[is_source_only(mine)]["target_acc"], mine[is_reference(mine)]["target_acc"]
        anchors[key] = (so.mean(), ref.mean()) if len(so) and len(ref) else (np.nan, np.nan)
    free = (runs["target_labeled_fraction"] == 0) & (runs["method"] != "source_only")
    names = runs[free].apply(configuration, axis=1)
    rows, groups = {}, {}
    for name, g in runs[free].groupby(names):
        groups[name] = g
        so, ref = anchors[recipe[g.index[0]]]
        acc = float(g["target_acc"].mean())
        own, changed = configuration_settings(g.iloc[0])
        rows[name] = {"method": g["method"].iloc[0], "own": own, "recipe": changed, "acc": acc, "n": len(g),
                      "closed": 100 * (acc - so) / (ref - so)}
    if not rows:
        raise ValueError("no label-free adaptation runs among these runs: nothing to rank")
    return PairScores(pairs.pop(), pd.DataFrame.from_dict(rows, orient="index"), best_configurations(runs, 1)[0],
                      groups)


@dataclass(frozen=True)
class Transfer:
    """The configurations both pairs ran, and how one pair's ranking carries to the other."""
    a: PairScores
    b: PairScores
    table: pd.DataFrame  # index: configuration both ran; acc/closed/rank of each pair (suffixes _a, _b)
    spearman: float
    spearman_p: float
    kendall: float
    kendall_p: float

    def label(self, name: str) -> str:
        """A configuration's short name in the table, its full name where the table does not hold it."""
        return self.table.loc[name, "label"] if name in self.table.index else name

    def choice_on(self, side: str) -> dict:
        """On pair ``side`` ('a' or 'b'): the configuration the other pair chose and the oracle configuration of
        this pair among those both ran (ties: :func:`da.results.protocol.preferred`), their short names, accuracy
        and gap closed here, the regret (oracle minus choice, points), the mean accuracy of the configurations
        both ran (what a choice at random gives on average) and how many of them close half of this gap; each
        comparison of the choice also paired per split seed and seed (mean and 95 % interval)."""
        here, other = (self.a, self.b) if side == "a" else (self.b, self.a)
        both = here.scores.loc[self.table.index]
        oracle = preferred(both["acc"])[0]
        chosen = here.scores.loc[other.choice] if other.choice in here.scores.index else None
        regret = vs_random = None
        if chosen is not None:
            pool = pd.concat([here.runs[c] for c in self.table.index])
            average = pool.groupby(list(PAIR_KEYS), as_index=False)["target_acc"].mean()
            regret = _summary(paired(here.runs[oracle], here.runs[other.choice]))
            vs_random = _summary(paired(here.runs[other.choice], average))
        return {"pair": here.pair, "from": other.pair, "chosen": other.choice,
                "chosen_label": self.label(other.choice),
                "chosen_acc": float(chosen["acc"]) if chosen is not None else None,
                "chosen_closed": float(chosen["closed"]) if chosen is not None else None,
                "oracle": oracle, "oracle_label": self.label(oracle),
                "oracle_acc": float(both.loc[oracle, "acc"]), "oracle_closed": float(both.loc[oracle, "closed"]),
                "regret": float(both.loc[oracle, "acc"] - chosen["acc"]) if chosen is not None else None,
                "regret_paired": regret, "vs_random_paired": vs_random,
                "mean_acc": float(both["acc"].mean()), "half": int((both["closed"] >= 50).sum())}


def _summary(p) -> dict:
    """A paired comparison as JSON holds it: the mean, the 95 % interval as the tables write it, the pairs."""
    return {"mean": p.mean, "interval": format_paired(p)["interval"], "n": p.n}


def _spread(s: dict) -> str:
    return f"{s['mean']:+.1f} {s['interval']}, {s['n']} pairs"


def transfer_of(folders_a, folders_b, selection: str | None = None, strict: bool = False) -> Transfer:
    """:func:`transfer` of the runs under two lists of folders (one pair each, a run archived twice counted
    once), each run's epoch re-selected by ``selection`` (a validator's name) when given."""
    from da.results.load import load_runs_of
    from da.results.selection import reselect

    sides = [load_runs_of(folders, strict=strict) for folders in (folders_a, folders_b)]
    return transfer(*(reselect(runs, selection) if selection else runs for runs in sides))


def short_names(scores: pd.DataFrame) -> list[str]:
    """Each configuration by its method and only those of its own settings whose value differs among the
    configurations of that method here (as a table names only the factors that vary), then its recipe."""
    names = []
    for _, row in scores.iterrows():
        peers = scores[scores["method"] == row["method"]]["own"]
        varying = [k for k, v in row["own"].items() if any(p.get(k) != v for p in peers)]
        names.append(", ".join([row["method"], *(f"{k} {row['own'][k]}" for k in varying),
                                *(f"{k} {v}" for k, v in row["recipe"].items())]))
    return names


def transfer(runs_a: pd.DataFrame, runs_b: pd.DataFrame) -> Transfer:
    """Rank agreement across two pairs over the configurations both ran (at least 3)."""
    a, b = pair_scores(runs_a), pair_scores(runs_b)
    common = sorted(set(a.scores.index) & set(b.scores.index))
    if len(common) < 3:
        raise ValueError(f"{len(common)} configuration(s) run on both {a.pair} and {b.pair}: a rank agreement "
                         f"needs at least 3")
    table = a.scores.loc[common].add_suffix("_a").join(b.scores.loc[common][["acc", "n", "closed"]].add_suffix("_b"))
    table = table.rename(columns={"method_a": "method", "own_a": "own", "recipe_a": "recipe"})
    table.insert(0, "label", short_names(table))
    for side in ("a", "b"):
        table[f"rank_{side}"] = table[f"acc_{side}"].rank(ascending=False, method="min").astype(int)
    rho, rho_p = spearmanr(table["acc_a"], table["acc_b"])
    tau, tau_p = kendalltau(table["acc_a"], table["acc_b"])
    return Transfer(a, b, table.sort_values(["rank_a", "rank_b"]), float(rho), float(rho_p), float(tau), float(tau_p))


def transfer_markdown(t: Transfer) -> str:
    """The table (one row per configuration both pairs ran, by its short name) and, below it, each pair's
    choice against its oracle."""
    rows = t.table.reset_index(drop=True)
    cells = pd.DataFrame({"configuration (settings away from their default)": rows["label"]})
    for side, pair in (("a", t.a.pair), ("b", t.b.pair)):
        cells[f"{pair}: acc (%)"] = rows[f"acc_{side}"].map("{:.1f}".format)
        cells[f"{pair}: gap closed (%)"] = rows[f"closed_{side}"].map("{:.0f}".format)
        cells[f"{pair}: rank"] = rows[f"rank_{side}"]
    cells["runs"] = [f"{x}/{y}" for x, y in zip(rows["n_a"], rows["n_b"])]
    caption = (f"Each label-free configuration run on both pairs: mean target test accuracy, the share of its own "
               f"recipe's gap closed and its rank on each pair ({len(rows)} configurations; runs: {t.a.pair} / "
               f"{t.b.pair}). Rank agreement of the accuracies across the pairs: Spearman rho {t.spearman:+.2f} "
               f"(p = {t.spearman_p:.2f}), Kendall tau-b {t.kendall:+.2f} (p = {t.kendall_p:.2f}); the configurations "
               f"share methods and settings, so they are not independent draws and the p-values are indicative only.")
    lines = [render_cells_markdown(cells, caption)]
    for side in ("a", "b"):
        c = t.choice_on(side)
        got = (f"gives {c['chosen_acc']:.1f} % ({c['chosen_closed']:.0f} % of the gap)" if c["chosen_acc"] is not None
               else f"was not run on {c['pair']}")
        lines.append(f"- **{c['pair']}**: the configuration {c['from']}'s records choose, `{c['chosen_label']}`, {got}; "
                     f"the best on {c['pair']}'s own target labels (an oracle, never a result), `{c['oracle_label']}`, "
                     f"gives {c['oracle_acc']:.1f} % ({c['oracle_closed']:.0f} %)"
                     + (f", a regret of {c['regret']:.1f} points (oracle minus choice per seed: "
                        f"{_spread(c['regret_paired'])})" if c["regret"] is not None else "")
                     + f"; a configuration drawn at random gives {c['mean_acc']:.1f} % on average"
                     + (f" (choice minus that average per seed: {_spread(c['vs_random_paired'])})"
                        if c["vs_random_paired"] else "") + f". {c['half']} of "
                     f"{len(rows)} configurations close half of {c['pair']}'s gap.")
    return "\n".join(lines) + "\n"


def transfer_figure_data(t: Transfer) -> dict:
    return {"pairs": [t.a.pair, t.b.pair], "spearman": round(t.spearman, 4), "kendall": round(t.kendall, 4),
            "choices": {side: t.choice_on(side) for side in ("a", "b")},
            "configurations": [{"configuration": c, "label": r["label"], "method": c.split(",")[0],
                                "closed": [round(float(r["closed_a"]), 3), round(float(r["closed_b"]), 3)],
                                "acc": [round(float(r["acc_a"]), 3), round(float(r["acc_b"]), 3)]}
                               for c, r in t.table.iterrows()]}


def transfer_figure(data: dict, out: Path) -> list[Path]:
    """Gap closed on one pair against the other, a point per configuration (colour: its method), half of each
    gap dashed, the configuration each pair's records choose for the other ringed."""
    import matplotlib.pyplot as plt

    from da.results.figures import palette, save_figure

    configs = data["configurations"]
    methods = sorted({c["method"] for c in configs})
    colours = dict(zip(methods, palette(len(methods))))
    fig, ax = plt.subplots(figsize=(8.4, 5))
    for m in methods:
        pts = [c["closed"] for c in configs if c["method"] == m]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=colours[m], s=28, label=m)
    for side, colour in (("b", "black"), ("a", "grey")):  # b's choice is read on a, a's on b
        c = data["choices"][side]
        hit = [x["closed"] for x in configs if x["configuration"] == c["chosen"]]
        if hit:
            ax.scatter([hit[0][0]], [hit[0][1]], s=150, facecolors="none", edgecolors=colour, linewidths=1.6,
                       label=f"chosen for {c['pair']} on {c['from']}")
    ax.axvline(50, ls="--", lw=0.8, color="grey")
    ax.axhline(50, ls="--", lw=0.8, color="grey")
    ax.set_xlabel(f"gap closed on {data['pairs'][0]} (%)")
    ax.set_ylabel(f"gap closed on {data['pairs'][1]} (%)")
    ax.set_title(f"One pair's ranking against the other's (Spearman {data['spearman']:+.2f}, "
                 f"{len(configs)} configurations)", fontsize=9)
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return save_figure(fig, out, "transfer")
