#!/usr/bin/env python
"""Benchmark: the paper preset's model (ResNet-50, 224 px, full fine-tuning) on this machine's accelerator.

One prepared command for a GPU node (it runs on the CPU too, end to end, for checking):

    python experiments/bench_gpu.py --data-root ../shared/data          # on the GPU node, e.g. inside sbatch
    python experiments/bench_gpu.py --model resnet18 --img-size 64 --batch 4 --steps 2   # a CPU check

- training throughput (forward, backward, SGD step; synthetic batches already on the device) for every
  combination of precision (fp32, AMP bf16, AMP fp16 with a GradScaler), memory format (contiguous,
  channels_last) and ``torch.compile`` (off, on): images/s, peak memory, and the share of the device's
  dense bf16 peak reached, counting 3x the forward FLOPs per image (forward + backward; measured with
  torch's FLOP counter: ~24.6 GFLOP for ResNet-50 at 224 px);
- the detector of issue 20 (Faster R-CNN, Lite0 + FPN, ``--det-size`` px; torchvision's default is 800):
  training step per variant (default, fitted anchors, OHEM, focal, AMP bf16) and inference images/s, from
  ``experiments/bench_detection.py``;
- the data pipeline: real images decoded and augmented at 224 px by a DataLoader with the workers this
  process may use (SLURM_CPUS_PER_TASK, else its CPU affinity, not a fixed number), pinned memory and
  persistent workers, in images/s next to the fastest training variant: which one bounds the run.

For scale: NVIDIA's reference ResNet-50 with AMP trains at ~2,470 images/s on one A100.
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import time

import torch
import torchvision
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from da.utils.bench import header, usable_cpus, write_table

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from the vendors' data sheets, by device-name fragment.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 756.0,
                    "A100": 312.0, "A10G": 70.0, "A10": 125.0, "L40S": 362.0, "L40": 181.0, "L4": 121.0,
                    "RTX 4090": 165.0, "RTX 3090": 71.0, "V100": 125.0, "T4": 65.0}


def peak_tflops(device: torch.device, override: float) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)


def workers_available() -> int:
    """The CPUs of this allocation: Slurm's count when set, else this process's affinity."""
    return int(os.environ.get("SLURM_CPUS_PER_TASK") or usable_cpus())


def forward_flops(model: torch.nn.Module, img_size: int, device: torch.device) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, img_size, img_size, device=device))
    model.train()
    return float(counter.get_total_flops())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_throughput(args, device, precision: str, channels_last: bool, compiled: bool) -> tuple[float, float]:
    """(images/s, peak memory in MB) of ``--steps`` timed training steps after ``--warmup`` steps."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.model)(weights=None, num_classes=45).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")
    forward = torch.compile(model) if compiled else model
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 45, (args.batch,), device=device)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(forward(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):  # the first compiles
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    ips = args.steps * args.batch / (time.perf_counter() - start)
    mem = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
    return ips, mem


def pipeline_throughput(args, device, workers: int) -> float | None:
    if not args.data_root:
        return None
    from da.data.domains import supervised_splits
    from da.data.transforms import train_transform
    from da.train.batches import SeededImages

    split = supervised_splits("AID", args.data_root, 0.2, 0)["train"]
    data = SeededImages(split, train_transform(args.img_size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), 0)
    loader = DataLoader(data, batch_size=args.batch, shuffle=True, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0, drop_last=True)
    n, start = 0, None
    for i, (xb, _) in enumerate(loader):
        xb = xb.to(device, non_blocking=True)
        if i == 0:
            start = time.perf_counter()  # workers started and warmed
            continue
        n += len(xb)
        if i == args.pipeline_batches:
            break
    sync(device)
    return n / (time.perf_counter() - start) if n else None


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50", help="a torchvision classification model name")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=0, help="default: 256 on a GPU, 8 on the CPU")
    ap.add_argument("--steps", type=int, default=0, help="timed steps per variant (default: 50 on a GPU, 3 on the CPU)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"], choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--compile", nargs="+", default=["off", "on"], choices=["off", "on"])
    ap.add_argument("--data-root", default=os.environ.get("DA_DATA_ROOT", ""),
                    help="where AID is, for the data-pipeline line (skipped without it)")
    ap.add_argument("--pipeline-batches", type=int, default=20)
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="the device's dense bf16 peak, when not in the table")
    ap.add_argument("--det-size", type=int, default=800, help="the detector's image size (longer side; 0: skip "
                    "the detection part)")
    ap.add_argument("--det-batch", type=int, default=0, help="detector batch (default: 8 on a GPU, 2 on the CPU)")
    ap.add_argument("--det-repeats", type=int, default=0, help="detector repeats (default: 20 on a GPU, 2 on the CPU)")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.batch = args.batch or (256 if device.type == "cuda" else 8)
    args.steps = args.steps or (50 if device.type == "cuda" else 3)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    out = args.out or f"results/benchmarks/gpu-{device.type}.txt"

    model = getattr(torchvision.models, args.model)(weights=None, num_classes=45).to(device)
    gflop = 3 * forward_flops(model, args.img_size, device) / 1e9
    peak = peak_tflops(device, args.peak_tflops)
    del model
    lines = header(f"{args.model} training throughput at {args.img_size} px (experiments/bench_gpu.py)")
    lines.append(f"# batch {args.batch}, {args.steps} timed steps after {args.warmup}; {gflop:.3g} GFLOP per training "
                 f"image (3x forward); dense bf16 peak {f'{peak:.0f} TFLOP/s' if peak else 'unknown (--peak-tflops)'}; peak mem: "
                 f"{'max allocated per variant' if device.type == 'cuda' else 'the process high-water mark so far (RSS)'}")
    lines.append(f"{'precision':<10}{'layout':<15}{'compile':<9}{'img/s':>10}{'% of peak':>11}{'peak mem MB':>13}")
    best = 0.0
    for precision, cl, comp in itertools.product(args.precisions, (False, True), args.compile):
        try:
            ips, mem = train_throughput(args, device, precision, cl, comp == "on")
        except Exception as err:  # one variant failing (no triton, no fp16 kernels on the CPU) is a result too
            lines.append(f"{precision:<10}{'channels_last' if cl else 'contiguous':<15}{comp:<9}  failed: "
                         f"{type(err).__name__}: {str(err).splitlines()[0][:80] if str(err) else ''}")
            continue
        best = max(best, ips)
        share = f"{100 * ips * gflop / 1e3 / peak:>10.1f}%" if peak else f"{'n/a':>11}"
        lines.append(f"{precision:<10}{'channels_last' if cl else 'contiguous':<15}{comp:<9}{ips:>10.1f}{share}{mem:>13.0f}")
    workers = workers_available()
    rate = pipeline_throughput(args, device, workers)
    if rate is None:
        lines.append("# data pipeline: skipped (no --data-root)")
    else:
        lines.append(f"# data pipeline: AID decoded + training transform at {args.img_size} px, {workers} workers "
                     f"(SLURM_CPUS_PER_TASK or affinity), pinned memory, persistent workers")
        lines.append(f"{'pipeline':<34}{rate:>10.1f} img/s = {rate / best:.2f}x the fastest training variant"
                     + ("  (the data bounds the run)" if rate < best else ""))
    if args.det_size:
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_detection import detection_lines

        lines.append(f"# Faster R-CNN (Lite0 + FPN, experiments/bench_detection.py) at {args.det_size} px, NWPU VHR-10 "
                     f"from --data-root")
        lines += detection_lines(device, args.data_root, args.det_batch or (8 if device.type == "cuda" else 2),
                                 args.det_repeats or (20 if device.type == "cuda" else 2), 1, args.det_size,
                                 args.det_size)
    write_table(out, lines)


if __name__ == "__main__":
    main()
