"""Fine-tuning strategies side by side (issue 32): for each method, every strategy's target accuracy (mean ±
s.d. over seeds), what it trains (parameters, LoRA's adapters among them) and its paired per-seed difference
to the baseline strategy (``partial:3``, the default), with the 95 % paired t interval.

Parameter counts are computed from each configuration (the model it builds, ``da.models.lora.count_parameters``):
records made before runs counted them have none, and the count is a function of the config alone.  Time and
memory are not in this table: runs of different days shared the machine differently, so they are measured
side by side, in one process, by ``experiments/bench_lora.py``.
"""

from __future__ import annotations

import pandas as pd

from da.results.factor import factor_table, render_factor_table

BASELINE = "partial:3"


def parameter_counts(config: dict, num_classes: int) -> dict[str, int]:
    """Trainable, adapter and total parameters of the model a run config builds (random weights: the counts
    do not depend on them)."""
    from da.config import RunConfig
    from da.models import apply_strategy, build_model
    from da.models.lora import count_parameters

    cfg = RunConfig.from_record(config)
    model = build_model(cfg.backbone, num_classes, weights="none", bottleneck_dim=cfg.bottleneck_dim or None)
    apply_strategy(model, cfg.strategy, freeze_bn=cfg.freeze_bn, lora_alpha=cfg.lora_alpha,
                   lora_dropout=cfg.lora_dropout, lora_targets=cfg.lora_targets)
    return count_parameters(model)


def strategy_table(runs: pd.DataFrame, col: str = "target_acc") -> pd.DataFrame:
    """One row per (method, strategy), the baseline strategy first in each method, with the parameters it trains;
    the reference (source-only with every target-train label) is a method of its own here, paired with the
    reference of the baseline."""
    def counts(g: pd.DataFrame) -> dict[str, int]:
        first = g.iloc[0]["record"]
        counted = parameter_counts(first["config"], len(first["classes"]))
        recorded = first.get("parameters")
        if recorded and recorded != counted:
            raise ValueError(f"{g.iloc[0]['run_dir']}: its record counts {recorded} parameters, its config builds "
                             f"{counted}")
        return counted

    return factor_table(runs, "strategy", BASELINE, col, extra=counts)


def render_strategy_table(table: pd.DataFrame, caption: str) -> str:
    return render_factor_table(table, "strategy", BASELINE, caption, extra=(
        ("trainable parameters", lambda r: f"{r['trainable']:,}"),
        ("of which LoRA", lambda r: f"{r['adapters']:,}" if r["adapters"] else "–")))
