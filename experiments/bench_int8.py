#!/usr/bin/env python
"""Benchmark: how far INT8 predictions move from FP32 with 8-bit and with 7-bit activations, evaluated by the
compiled oneDNN INT8 kernels and by float reference operators, on this CPU (da-export's --int8-reduce-range).

Without VNNI, oneDNN's INT8 convolutions add pairs of u8 x s8 products in int16 and saturate on activations
that use all 8 bits; float reference operators (eager) do not, so the difference between the two evaluations
of the same 8-bit program is what the kernels lose.  Each variant is one export of the same finished run
(calibrated on the same source-training images, checked on the same seeded target-test subset), without the
latency measurement.  Without --run, the slow export test's run is trained first (AID -> RSSCN7,
EfficientNet-Lite0 at 64 px, 20 steps: a model with many near-tied predictions, where saturation shows).

    python experiments/bench_int8.py --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from da.deploy.export import export_run
from da.deploy.int8 import cpu_has_vnni
from da.utils.bench import header, write_table

# (reduce_range, inductor): the two activation widths, each evaluated by the INT8 kernels and by reference ops
VARIANTS = (("off", True), ("on", True), ("off", False), ("on", False))


def short_run(data_root: str, out: str) -> Path:
    """The slow export test's run: a short AID -> RSSCN7 source-only run of EfficientNet-Lite0 at 64 px."""
    from da.config import RunConfig
    from da.train import run_experiment

    cfg = RunConfig(data_root=data_root, out=out, img_size=64, epochs=1, stages=1, max_steps_per_epoch=20,
                    method="source_only", cache_views=0, num_workers=0, progress=False, eval_batch_size=128)
    return Path(run_experiment(cfg)).parent


def measure(run_dir: Path, calibration_images: int, eval_images: int, variants=VARIANTS) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for i, (reduce_range, inductor) in enumerate(variants):
            card = export_run(run_dir, out=Path(folder) / f"export-{i}", calibration_images=calibration_images,
                              eval_images=eval_images, latency_batches=(), inductor=inductor,
                              reduce_range=reduce_range)
            rows.append(card["checks"]["int8"])
    return rows


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="a finished stage-2 run (default: train the slow test's run)")
    ap.add_argument("--data-root", default=os.environ.get("DA_DATA_ROOT", ""))
    ap.add_argument("--calibration-images", type=int, default=64)
    ap.add_argument("--eval-images", type=int, default=256)
    ap.add_argument("--reference-only", action="store_true",
                    help="only the float-reference evaluations (no compilation; the test uses it)")
    ap.add_argument("--out", default="results/benchmarks/int8_activation_bits.txt")
    args = ap.parse_args(argv)
    variants = [v for v in VARIANTS if not (args.reference_only and v[1])]
    with tempfile.TemporaryDirectory() as runs:
        run_dir = Path(args.run) if args.run else short_run(args.data_root, runs)
        rows = measure(run_dir, args.calibration_images, args.eval_images, variants)
    lines = header("INT8 against FP32 with 8- and 7-bit activations (experiments/bench_int8.py)")
    lines += [f"# run {run_dir.name if args.run else '(the slow export test run, trained here)'}; this CPU has VNNI: "
              f"{'yes' if cpu_has_vnni() else 'no'}; calibration on {args.calibration_images} source-training images, "
              f"checks on {rows[0]['images']} target-test images",
              f"{'activations':<13}{'evaluated with':<28}{'agree with FP32':>16}{'max logit change':>18}"
              f"{'INT8 acc':>10}{'FP32 acc':>10}"]
    for row in rows:
        kernels = "oneDNN INT8 (compiled)" if "oneDNN" in row["evaluated_with"] else "float reference ops"
        lines.append(f"{row['activation_bits']:>2}-bit       {kernels:<28}{100 * row['predictions_agree_with_fp32']:>15.1f}%"
                     f"{100 * row['max_abs_logit_diff_relative']:>17.1f}%{100 * row['int8_accuracy']:>9.1f}%"
                     f"{100 * row['fp32_accuracy']:>9.1f}%")
    lines.append("# max logit change: the largest |INT8 - FP32| logit over the largest |FP32| logit; the variants are "
                 "exports of one run, so FP32 accuracy is the same in every row")
    return write_table(args.out, lines)


if __name__ == "__main__":
    main()
