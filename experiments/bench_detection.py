#!/usr/bin/env python
"""Benchmark: the Faster R-CNN detector's training step and inference (images/s), on the CPU or a GPU.

    python experiments/bench_detection.py --data-root ../shared/data          # CPU: results/benchmarks/detection-cpu.txt
    python experiments/bench_gpu.py ...                                       # runs this too on the GPU node

Training: one SGD step (forward with the losses, backward, step) on a fixed batch of real NWPU VHR-10
training images (random images when the data are not there), for the variants that change the cost:
torchvision's default RoI sampler with the default anchors (the baseline, 1.00x), fitted anchors (9 shapes a
location instead of 3), OHEM (a read-only head pass over every proposal) and the focal box loss; on a GPU
also AMP bf16.  Inference: the whole ``model.eval()`` forward at batch 1 and at the training batch, plus
the class-wise NMS of ``da.detection.evaluate``.  Each figure is the median over timed repeats after warm-up,
the variants interleaved so that a busy machine slows all of them alike; ratios are against the baseline
measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from da.detection.anchors import anchor_generator_args, fit_anchors
from da.detection.config import DetectionConfig
from da.detection.evaluate import postprocess
from da.detection.model import build_detector
from da.utils.bench import header, timed, write_table


def _batch(cfg: DetectionConfig, n: int, data_root: str):
    """``n`` training images and targets (real NWPU VHR-10 when found), and every training box's shape."""
    from da.detection.data import load_detection, split_by_image
    from da.detection.engine import DetectionDataset, training_box_shapes
    from da.detection.transforms import detection_transforms

    try:
        data = load_detection(cfg.dataset, data_root)
    except Exception:  # no data: random images with random boxes of NWPU-like sizes
        g = torch.Generator().manual_seed(0)
        images = [torch.rand(3, 600, 704, generator=g) for _ in range(n)]
        xy = torch.rand(max(n, 8), 8, 2, generator=g) * 500
        wh = 20 + torch.rand(max(n, 8), 8, 2, generator=g) * 100  # at least 64 shapes for the anchor fit
        targets = [{"boxes": torch.cat([xy[i], xy[i] + wh[i]], 1), "labels": torch.randint(1, 11, (8,), generator=g)}
                   for i in range(n)]
        return images, targets, (wh.reshape(-1, 2) * cfg.max_size / 704).numpy(), "random images"
    train = split_by_image(data, cfg.val_fraction, cfg.test_fraction, seed=cfg.split_seed).train
    ds = DetectionDataset(train[:n], detection_transforms(train=False))
    images, targets = zip(*(ds[i] for i in range(n)))
    return list(images), list(targets), training_box_shapes(train, cfg), "NWPU VHR-10 training images"


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def detection_lines(device: torch.device, data_root: str, batch: int, repeats: int, warmup: int,
                    min_size: int = 512, max_size: int = 512) -> list[str]:
    """The benchmark's table lines (no header) for ``device``."""
    torch.manual_seed(0)
    cfg = DetectionConfig(min_size=min_size, max_size=max_size, device=device.type)
    images, targets, wh, what = _batch(cfg, batch, data_root)
    images = [im.to(device) for im in images]
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    fitted = anchor_generator_args(fit_anchors(wh, k=9, seed=0).anchors)
    variants = {"default sampler, default anchors": (cfg, None, False),
                "fitted anchors": (cfg.replace(anchors="fitted"), fitted, False),
                "OHEM": (cfg.replace(sampler="ohem"), None, False),
                "focal box loss": (cfg.replace(box_cls_loss="focal"), None, False)}
    if device.type == "cuda":
        variants["AMP bf16"] = (cfg, None, True)
    models, steps = {}, {}
    for name, (c, anchors, amp) in variants.items():
        model, _ = build_detector(c, 10, anchors)
        model.to(device).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

        def step(model=model, opt=opt, amp=amp):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = sum(model(images, targets).values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            _sync(device)

        models[name], steps[name] = model, step
    times = {name: [] for name in steps}
    for _ in range(warmup):
        for step in steps.values():
            step()
    for _ in range(repeats):  # interleaved
        for name, step in steps.items():
            t = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["default sampler, default anchors"])
    lines = [f"# training step on {batch} {what} resized to {min_size}-{max_size} px, {device.type}; median of "
             f"{repeats} after {warmup} warm-up, variants interleaved",
             f"{'variant':<36}{'s/step':>9}{'img/s':>9}{'time vs baseline':>18}"]
    for name, ts in times.items():
        m = statistics.median(ts)
        lines.append(f"{name:<36}{m:>9.3f}{batch / m:>9.2f}{m / base:>17.2f}x")
    model = models["default sampler, default anchors"].eval()
    lines.append(f"# inference: model.eval() forward + class-wise NMS 0.5 (score >= 0.05, 100 a image), median of "
                 f"{repeats} after {warmup} warm-up")
    lines.append(f"{'batch':<36}{'s/batch':>9}{'img/s':>9}")
    for b in sorted({1, batch}):
        def infer(b=b):
            with torch.no_grad():
                out = model(images[:b])
            [postprocess(o, 0.5, 0.05, 100) for o in out]
            _sync(device)
        ts = timed(infer, repeats, warmup)
        m = statistics.median(ts)
        lines.append(f"{b:<36}{m:>9.3f}{b / m:>9.2f}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=os.environ.get("DA_DATA_ROOT", ""))
    ap.add_argument("--batch", type=int, default=0, help="default: 4 on the CPU, 8 on a GPU")
    ap.add_argument("--repeats", type=int, default=0, help="default: 5 on the CPU, 20 on a GPU")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--size", type=int, default=512, help="images resized so that the longer side is this")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch or (8 if device.type == "cuda" else 4)
    repeats = args.repeats or (20 if device.type == "cuda" else 5)
    lines = header("Faster R-CNN (Lite0 + FPN) training step and inference (experiments/bench_detection.py)")
    lines += detection_lines(device, args.data_root, batch, repeats, args.warmup, args.size, args.size)
    write_table(args.out or f"results/benchmarks/detection-{device.type}.txt", lines)


if __name__ == "__main__":
    main()
