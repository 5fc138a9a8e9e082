"""Export a finished run for deployment: ONNX (checked with onnxruntime), INT8 (PyTorch PT2E), a model card.

    da-export --run runs/stage2-<hash>
    da-export --run runs/stage2-<hash> --out deploy/aid-rsscn7 --calibration-images 512 --eval-images 200

(``python experiments/export.py`` in a checkout is the same program.)

Writes model.onnx (FP32, dynamic batch), model_int8.pt2 (INT8, torch.export), checks.json and
model_card.json into --out (default RUN_DIR/export), all at once: a failed export leaves nothing, and an
earlier export there is replaced only when the new one has passed its checks.  The ONNX file must match
PyTorch on the run's target-test images (largest absolute logit difference under 1e-3, every predicted
class the same); the INT8 model is calibrated on the run's source-training images, and its target-test
accuracy and CPU latency (batch 1 and 32) are compared with FP32.  The last line printed is the path of
the model card.
"""

from __future__ import annotations

import argparse
import logging
import sys

from da.deploy.export import LATENCY_BATCHES, ONNX_OPSET, ExportCheckFailed, export_run
from da.deploy.int8 import REDUCE_RANGE_CHOICES
from da.deploy.load import RunNotUsable


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(allow_abbrev=False, prog="da-export", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", required=True, help="a finished stage-2 run directory (runs/stage2-<hash>)")
    p.add_argument("--out", default=None, help="the export folder (default: RUN/export)")
    p.add_argument("--calibration-images", type=_positive, default=256,
                   help="source-training images the INT8 activation ranges are calibrated on")
    p.add_argument("--eval-images", type=_positive, default=None,
                   help="check on N target-test images drawn at random, seeded (default: all of them)")
    p.add_argument("--data-root", default=None,
                   help="the folder holding the run's datasets (default: the run's own data root)")
    p.add_argument("--latency-repeats", type=_positive, default=20,
                   help="timed calls per model and batch size (the median is reported)")
    p.add_argument("--opset", type=int, default=ONNX_OPSET, help="ONNX opset (17 or later)")
    p.add_argument("--int8-reduce-range", choices=REDUCE_RANGE_CHOICES, default="auto",
                   help="quantize INT8 activations to 7 bits: auto = where this CPU has no VNNI instructions "
                        "(AVX512-VNNI, AVX-VNNI, AMX), whose INT8 kernels saturate on 8-bit activations; use 'on' "
                        "when the model will run on such CPUs")
    args = p.parse_args(argv)
    if args.opset < 17:
        p.error(f"--opset must be 17 or later, got {args.opset}")
    return args


def summary(card: dict) -> str:
    onnx, int8 = card["checks"]["onnx"], card["checks"]["int8"]
    lines = [
        f"exported {card['model']['backbone']} ({card['data']['source']} -> {card['data']['target']}, "
        f"{card['training']['method']}) to {card['directory']}",
        f"  ONNX: max |logit difference| vs PyTorch {onnx['max_abs_logit_diff']:.3g} on {onnx['images']} target-test "
        f"images (tolerance {onnx['tolerance']:g}), predictions agree on {onnx['predictions_agree']}/{onnx['images']}",
        f"  INT8: target-test accuracy {int8['int8_accuracy']:.4f} vs FP32 {int8['fp32_accuracy']:.4f} "
        f"({100 * int8['accuracy_change']:+.2f} points), predictions agree with FP32 on "
        f"{100 * int8['predictions_agree_with_fp32']:.1f}% ({int8['conv_and_linear_layers']['int8']} of "
        f"{int8['conv_and_linear_layers']['total']} convolution and linear layers in INT8, "
        f"{int8['activation_bits']}-bit activations)",
    ]
    latency = int8.get("latency")
    if latency:
        lines.append(f"  CPU latency, ms per batch, median (fastest) of {latency['repeats']} calls, "
                     f"{latency['threads']} threads:")
        for batch, ms in latency["batches"].items():
            cells = ", ".join(f"{label} {ms[key]['median']:.1f} ({ms[key]['min']:.1f})" for key, label in (
                ("fp32_eager", "FP32 eager"), ("fp32_compiled", "FP32 compiled"), ("int8_compiled", "INT8 compiled")))
            lines.append(f"    batch {batch:>3}: {cells}; INT8 speed-up x{ms['speedup_int8_vs_fp32_compiled']:.2f} "
                         f"(x{ms['speedup_int8_vs_fp32_compiled_min']:.2f}) vs compiled FP32, "
                         f"x{ms['speedup_int8_vs_fp32_eager']:.2f} vs eager FP32; load average "
                         f"{ms['load_average_1min']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        card = export_run(args.run, out=args.out, calibration_images=args.calibration_images,
                          eval_images=args.eval_images, data_root=args.data_root,
                          latency_repeats=args.latency_repeats, latency_batches=LATENCY_BATCHES, opset=args.opset,
                          reduce_range=args.int8_reduce_range)
    except (RunNotUsable, FileNotFoundError, FileExistsError, ValueError, ModuleNotFoundError) as err:  # says what to do
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (ExportCheckFailed, OSError) as err:  # a failed check, a full disk: nothing was left behind
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(summary(card))
    print(f"{card['directory']}/model_card.json")
    return 0
