"""da.results.factor: one factor's values paired per seed with the same configuration at the baseline value."""

import numpy as np
import pandas as pd
import pytest

from da.results.factor import factor_table, held_factors


def _runs(rows):
    base = {"target_labeled_fraction": 0.0, "prior": "", "strategy": "partial:3",
            "weight_ema": 0.0, "label_smoothing": 0.1}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_a_factor_varied_beside_another_pairs_each_configuration_only_with_itself_at_the_baseline():
    acc = {("shot+mcc", "partial:3", 0.0): [76.0, 77.0, 75.0], ("shot+mcc", "partial:3", 0.99): [75.5, 77.5, 74.0],
           ("shot+mcc", "partial:5", 0.0): [74.0, 78.0, 76.5], ("mcc", "partial:3", 0.0): [70.0, 71.0, 72.0]}
    runs = _runs([dict(method=m, strategy=s, weight_ema=d, seed=seed % 2, split_seed=seed // 2, target_acc=a)
                  for (m, s, d), accs in acc.items() for seed, a in enumerate(accs)])
    assert held_factors(runs, "strategy", "partial:3") == ["weight_ema"]
    assert held_factors(runs, "weight_ema", 0.0) == ["strategy"]
    table = factor_table(runs, "weight_ema", 0.0).set_index(["method", "weight_ema"])
    # the averaged partial:3 runs against the plain partial:3 runs alone, per seed
    p = table.loc[("shot+mcc", 0.99), "paired"]
    assert p.diffs == pytest.approx(np.subtract(acc["shot+mcc", "partial:3", 0.99], acc["shot+mcc", "partial:3", 0.0]))
    # partial:5 is a configuration of its own here (named), its own baseline, with nothing to pair
    assert table.loc[("shot+mcc (strategy partial:5)", 0.0), "paired"] is None
    assert table.loc[("shot+mcc (strategy partial:5)", 0.0), "mean"] == pytest.approx(np.mean(acc["shot+mcc", "partial:5", 0.0]))
    by_strategy = factor_table(runs, "strategy", "partial:3").set_index(["method", "strategy"])
    assert by_strategy.loc[("shot+mcc", "partial:5"), "paired"].mean == pytest.approx(
        np.mean(np.subtract(acc["shot+mcc", "partial:5", 0.0], acc["shot+mcc", "partial:3", 0.0])))
    assert ("shot+mcc (weight_ema 0.99)", "partial:3") in by_strategy.index
    # one factor alone: nothing held, the methods keep their names (the committed tables of one factor unchanged)
    alone = runs[runs["strategy"] == "partial:3"]
    assert held_factors(alone, "weight_ema", 0.0) == []
    assert set(factor_table(alone, "weight_ema", 0.0)["method"]) == {"shot+mcc", "mcc"}
