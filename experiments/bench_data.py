#!/usr/bin/env python
"""Benchmark: the data pipeline against what the model consumes, and the start-up scan before and after
files are verified once.

- pipeline: AID training images decoded and augmented (the training transform at 128 px, each image under
  its own seed) by a DataLoader with 0, 1 and 2 workers, in images/s; next to what the model consumes:
  the default frozen prefix building the caches, and a training step without a cache (the whole network,
  the frozen prefix included, forward and backward).
- start-up: listing and verifying AID and RSSCN7 (every image decoded in full) with no verification memo,
  as every run did before issue 15, and again with the memo that run left (files unchanged: not decoded).

    python experiments/bench_data.py --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from unittest import mock

import torch
from torch.utils.data import DataLoader

from da.data.domains import supervised_splits
from da.data.transforms import train_transform
from da.models import build_model
from da.models.strategies import apply_strategy, frozen_prefix_length
from da.train.batches import SeededImages
from da.train.cache import FrozenPrefix, PrefixRuntime
from da.utils.bench import header, timed, usable_cpus, write_table


def loader_rate(data, workers: int, batch: int, n_batches: int) -> float:
    loader = DataLoader(data, batch_size=batch, shuffle=False, num_workers=workers)
    t, n = None, 0
    for i, (x, _) in enumerate(loader):
        if i == 0:  # worker start-up is a once-per-epoch cost, timed from the first batch on
            t = time.perf_counter()
            continue
        n += len(x)
        if i == n_batches:
            break
    return n / (time.perf_counter() - t)


def scan_seconds(root: str, cache_dir: str) -> float:
    with mock.patch.dict(os.environ, {"DA_CACHE_DIR": cache_dir}):
        t = time.perf_counter()
        supervised_splits("AID", root, 0.2, 0)
        supervised_splits("RSSCN7", root, 0.2, 0)
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=os.environ.get("DA_DATA_ROOT", "data"))
    ap.add_argument("--batches", type=int, default=12, help="batches of 64 timed per worker count")
    ap.add_argument("--out", default="results/benchmarks/data.txt")
    args = ap.parse_args()
    lines = header("data pipeline vs the model, and start-up with files verified once (experiments/bench_data.py)")

    with tempfile.TemporaryDirectory() as memo:
        cold = scan_seconds(args.data_root, memo)
        warm = statistics.median(scan_seconds(args.data_root, memo) for _ in range(3))
    lines += ["# start-up: list and verify AID (10,000 images) and RSSCN7 (2,800)",
              f"{'every image decoded (before)':<40}{cold:>8.1f} s",
              f"{'verified once, remembered (after)':<40}{warm:>8.1f} s   {cold / warm:.0f}x faster"]

    model = build_model("timm:tf_efficientnet_lite0", 30, weights="tf_efficientnet_lite0")
    apply_strategy(model, "partial:3")
    k = frozen_prefix_length(model, "partial:3")
    split = supervised_splits("AID", args.data_root, 0.2, 0)["train"]
    data = SeededImages(split, train_transform(128, model.mean, model.std), seed=0)
    lines += [f"# pipeline: AID train images decoded + training transform (128 px), batch 64, {usable_cpus()} usable CPUs",
              f"{'DataLoader workers':<40}{'img/s':>8}"]
    for workers in (0, 1, 2):
        lines.append(f"{workers:<40}{loader_rate(data, workers, 64, args.batches):>8.1f}")

    x = torch.stack([data[i][0] for i in range(128)])
    prefix = FrozenPrefix(model.eval(), k, PrefixRuntime(True, True, legacy=False), 128)
    with torch.no_grad():
        prefix(x)  # compiles
        prefix_ips = 128 / statistics.median(timed(lambda: prefix(x), 3, warmup=0))
    model.train().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    xb, yb = x[:64].contiguous(memory_format=torch.channels_last), torch.arange(64) % 30

    def step():
        loss = torch.nn.functional.cross_entropy(model(xb)[0], yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step_ips = 64 / statistics.median(timed(step, 5, warmup=2))
    lines += ["# what the model consumes (the default runtime)",
              f"{'frozen prefix building the cache':<40}{prefix_ips:>8.1f}",
              f"{'training step without a cache':<40}{step_ips:>8.1f}"]
    write_table(args.out, lines)


if __name__ == "__main__":
    main()
