#!/usr/bin/env python
"""Benchmark: the frozen prefix and the training step of the default model, each way it can run, in one process.

Prefix (inference only; what builds the caches): ``model.stages[:6]`` of EfficientNet-Lite0 at 128 px on
real AID images, already decoded, batch 128: eager fp32 in the contiguous layout (the code before issue 15),
eager channels_last, and the default, channels_last compiled by inductor with frozen weights; bf16 autocast
on top for information (it is not used: its error is an accuracy question).  Each is checked against eager
fp32: the largest absolute difference and the share of float16 cache entries that differ.

Training step (the trainable tail on cached float16 features: forward, backward and an AdamW step on a
batch of 32 source + 32 target images, as a CORAL step sees it): contiguous (before) and channels_last (the
default).

    python experiments/bench_prefix.py --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from da.data.domains import supervised_splits
from da.data.folder import load_rgb
from da.data.transforms import eval_transform
from da.models import build_model
from da.models.strategies import apply_strategy, frozen_prefix_length
from da.train.cache import FrozenPrefix, PrefixRuntime
from da.utils.bench import header, timed, write_table


def images(root: str, n: int, size: int, mean, std) -> torch.Tensor:
    split = supervised_splits("AID", root, 0.2, 0)["train"]
    tf = eval_transform(size, mean, std)
    return torch.stack([tf(load_rgb(split.folder / rel)) for rel, _ in split.samples[:n]])


def fresh_model(strategy: str):
    torch.manual_seed(0)
    model = build_model("timm:tf_efficientnet_lite0", 30, weights="tf_efficientnet_lite0")
    apply_strategy(model, strategy)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=os.environ.get("DA_DATA_ROOT", "data"))
    ap.add_argument("--batch", type=int, default=128, help="prefix batch (the cache's)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="training steps timed per variant")
    ap.add_argument("--img-size", type=int, default=128)
    ap.add_argument("--out", default="results/benchmarks/prefix.txt")
    args = ap.parse_args()

    model = fresh_model("partial:3").eval()
    k = frozen_prefix_length(model, "partial:3")
    x = images(args.data_root, args.batch, args.img_size, model.mean, model.std)

    def run(prefix, autocast=False):
        def call():
            with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=autocast):
                return prefix(x).float()
        return call

    legacy = FrozenPrefix(model, k, PrefixRuntime(), args.batch)
    ref = run(legacy)()
    rows = []
    variants = [("eager fp32, contiguous (before)", PrefixRuntime(), False),
                ("eager fp32, channels_last", PrefixRuntime(channels_last=True, legacy=False), False),
                ("inductor fp32, channels_last (default)", PrefixRuntime(True, True, legacy=False), False),
                ("inductor bf16, channels_last (not used)", PrefixRuntime(True, True, legacy=False), True)]
    for name, runtime, bf16 in variants:
        prefix = FrozenPrefix(model, k, runtime, args.batch)
        t0 = time.perf_counter()
        out = run(prefix, bf16)()  # the first call compiles
        first = time.perf_counter() - t0
        secs = timed(run(prefix, bf16), args.repeats, warmup=0)
        diff = (out - ref).abs().max().item()
        ulps = (out.half() != ref.half()).float().mean().item()
        rel = ((out - ref).norm() / ref.norm()).item()
        rows.append((name, args.batch / statistics.median(secs), first, diff, ulps, rel))
    base = rows[0][1]

    lines = header("frozen prefix and training step, each way they can run (experiments/bench_prefix.py)")
    lines += [f"# prefix: model.stages[:{k}] of tf_efficientnet_lite0, {args.img_size} px, {args.batch} real AID images "
              f"per batch, median of {args.repeats}; differences against eager fp32 contiguous",
              f"{'prefix variant':<42}{'img/s':>8}{'ratio':>7}{'1st call s':>11}{'max |diff|':>11}"
              f"{'fp16 changed':>13}{'rel err':>9}"]
    for name, ips, first, diff, ulps, rel in rows:
        lines.append(f"{name:<42}{ips:>8.1f}{ips / base:>6.2f}x{first:>11.1f}{diff:>11.1e}{100 * ulps:>12.2f}%{rel:>9.1e}")

    # ---- training step on cached features
    with torch.no_grad():
        feats = FrozenPrefix(model, k, PrefixRuntime(True, True, legacy=False), args.batch)(x).half()
    feats = feats[:64]
    labels = torch.arange(len(feats)) % 30
    step_rows = []
    for name, channels_last in (("contiguous (before)", False), ("channels_last (default)", True)):
        tail = fresh_model("partial:3").train()
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        tail.to(memory_format=fmt)
        opt = torch.optim.AdamW([p for p in tail.parameters() if p.requires_grad], lr=1e-3)

        def step():
            h = feats.to(torch.float32, memory_format=fmt)
            logits, _ = tail.forward_from(h, k)
            loss = torch.nn.functional.cross_entropy(logits, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        secs = timed(step, args.steps, warmup=3)
        step_rows.append((name, statistics.median(secs)))
    lines += [f"# training step: stages[{k}:] + head, forward + backward + AdamW on {len(feats)} cached features "
              f"({len(feats) // 2} source + {len(feats) - len(feats) // 2} target), median of {args.steps} steps",
              f"{'step variant':<42}{'s/step':>8}{'ratio':>7}"]
    for name, secs in step_rows:
        lines.append(f"{name:<42}{secs:>8.3f}{step_rows[0][1] / secs:>6.2f}x")
    write_table(args.out, lines)


if __name__ == "__main__":
    main()
