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

from da.results.gap import is_reference
from da.results.paired import format_paired, paired

BASELINE = "partial:3"
REFERENCE = "reference (uses target labels)"


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
    """One row per (method, strategy), the baseline strategy first in each method; the reference (source-only
    with every target-train label) is a method of its own here, paired with the reference of the baseline."""
    rows = []
    runs = runs.assign(method=runs["method"].where(~is_reference(runs), REFERENCE))
    for (method, strategy), g in runs.groupby(["method", "strategy"], sort=False):
        first = g.iloc[0]["record"]
        counts = parameter_counts(first["config"], len(first["classes"]))
        recorded = first.get("parameters")
        if recorded and recorded != counts:
            raise ValueError(f"{g.iloc[0]['run_dir']}: its record counts {recorded} parameters, its config builds "
                             f"{counts}")
        base = runs[(runs["method"] == method) & (runs["strategy"] == BASELINE)]
        rows.append({"method": method, "strategy": strategy, "n": len(g), "mean": g[col].mean(),
                     "std": g[col].std(ddof=1), **counts,
                     "paired": paired(g, base, col) if strategy != BASELINE and len(base) else None})
    table = pd.DataFrame(rows)
    order = {m: i for i, m in enumerate(sorted(table["method"].unique(),
                                               key=lambda m: (m != "source_only", m != REFERENCE, m)))}
    table["_m"] = table["method"].map(order)
    table["_s"] = table["strategy"].map(lambda s: (s != BASELINE, len(s), s))
    return table.sort_values(["_m", "_s"]).drop(columns=["_m", "_s"]).reset_index(drop=True)


def render_strategy_table(table: pd.DataFrame, caption: str) -> str:
    header = ["method", "strategy", "target acc. (%)", "trainable parameters", "of which LoRA",
              f"− {BASELINE}, per seed (points)", "mean ± s.d.", "95 % interval (paired t)", "reading"]
    lines = [caption, "", "| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for _, r in table.iterrows():
        name = "source-only" if r["method"] == "source_only" else r["method"]
        cells = [name, r["strategy"], f"{r['mean']:.1f} ± {r['std']:.1f} (n={r['n']})", f"{r['trainable']:,}",
                 f"{r['adapters']:,}" if r["adapters"] else "–"]
        p = r["paired"]
        if p is None:
            cells += ["(baseline)", "", "", ""]
        else:
            f = format_paired(p)
            cells += [f["diffs"], f["mean"], f["interval"], p.verdict(r["strategy"], BASELINE)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
