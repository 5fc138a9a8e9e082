#!/usr/bin/env python
"""Microbenchmark: forward+backward cost of the alignment losses against the backbone training step beside them.

For each feature size d, CORAL and MMD run forward+backward on a source and a target batch of 64
features each (2 x 64); in the same process the backbone that produces features of that size does one
training step (forward, cross-entropy, backward, SGD update) on 64 images.  The table gives times (the
best of several runs) and the loss cost as a percentage of the step.  The step is deliberately a cheap
one (64 images, not the 2 x 64 of a domain-adaptation step, at a small image size), so the percentages
are upper bounds.

    python experiments/bench_losses.py [--image-size 128] [--out results/benchmarks/losses.txt]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import timm
import torch
import torchvision

from da.losses import CORAL, MMD
from da.utils.bench import timed

# d -> backbone whose pooled features have that size; d = 256 is a bottleneck layer on the smaller backbone
BACKBONES = {256: "tf_efficientnet_lite0", 1280: "tf_efficientnet_lite0", 2048: "resnet50"}
LOSSES = {"CORAL": CORAL(), "CORAL-domainbed": CORAL("domainbed"), "MMD-quadratic": MMD("quadratic"),
          "MMD-linear": MMD("linear")}


def best_time(fn, reps: int, warmup: int) -> float:
    """Fastest of ``reps`` runs: on a shared machine the other runs measure the neighbours' load."""
    return min(timed(fn, reps, warmup))


def loss_time(loss, batch: int, d: int, reps: int) -> float:
    gen = torch.Generator().manual_seed(d)
    # post-ReLU-like features, as a pooled backbone gives them
    fs = torch.randn(batch, d, generator=gen).relu().requires_grad_()
    ft = (torch.randn(batch, d, generator=gen) * 1.2 + 0.1).relu().requires_grad_()
    return best_time(lambda: torch.autograd.grad(loss(fs, ft), (fs, ft)), reps, warmup=5)


def build_backbone(name: str, num_classes: int) -> torch.nn.Module:
    if name == "resnet50":
        return torchvision.models.resnet50(weights=None, num_classes=num_classes)
    return timm.create_model(name, pretrained=False, num_classes=num_classes)


def step_time(name: str, batch: int, size: int, reps: int, num_classes: int = 30) -> float:
    torch.manual_seed(0)
    model = build_backbone(name, num_classes).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, num_classes, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return best_time(step, reps, warmup=1)


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64, help="features per domain, and images per backbone step")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--loss-reps", type=int, default=30)
    ap.add_argument("--step-reps", type=int, default=3)
    ap.add_argument("--out", default="results/benchmarks/losses.txt")
    args = ap.parse_args()

    steps = {name: step_time(name, args.batch, args.image_size, args.step_reps) for name in sorted(set(BACKBONES.values()))}
    rows = []
    for d, backbone in BACKBONES.items():
        rows.append((d, backbone, steps[backbone], {k: loss_time(v, args.batch, d, args.loss_reps) for k, v in LOSSES.items()}))

    load = os.getloadavg()[0]  # other jobs on the machine inflate both sides of the ratio
    cpu = platform.processor() or platform.machine()
    lines = [f"# alignment-loss microbenchmark, {time.strftime('%Y-%m-%d')}, CPU {cpu} ({os.cpu_count()} cores visible, "
             f"shared), torch {torch.__version__}, {torch.get_num_threads()} threads, float32",
             f"# load average {load:.1f} at the end of the run\n"
             f"# python experiments/bench_losses.py --batch {args.batch} --image-size {args.image_size} "
             f"--loss-reps {args.loss_reps} --step-reps {args.step_reps}",
             f"# loss: forward+backward on fs, ft of shape ({args.batch}, d) each, best of {args.loss_reps} runs",
             f"# step: {args.batch} images of {args.image_size} px, forward + cross-entropy + backward + SGD step, "
             f"random init, best of {args.step_reps} runs; a DA step runs 2 x {args.batch} images, often at 224 px,",
             "#       so the real step costs more and the percentages below are upper bounds",
             f"{'d':>5}  {'backbone (step)':<22}{'step ms':>9}" + "".join(f"{k + ' ms (%)':>24}" for k in LOSSES)]
    worst = 0.0
    for d, backbone, step, times in rows:
        cells = ""
        for t in times.values():
            pct = 100 * t / step
            worst = max(worst, pct)
            cells += f"{t * 1e3:>14.3f} ({pct:6.3f}%)"
        lines.append(f"{d:>5}  {backbone:<22}{step * 1e3:>9.0f}" + cells)
    lines.append(f"largest loss / step ratio: {worst:.3f}% ({'under' if worst < 5 else 'OVER'} the 5% budget)")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
