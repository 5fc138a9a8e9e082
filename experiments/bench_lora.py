#!/usr/bin/env python
"""Benchmark: LoRA against partial fine-tuning on the default setting (issue 32): seconds per training step,
trainable parameters, the size of a checkpoint, and peak memory, each strategy beside ``partial:3`` in this one
run.

Every variant is the default stage-2 setting (EfficientNet-Lite0, 128 px, source-only, batches of 32 source
images on the cached prefix: the first stages are frozen in every variant, so they share one cache) trained on the same
cached AID -> RSSCN7 batches for ``--steps`` steps; the variants are built first, then timed in turn, epoch
after epoch (median of ``--repeats`` after a warm-up epoch), so a drift of the machine touches them alike.
Peak RSS: a whole short run of each, in its own process.

    python experiments/bench_lora.py --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import torch

from da.config import RunConfig
from da.train import checkpoint
from da.train.epoch import train_epoch
from da.train.setup import build_run, load_splits
from da.train.state import RunState
from da.utils.bench import header, run_peak_rss_mb, write_table

STRATEGIES = ("partial:3", "lora:3:4", "lora:3:16")


def config(args, strategy: str) -> RunConfig:
    return RunConfig(method="source_only", stages=1, epochs=1, max_steps_per_epoch=args.steps, strategy=strategy,
                     batch_size=args.batch_size, img_size=args.img_size, data_root=args.data_root,
                     out=args.cache_root, progress=False, seed=0).validate()


def checkpoint_mb(run) -> float:
    """The size of the training checkpoint ``run`` writes (da.train.checkpoint.save_training: the trained
    parameters, buffers, optimiser state and the rest; frozen weights left out)."""
    with tempfile.TemporaryDirectory() as folder:
        path = checkpoint.save_training(Path(folder) / "checkpoint.pt", run, RunState(), "bench")
        return path.stat().st_size / 2**20


def peak_rss_mb(args, strategy: str) -> float:
    """Peak RSS (VmHWM, as the record gives it) of one short run of ``strategy`` in its own process."""
    return run_peak_rss_mb(args.cache_root, args.data_root, [
        "--method", "source_only", "--stages", "1", "--epochs", "1", "--max-steps-per-epoch", str(args.steps),
        "--strategy", strategy, "--batch-size", str(args.batch_size), "--img-size", str(args.img_size)])


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=os.environ.get("DA_DATA_ROOT", ""))
    ap.add_argument("--steps", type=int, default=20, help="steps per timed epoch")
    ap.add_argument("--repeats", type=int, default=5, help="timed epochs per variant (median)")
    ap.add_argument("--batch-size", type=int, default=RunConfig().batch_size)
    ap.add_argument("--img-size", type=int, default=RunConfig().img_size)
    ap.add_argument("--cache-root", default="runs", help="runs folder whose cache/ holds (or will hold) the caches")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    ap.add_argument("--out", default="results/benchmarks/lora.txt")
    args = ap.parse_args()
    splits = load_splits(config(args, STRATEGIES[0]), 2)
    runs = {s: build_run(config(args, s), 2, splits, None) for s in STRATEGIES}  # the first builds the cache
    samples: dict[str, list[float]] = {s: [] for s in STRATEGIES}
    for epoch in range(args.repeats + 1):
        for s, run in runs.items():
            secs = train_epoch(run, epoch, "").seconds / args.steps
            if epoch > 0:  # epoch 0 warms up: first-touch allocations, oneDNN primitives
                samples[s].append(secs)
    step = {s: statistics.median(v) for s, v in samples.items()}
    base = STRATEGIES[0]
    lines = header("LoRA against partial fine-tuning: step time, trainable parameters, checkpoint size, peak memory "
                   "(experiments/bench_lora.py)")
    lines += [f"# default stage-2 setting, source-only (batches of {args.batch_size} source images), cached AID -> RSSCN7 prefix, "
              f"{args.steps} steps per epoch, median of {args.repeats} epochs after a warm-up, the variants interleaved",
              f"{'strategy':<12}{'s/step':>8}{'ratio':>8}{'trainable':>12}{'of which LoRA':>15}{'checkpoint':>12}"]
    for s, run in runs.items():
        counts = run.parameters
        lines.append(f"{s:<12}{step[s]:>8.3f}{step[s] / step[base]:>7.2f}x{counts['trainable']:>12,}"
                     f"{counts['adapters']:>15,}{checkpoint_mb(run):>9.1f} MB")
    lines.append(f"# ratio: s/step over {base}'s in this run; checkpoint: the training checkpoint the run writes "
                 f"(trained parameters, buffers, optimiser and RNG state; frozen weights left out); load average "
                 f"{os.getloadavg()[0]:.1f} after the timed epochs (other work slows both sides of a ratio)")
    if not args.no_memory:
        lines.append(f"# peak RSS of a whole short run ({args.steps} steps, caches read), one process each")
        for s in STRATEGIES:
            lines.append(f"{s:<12}{peak_rss_mb(args, s):>8.0f} MB")
    write_table(args.out, lines)


if __name__ == "__main__":
    main()
