#!/usr/bin/env python
"""Benchmark (issue 29): the wall time of a whole stage-2 epoch of each candidate method against source-only's,
in one process: the epoch's start hook (AaD's memory, SHOT's pseudo-labels from the target pass), every
training step, AdaBN's pass over the target where the method has it, and the evaluation after the epoch
(source validation, target test, the target pass and every validator).  The goal: the strongest method's
epoch at most 1.5x source-only's.

Every variant is the default stage-2 setting (EfficientNet-Lite0, 128 px, partial:3 on the cached prefix,
batch 32 + 32) on the same cached AID -> RSSCN7 data; the variants are built first and then timed in turn,
epoch after epoch, so that a drift of the machine's speed touches all of them alike.

    python experiments/bench_epoch.py --data-root ../shared/data
    python experiments/bench_epoch.py --data-root ../shared/data --variants mcc \
        "fixmatch+mcc:fixmatch_ema=0.99,fixmatch_strong=randaugment"

A variant is a method, optionally followed by ``:setting=value,...``.  The ``setup`` column is the time to build
the run (its caches computed where they are missing, e.g. the strong views' the first time; read otherwise):
paid once per run, not per epoch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import yaml

from da.config import RunConfig
from da.train.adabn import adapt_batchnorm
from da.train.engine import evaluate_epoch, start_epoch, start_reference
from da.train.epoch import train_epoch
from da.train.setup import build_run, load_splits
from da.utils.bench import header, write_table

VARIANTS = ("source_only", "adabn", "mcc", "mcc+adabn", "shot+mcc", "shot+mcc+adabn", "aad+mcc")


def config(args, variant: str) -> RunConfig:
    """``method[:setting=value,...]`` as a stage-2 config."""
    method, _, settings = variant.partition(":")
    extra = {"aad_k": 3, "aad_beta": 0.0} if "aad" in method else {}  # the half_gap sweeps' settings
    for item in filter(None, settings.split(",")):
        key, _, value = item.partition("=")
        extra[key.strip()] = yaml.safe_load(value)
    return RunConfig(method=method, stages=1, epochs=args.repeats + 1, data_root=args.data_root,
                     out=args.cache_root, progress=False, seed=0, **extra).validate()


def timed_epoch(run, epoch: int) -> dict[str, float]:
    """One whole stage-2 epoch as the engine runs it, in parts (seconds)."""
    t0 = time.perf_counter()
    start_epoch(run, epoch)
    t1 = time.perf_counter()
    train_epoch(run, epoch, "")
    t2 = time.perf_counter()
    if run.method.adapts_batchnorm:
        adapt_batchnorm(run.evaluated, run.data.target_pass, run.data.start, run.device, run.autocast)
    t3 = time.perf_counter()
    evaluate_epoch(run)
    t4 = time.perf_counter()
    return {"start": t1 - t0, "train": t2 - t1, "adabn": t3 - t2, "evaluate": t4 - t3, "epoch": t4 - t0}


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=os.environ.get("DA_DATA_ROOT", ""))
    ap.add_argument("--repeats", type=int, default=2, help="timed epochs per variant (median), after one warm-up")
    ap.add_argument("--cache-root", default="runs", help="runs folder whose cache/ holds (or will hold) the caches")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--out", default="results/benchmarks/epoch.txt")
    args = ap.parse_args()
    splits = load_splits(config(args, "source_only"), 2)
    names = list(dict.fromkeys(["source_only", *args.variants]))
    runs, setup = {}, {}
    for name in names:  # caches built here, timed apart from the epochs
        t0 = time.perf_counter()
        runs[name] = build_run(config(args, name), 2, splits, None)
        setup[name] = (time.perf_counter() - t0, all(runs[name].data.cache_hits.values()))
    for run in runs.values():
        start_reference(run, None, {})  # AdaBN before the first epoch, as in a run
        run.model.train()
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for epoch in range(args.repeats + 1):
        for name, run in runs.items():
            parts = timed_epoch(run, epoch)
            if epoch > 0:  # epoch 0 warms up: first-touch allocations, oneDNN primitives
                samples[name].append(parts)
    median = {name: {k: statistics.median(s[k] for s in v) for k in v[0]} for name, v in samples.items()}
    base = median["source_only"]["epoch"]
    width = max(20, *(len(n) + 2 for n in names))
    run = runs["source_only"]
    lines = header("a whole stage-2 epoch per method against source-only's (experiments/bench_epoch.py)")
    lines += [f"# default stage-2 setting on cached AID -> RSSCN7 data: {len(run.data.source)} steps of 32 source "
              f"(+ 32 target, or --target-batch-size) images, then the evaluation; median of {args.repeats} epochs after one warm-up, the "
              f"variants interleaved; goal: the strongest method <= 1.5x source-only",
              f"# setup: building the run once (caches: read = all read from disk, built = some computed)",
              f"{'variant':<{width}}{'setup':>16}{'start':>8}{'train':>8}{'adabn':>8}{'eval':>8}{'epoch':>9}{'ratio':>8}"]
    for name, m in median.items():
        seconds, read = setup[name]
        built = f"{seconds:.1f}s ({'read' if read else 'built'})"
        lines.append(f"{name:<{width}}{built:>16}{m['start']:>8.1f}{m['train']:>8.1f}{m['adabn']:>8.1f}"
                     f"{m['evaluate']:>8.1f}{m['epoch']:>8.1f}s{m['epoch'] / base:>7.2f}x")
    write_table(args.out, lines)


if __name__ == "__main__":
    main()
