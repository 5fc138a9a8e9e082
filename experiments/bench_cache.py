#!/usr/bin/env python
"""Benchmark: training with the frozen-prefix cache against running the frozen prefix every step.

Both variants train the same stage-2 config (default backbone and strategy, real data) for the same
number of steps in this one process; the table gives training images per second, the projected time of
one full epoch, and the one-time cost of building the cache.

    python experiments/bench_cache.py --data-root ../shared/data --steps 30
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from da.config import RunConfig
from da.utils.bench import header, write_table
from da.train import train_stage


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="")
    ap.add_argument("--steps", type=int, default=30, help="training steps measured per variant")
    ap.add_argument("--method", default="coral")
    ap.add_argument("--cache-from", default="runs", help="reuse the feature cache of this runs folder (its cache/)")
    ap.add_argument("--out", default="results/benchmarks/cache.txt")
    args = ap.parse_args()
    lines = header("frozen-prefix cache vs the prefix every step (experiments/bench_cache.py)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        shared = Path(args.cache_from, "cache").resolve()
        shared.mkdir(parents=True, exist_ok=True)
        Path(tmp, "cache").symlink_to(shared)  # fresh run directories, the sweep's cache
        for views in (2, 0):
            cfg = RunConfig(method=args.method, stages=1, epochs=1, max_steps_per_epoch=args.steps, cache_views=views,
                            data_root=args.data_root, out=tmp, progress=False)
            rec = json.load(open(train_stage(cfg, stage=2)))
            full_steps = rec["split_sizes"]["source_train"] // cfg.batch_size
            step_s = rec["train_time_s"] / args.steps
            rows.append((views, rec["prefix_stages_cached"], rec["images_per_s"], step_s, step_s * full_steps,
                         rec["data_time_s"]))
    lines.append("# setup s: splits, model and (when not already on disk) the cache, before the first step")
    lines.append(f"{'variant':<28}{'img/s':>10}{'s/step':>10}{'s/epoch':>10}{'setup s':>10}")
    for views, cached, ips, step_s, epoch_s, setup in rows:
        name = f"cache ({views} views, {cached} stages)" if views else "prefix every step"
        lines.append(f"{name:<28}{ips:>10.1f}{step_s:>10.3f}{epoch_s:>10.1f}{setup:>10.1f}")
    lines.append(f"speed-up per epoch (cache vs no cache): {rows[1][4] / rows[0][4]:.1f}x; the cache is built once "
                 f"per (images, prefix weights, size, transform, view) and shared by every method and seed")
    write_table(args.out, lines)


if __name__ == "__main__":
    main()
