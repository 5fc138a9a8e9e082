#!/usr/bin/env python
"""Benchmark: the runner's training step against a minimal hand-written loop, each method's overhead over a
source-only step, the label-free validators' cost per epoch, and peak memory, on the default config.

Every variant is the default stage-2 setting (EfficientNet-Lite0, 128 px, partial:3 on the cached prefix,
batch 32 + 32) trained on the same cached AID -> RSSCN7 batches for ``--steps`` steps, in this one process;
the caches are built (or read) once, before anything is timed.

- runner vs hand loop: ``train_epoch`` (source-only) against a loop written here that does the same
  forward, cross-entropy, backward, gradient clipping, AdamW and scheduler step on the same model and the
  same batches: the runner's bookkeeping (loss terms, finiteness check, progress, scaler) is the difference.
- method overhead: each method's step (its loss, and its discriminator where it has one) over a source-only
  step on the same batches (32 source + 32 target images through the network, the loss on the source
  half only), so the ratio is the cost of the method, not of the target images it needs.
- validators: the target pass and every validator's score after an epoch, against one epoch of training.
- peak memory: peak RSS of a whole default run with these steps, per method, each in its own process.

    python experiments/bench_step.py --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from da.config import RunConfig
from da.methods import Method, method_names
from da.train.engine import evaluate_epoch
from da.train.epoch import train_epoch
from da.train.setup import build_run, load_splits
from da.utils.bench import header, run_peak_rss_mb, write_table

METHODS = ("source_only", "coral", "mmd", "im", "dann", "cdan")


def config(args, method: str) -> RunConfig:
    return RunConfig(method=method, stages=1, epochs=1, max_steps_per_epoch=args.steps, data_root=args.data_root,
                     out=args.cache_root, progress=False, seed=0).validate()


class SameBatches(Method):
    """Source-only on a method's batches: the target half goes through the network, no loss is added."""

    name = "source_only_same_batches"
    needs_target = True

    def forward(self, out):
        return {}


def build_variant(args, method: str, splits):
    if method == SameBatches.name:
        run = build_run(config(args, "coral"), 2, splits, None)  # coral: target batches, no parameters
        run.method = SameBatches(run.cfg, len(run.classes), run.model.z_dim)
        return run
    return build_run(config(args, method), 2, splits, None)


def hand_loop(args, splits):
    """The same source-only steps, written out by hand: a function of the epoch giving seconds per step."""
    run = build_run(config(args, "source_only"), 2, splits, None)
    model, opt, sched, loss_fn = run.model, run.optimizer, run.scheduler, torch.nn.CrossEntropyLoss()
    params = [p for p in model.parameters() if p.requires_grad]
    fmt = torch.channels_last if run.channels_last else torch.contiguous_format

    def epoch(e: int) -> float:
        t = time.perf_counter()
        for step, (x, y) in enumerate(run.data.source.epoch(e)):
            if step >= args.steps:
                break
            logits, _ = model.forward_from(x.contiguous(memory_format=fmt), run.data.start)
            loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, run.cfg.clip_grad_norm)
            opt.step()
            sched.step()
        return (time.perf_counter() - t) / args.steps

    return epoch


def peak_rss_mb(args, method: str, extra: tuple[str, ...] = ()) -> float:
    """Peak RSS of one whole default stage-2 run of ``method`` (caches read, ``--steps`` steps), in its own process."""
    return run_peak_rss_mb(args.cache_root, args.data_root, ["--method", method, "--stages", "1", "--epochs", "1",
                                                             "--max-steps-per-epoch", str(args.steps), *extra])


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=os.environ.get("DA_DATA_ROOT", ""))
    ap.add_argument("--steps", type=int, default=20, help="steps per timed epoch")
    ap.add_argument("--repeats", type=int, default=7, help="timed epochs per variant (median)")
    ap.add_argument("--cache-root", default="runs", help="runs folder whose cache/ holds (or will hold) the caches")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=method_names())
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    ap.add_argument("--out", default="results/benchmarks/step.txt")
    args = ap.parse_args()
    splits = load_splits(config(args, "source_only"), 2)
    build_run(config(args, "cdan"), 2, splits, None)  # builds every cache the variants read, untimed

    # every variant built first, then timed in turn, epoch after epoch: a drift of the machine's speed
    # touches all of them alike instead of whichever ran last
    names = list(dict.fromkeys(["source_only", SameBatches.name, *args.methods]))
    runs = {name: build_variant(args, name, splits) for name in names}
    timers = {"hand": hand_loop(args, splits)} | {
        name: (lambda e, r=r: train_epoch(r, e, "").seconds / args.steps) for name, r in runs.items()}
    samples = {name: [] for name in timers}
    for epoch in range(args.repeats + 1):
        for name, timer in timers.items():
            secs = timer(epoch)
            if epoch > 0:  # epoch 0 warms up: first-touch allocations, oneDNN primitives
                samples[name].append(secs)
    hand = statistics.median(samples.pop("hand"))
    per_method = {name: statistics.median(v) for name, v in samples.items()}
    run = runs["source_only"]
    t = time.perf_counter()
    _, _, _, cost = evaluate_epoch(run)
    eval_wall = time.perf_counter() - t
    full_epoch = per_method["source_only"] * run.data.source.__len__()

    lines = header("training step: runner vs hand loop, method overhead, validator cost, peak memory "
                   "(experiments/bench_step.py)")
    lines += [f"# default stage-2 setting on cached AID -> RSSCN7 batches (32 + 32 images), {args.steps} steps per epoch, "
              f"median of {args.repeats} epochs after one warm-up epoch, the variants interleaved",
              f"{'variant':<34}{'s/step':>8}{'ratio':>8}",
              f"{'hand-written loop (source-only)':<34}{hand:>8.3f}{1.0:>7.2f}x",
              f"{'runner (source-only)':<34}{per_method['source_only']:>8.3f}"
              f"{hand / per_method['source_only']:>7.2f}x   <- runner throughput / hand loop's (goal >= 0.95)",
              "# a method's step over a source-only step on the same 32 + 32 images (goal <= 1.05 for the losses)",
              f"{'source-only, same batches':<34}{per_method[SameBatches.name]:>8.3f}{1.0:>7.2f}x"]
    for method, secs in per_method.items():
        if method not in ("source_only", SameBatches.name):
            lines.append(f"{method:<34}{secs:>8.3f}{secs / per_method[SameBatches.name]:>7.2f}x")
    validators = {k: v for k, v in cost.items() if k != "target_pass"}
    lines += [f"# after each stage-2 epoch (source-only model): target pass over {len(run.data.splits['target_train'])} "
              f"target images + every validator, against one full training epoch ({len(run.data.source)} steps, "
              f"{full_epoch:.1f} s projected)",
              f"{'target pass':<34}{cost['target_pass']:>8.2f} s",
              f"{'validators (' + str(len(validators)) + ')':<34}{sum(validators.values()):>8.2f} s   "
              + ", ".join(f"{k} {v:.2f}" for k, v in sorted(validators.items())),
              f"{'evaluation after an epoch, all':<34}{eval_wall:>8.2f} s = {eval_wall / full_epoch:.3f} of an epoch"]
    if not args.no_memory:
        lines.append(f"# peak RSS of a whole run (stage 2 on read caches, {args.steps} steps), one process each")
        for method in dict.fromkeys(["source_only", *args.methods]):
            lines.append(f"{method:<34}{peak_rss_mb(args, method):>8.0f} MB")
        lines.append(f"{'source_only, no cache (prefix every step)':<34}"
                     f"{peak_rss_mb(args, 'source_only', ('--cache-views', '0')):>8.0f} MB")
    write_table(args.out, lines)


if __name__ == "__main__":
    main()
