"""The headline table: both pairs under the protocol, recomputed from the committed records.

Each pair's runs are those of its protocol sweep (split seeds x training seeds), re-selected with the rule the
sweep file names (chosen from the *other* pair's records); the rows are source-only, the target-supervised
reference (a yardstick that uses target labels) and the label-free methods, with the paired per-run
difference to source-only (same split seed and seed) and its 95 % t interval.  The README quotes the block
this module writes, and a test regenerates it from the records.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from da.launch import load_sweep
from da.results.gap import is_reference, is_source_only
from da.results.load import load_runs
from da.results.paired import format_paired, paired
from da.results.protocol import pair_of
from da.results.selection import reselect

# (protocol sweep, the folder its records are committed in)
HEADLINE_SWEEPS = (("gap_splits", "results/gap_splits/runs"), ("rsscn7_aid_splits", "results/rsscn7_aid_splits/runs"))
START, END = "<!-- headline:start -->", "<!-- headline:end -->"


def reported_rule(sweep_name: str) -> str:
    """The selection rule a protocol sweep reports with: its ``reported_selection`` choice, else its
    ``selection`` choice (pending: not chosen yet, so no headline)."""
    choices = {c["setting"]: c["value"] for c in load_sweep(sweep_name).choices}
    rule = choices.get("reported_selection", choices.get("selection"))
    if rule in (None, "pending"):
        raise ValueError(f"sweep {sweep_name} names no reported selection rule yet")
    return rule


def reported_method(sweep_name: str) -> str | None:
    """The method a protocol sweep's file names as chosen on the other pair (``reported_method``), if any."""
    value = {c["setting"]: c["value"] for c in load_sweep(sweep_name).choices}.get("reported_method")
    if value in (None, "pending"):
        return None
    return value[0] if isinstance(value, list) else value


def pair_runs(sweep_name: str, folder: str | Path) -> pd.DataFrame:
    """The sweep's finished runs in ``folder``, re-selected with its reported rule."""
    wanted = {cfg.config_hash() for cfg in load_sweep(sweep_name).configs()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the copies of the shared data are flagged in every record already
        runs = load_runs(folder, strict=True)
    runs = runs[runs["config_hash"].isin(wanted)].reset_index(drop=True)
    return reselect(runs, reported_rule(sweep_name))


def _name(g: pd.DataFrame) -> str:
    if is_reference(g).iloc[0]:
        return "reference (uses target labels)"
    return "source-only" if is_source_only(g).iloc[0] else str(g["method"].iloc[0])


def headline_rows(runs: pd.DataFrame) -> list[dict]:
    so = runs[is_source_only(runs)]
    ref = runs[is_reference(runs)]
    so_mean, ref_mean = so["target_acc"].mean(), ref["target_acc"].mean()
    rows = []
    for _, g in runs[runs["prior"] == ""].groupby(["method", "target_labeled_fraction"], sort=False):
        p = paired(g, so)
        rows.append({"name": _name(g), "mean": g["target_acc"].mean(), "std": g["target_acc"].std(ddof=1),
                     "n": len(g), "splits": g["split_seed"].nunique(), "paired": p,
                     "closed": 100 * (g["target_acc"].mean() - so_mean) / (ref_mean - so_mean),
                     "anchor": bool(is_source_only(g).iloc[0] or is_reference(g).iloc[0])})
    order = lambda r: (r["name"] != "source-only", not r["name"].startswith("reference"), -r["mean"])
    return sorted(rows, key=order)


def headline_markdown(repo: str | Path = ".") -> str:
    """The block between the README's headline markers.  The method each pair reports as its best is the one
    its sweep file names as chosen on the *other* pair (``reported_method``), else the one with the best mean on
    the other pair's headline runs (``best_methods``); never the best on its own test labels."""
    from da.results.protocol import best_methods

    repo = Path(repo)
    pairs = [(name, pair_runs(name, repo / folder)) for name, folder in HEADLINE_SWEEPS if (repo / folder).is_dir()]
    if not pairs:
        raise FileNotFoundError("no protocol sweep records under results/: nothing for the headline")
    parts = []
    for i, (sweep_name, runs) in enumerate(pairs):
        rule = reported_rule(sweep_name)
        pair = pair_of(runs["source"].iloc[0], runs["target"].iloc[0])
        rows = headline_rows(runs)
        # the choice the sweep file wrote down before its runs; else the other pair's best mean
        others = [r for j, (_, r) in enumerate(pairs) if j != i]
        chosen = reported_method(sweep_name) or (best_methods(others[0], 1)[0] if others else None)
        parts += [f"**{pair}** (sweep `{sweep_name}`; epoch: `{rule}`, chosen from the other pair's records; "
                  f"{runs['split_seed'].nunique()} split seed(s) x {runs['seed'].nunique()} seeds; in bold the "
                  f"method the other pair's records choose):", "",
                  "| method | target acc (%) | runs (splits) | gain vs source-only, paired (points) | 95 % interval "
                  "| gap closed (%) |", "| --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            cells = format_paired(r["paired"])
            name = f"**{r['name']}**" if r["name"] == chosen else r["name"]
            parts.append(f"| {name} | {r['mean']:.1f} ± {r['std']:.1f} | {r['n']} ({r['splits']}) | "
                         + ("– | – | –" if r["name"] == "source-only" else
                            f"{cells['mean']} | {cells['interval']} | {r['closed']:.0f}") + " |")
        best = next((r for r in rows if r["name"] == chosen), None)
        if best is not None:
            verdict = "excludes" if best["paired"].excludes_zero else "includes"
            parts += ["", f"The method chosen on the other pair, {chosen}, closes {best['closed']:.0f} % of the gap on "
                          f"{pair} (its 95 % interval against source-only {verdict} 0); half the gap is "
                          f"{'reached' if best['closed'] >= 50 else 'not reached'}.", ""]
        else:
            parts.append("")
    return "\n".join([START, *parts, END]) + "\n"


def readme_block(text: str) -> str:
    """The headline block of a README's text (markers included)."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < 0:
        raise ValueError(f"no {START} ... {END} block")
    return text[start:end + len(END)] + "\n"
