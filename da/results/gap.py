"""How much of the gap to target supervision each method closes, the prior estimates, and the confusions
the gap is made of.

The gap is measured between two rows of the same runs folder with the same other factors: plain
source-only (no target label, no prior estimate) and the target-supervised reference (``source_only``
with ``target_labeled_fraction`` 1: the source and every target-train label, same model, strategy,
budget and selection rule).  gap closed = (acc - source-only) / (reference - source-only).  The reference
uses target labels; it is a yardstick, never a result.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from da.results.load import reported_confusion
from da.results.tables import anchor_rows, paired_gain_values, summarise
from da.settings import USED_BY

GAP_FACTORS = ("method", "prior", "target_labeled_fraction")


def is_reference(frame: pd.DataFrame) -> pd.Series:
    return (frame["method"] == "source_only") & (frame["target_labeled_fraction"] >= 1) & (frame["prior"] == "")


def is_source_only(frame: pd.DataFrame) -> pd.Series:
    return (frame["method"] == "source_only") & (frame["target_labeled_fraction"] == 0) & (frame["prior"] == "")


def _prior_columns(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run, at its selected epoch: accuracy of the prior-corrected predictions and the estimate's L1
    error (NaN for runs without --prior)."""
    corrected, l1 = [], []
    for _, r in runs.iterrows():
        prior = r["record"]["epochs"][int(r["selected_epoch"]) - 1].get("prior")
        corrected.append(100 * prior["target_test"]["accuracy"] if prior else np.nan)
        l1.append(prior["l1_error"] if prior and "l1_error" in prior else np.nan)
    return runs.assign(target_acc_corrected=corrected, prior_l1=l1)


def gap_table(runs: pd.DataFrame, expected_seeds: int | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Target accuracy and macro F1, prior-corrected accuracy and prior L1 error (runs with --prior), the
    gain over source-only and the share of the gap closed, mean +- s.d. over seeds.  Needs a reference row."""
    if not is_reference(runs).any():
        raise ValueError("no target-supervised reference among the runs (method source_only with "
                         "target_labeled_fraction 1.0): the gap is undefined")
    runs = _prior_columns(runs)
    metrics = {"target_acc": "target acc", "target_f1": "target macro-F1"}
    if runs["prior"].ne("").any():
        metrics |= {"target_acc_corrected": "prior-corrected acc", "prior_l1": "prior L1 error"}
    table, factors = summarise(runs, metrics, expected_seeds)
    for f in GAP_FACTORS:  # the reference and the prior are named in every row, varying or not
        if f not in factors:
            table[f] = runs[f].iloc[0]
            factors.append(f)
    # a method's own settings (aad_k, fixmatch_threshold, ...) never tell its anchors apart: source-only has none
    others = [f for f in factors if f not in GAP_FACTORS and f not in USED_BY]
    anchors = is_source_only(table) | is_reference(table)
    gains, closed, values = [], [], []
    for i, row in table.iterrows():
        base, ref = (anchor_rows(table[is_source_only(table)], row, others),
                     anchor_rows(table[is_reference(table)], row, others))
        if base.empty or ref.empty or anchors[i]:
            gains.append(np.nan)
            closed.append(np.nan)
            values.append({})
            continue
        so, top = base["target_acc_mean"].iloc[0], ref["target_acc_mean"].iloc[0]
        gains.append(row["target_acc_mean"] - so)
        closed.append(100 * (row["target_acc_mean"] - so) / (top - so) if top != so else np.nan)
        values.append(paired_gain_values(row["target_acc_values"], base["target_acc_values"].iloc[0]))
    table["target_acc_gain"] = gains
    table["target_acc_gain_values"] = values
    table["gap_closed"] = closed
    return table, factors


def confusion_pairs(runs: pd.DataFrame, count: int = 2) -> list[tuple[str, str]]:
    """The ``count`` largest confusions (true class, predicted class) of the source-only runs: off-diagonal
    cells of the row-normalised target-test confusion matrix, averaged over seeds."""
    base = runs[is_source_only(runs)]
    if base.empty:
        raise ValueError("no source-only run to find the confusions of")
    classes = base["record"].iloc[0]["classes"]
    rates = np.mean([row_rates(reported_confusion(r)) for _, r in base.iterrows()], axis=0)
    np.fill_diagonal(rates, -1)
    flat = np.argsort(rates, axis=None)[::-1][:count]
    return [(classes[i], classes[j]) for i, j in zip(*np.unravel_index(flat, rates.shape))]


def row_rates(confusion) -> np.ndarray:
    """A confusion matrix (true x predicted counts) as row shares in %: each true class's predictions."""
    m = np.asarray(confusion, dtype=float)
    return 100 * m / np.maximum(m.sum(1, keepdims=True), 1)


def confusion_known(runs: pd.DataFrame) -> pd.Series:
    """Per run: whether its record holds the target-test confusion matrix of its reported epoch (one per
    epoch in runs made since the records keep them, else only the epoch selected in training)."""
    per_epoch = runs["confusion"].map(lambda c: isinstance(c, list)) if "confusion" in runs else False
    kept = runs["selected_epoch"] == runs["record"].map(lambda r: r["selected_epoch"])
    return per_epoch | kept


def with_known_confusions(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The configurations (rows of the gap table) every run of which has a confusion matrix at the reported
    epoch, and the labels of those left out. A configuration is kept or left out whole: keeping only its runs
    whose training-time epoch happens to be the reported one would be a biased subset."""
    from da.results.paired import configuration_groups, configuration_label
    from da.results.tables import varying_factors

    factors = list(dict.fromkeys([*GAP_FACTORS, *varying_factors(runs)]))
    known = confusion_known(runs)
    kept, left_out = [], []
    for row, g in configuration_groups(runs, factors):
        if known[g.index].all():
            kept.append(g)
        else:
            left_out.append(configuration_label(row, [f for f in factors if f in row]))
    kept_runs = pd.concat(kept).sort_index() if kept else runs.iloc[:0]
    return kept_runs, left_out


def confusion_table(runs: pd.DataFrame, pairs: list[tuple[str, str]], expected_seeds: int | None = None
                    ) -> tuple[pd.DataFrame, list[str]]:
    """Per row: for each (true, predicted) pair, the share (%) of target-test images of the true class
    predicted as the other, and the true class's recall, mean +- s.d. over seeds (at the reported epoch,
    :func:`~da.results.load.reported_confusion`)."""
    classes = runs["record"].iloc[0]["classes"]
    columns, metrics = {}, {}
    for true, pred in pairs:
        i, j = classes.index(true), classes.index(pred)
        rates = [row_rates(reported_confusion(r)) for _, r in runs.iterrows()]
        columns[f"conf_{true}_{pred}"] = [m[i, j] for m in rates]
        columns[f"recall_{true}"] = [m[i, i] for m in rates]
        metrics[f"conf_{true}_{pred}"] = f"{true} -> {pred}"
        metrics[f"recall_{true}"] = f"{true} recall"
    table, factors = summarise(runs.assign(**columns), metrics, expected_seeds)
    return table, factors
