"""Export a finished run for deployment: ONNX (checked with onnxruntime), INT8 (PyTorch PT2E), a model card.

The formats, each in its own module: ``onnx_model`` (ONNX, checked with onnxruntime), ``int8`` (PT2E
post-training quantization), ``latency`` (CPU timing), ``card`` (the model card) and ``folder`` (the
atomic replacement of the export folder); this module runs them on a finished run and checks each
against the PyTorch model on the run's own target-test images.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from da.data.domains import Split
from da.deploy.card import CARD_FILE, CHECKS_FILE, model_card
from da.deploy.errors import ExportCheckFailed
from da.deploy.folder import check_out, replace_dir
from da.deploy.int8 import (INT8_FILE, cpu_has_vnni, load_int8, quantize_int8, quantized_layers, resolve_reduce_range,
                            save_int8)
from da.deploy.latency import compiled, inductor_freezing, latency_table, padded
from da.deploy.load import FinishedRun, RunNotUsable, load_run
from da.deploy.onnx_model import ONNX_FILE, ONNX_OPSET, ONNX_TOLERANCE, export_onnx, onnx_session
from da.utils.io import atomic_write_json, file_digest

log = logging.getLogger(__name__)

EXPORT_FILES = (ONNX_FILE, INT8_FILE, CHECKS_FILE, CARD_FILE)
EVAL_BATCH = 32  # the INT8 program is compiled for fixed batch sizes; evaluation uses this one (padded)
LATENCY_BATCHES = (1, 32)
__all__ = ["EXPORT_FILES", "ExportCheckFailed", "LATENCY_BATCHES", "ONNX_OPSET", "export_run", "load_int8", "run_images"]


class LogitsOnly(nn.Module):
    """The run's model as a deployable function: normalised images (N, 3, S, S) -> logits (N, C).

    ``DAModel.forward`` also returns the bottleneck features the alignment losses act on; a deployed
    classifier has no use for them, and exporting them would only add an output and its computation."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)[0]


@dataclass
class RunImages:
    """The run's target-test images (for the checks) and source-train images (for calibration)."""

    target_test: Split
    source_train: Split
    root: str


def run_images(run: FinishedRun, data_root: str | os.PathLike | None = None) -> RunImages:
    """The run's own splits, rebuilt from its config, refused when they differ from what the run saw."""
    from da.data import default_data_root

    cfg = run.config
    root = str(data_root) if data_root else (cfg.data_root or str(default_data_root()))
    if not Path(root).is_dir():
        raise FileNotFoundError(f"data root {root} (of run {run.run_dir}) does not exist; give the folder that holds "
                                f"{cfg.source} and {cfg.target} with --data-root")
    splits = run.own_splits(root)
    return RunImages(target_test=splits["target_test"], source_train=splits["source_train"], root=root)


def batches(split, samples, transform, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    from da.data.folder import ImageListDataset

    loader = torch.utils.data.DataLoader(ImageListDataset(split.folder, samples, transform), batch_size=batch_size,
                                         shuffle=False, num_workers=0)
    for images, labels, _ in loader:
        yield images, labels


def subset(samples: list, n: int, seed: int) -> list:
    """``n`` of ``samples`` drawn at random, seeded, in their original order."""
    chosen = np.random.default_rng(seed).choice(len(samples), size=min(n, len(samples)), replace=False)
    return [samples[i] for i in sorted(chosen.tolist())]


def calibration_samples(split, n: int, seed: int) -> list[tuple[str, int]]:
    """``n`` source-training images drawn at random (seeded: the same export gives the same INT8 model)."""
    if n < 1:
        raise ValueError(f"--calibration-images must be at least 1, got {n}")
    return subset(split.samples, n, seed)


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    return float((pred == labels).mean()) if len(labels) else float("nan")


EXPORT_PACKAGES = ("onnx", "onnxruntime", "onnxscript", "torchao")


def check_dependencies() -> None:
    """The export's optional packages are there, or an error that says how to install them."""
    import importlib.util

    missing = [name for name in EXPORT_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ModuleNotFoundError(f"da-export needs {', '.join(missing)}, which the core install leaves out: "
                                  f"pip install \"da[export]\" (or pip install -e \".[export]\" in a checkout)")


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, calibration_images: int = 256,
               eval_images: int | None = None, data_root: str | os.PathLike | None = None,
               latency_repeats: int = 20, latency_batches: tuple[int, ...] = LATENCY_BATCHES,
               inductor: bool = True, opset: int = ONNX_OPSET, reduce_range: str = "auto") -> dict:
    """Export the finished run ``run_dir``; returns the model card (also written as ``model_card.json``).

    ``eval_images``: N target-test images drawn at random (seeded) for the checks (default: all of them).
    ``inductor=False`` evaluates the INT8 program in eager mode (float reference operators: the same
    quantisation, no INT8 kernels) and measures no latency; the tests use it to stay fast.
    ``reduce_range``: "auto" (7-bit activations where this CPU has no VNNI, see :func:`cpu_has_vnni`), "on"
    or "off".
    """
    check_dependencies()
    seven_bit = resolve_reduce_range(reduce_range)
    run = load_run(run_dir)
    if run.record.get("stage") == 1:  # a stage-1 run has no target: nothing to check the export on
        raise RunNotUsable(f"run {run.run_dir} is a stage-1 (supervised) run; export a stage-2 run "
                           f"(runs/stage2-<hash>)")
    out = Path(out) if out else run.run_dir / "export"
    check_out(out)
    if eval_images is not None and eval_images < 1:
        raise ValueError(f"--eval-images must be at least 1, got {eval_images}")
    if latency_repeats < 1:
        raise ValueError(f"--latency-repeats must be at least 1, got {latency_repeats}")
    images = run_images(run, data_root)
    test_samples = images.target_test.samples
    if eval_images and eval_images < len(test_samples):  # a random subset: the split is ordered by class
        test_samples = subset(test_samples, eval_images, run.config.split_seed)
    if not test_samples:
        raise RunNotUsable(f"run {run.run_dir} has no target-test images to check the export on")
    calib = calibration_samples(images.source_train, calibration_images, run.config.split_seed)
    transform, size = run.transform(), run.img_size
    module = LogitsOnly(run.model).eval()

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's folder is private (0700); the export is an ordinary folder
    try:
        card = _export_into(tmp, run, module, images, test_samples, calib, transform, size, latency_repeats,
                            latency_batches, inductor, opset, seven_bit)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    card["directory"] = str(out)
    return card


def _export_into(tmp: Path, run: FinishedRun, module: nn.Module, images: RunImages, test_samples, calib, transform,
                 size: int, latency_repeats: int, latency_batches: tuple[int, ...], inductor: bool, opset: int,
                 seven_bit: bool) -> dict:
    started = time.time()
    split = images.target_test
    # 1. ONNX, checked on the target-test images
    log.info("exporting ONNX (opset %d)", opset)
    onnx_files = export_onnx(module, tmp / ONNX_FILE, size, opset)
    session = onnx_session(tmp / ONNX_FILE)
    fp32_logits, onnx_logits, labels = [], [], []
    with torch.no_grad():
        for batch, y in batches(split, test_samples, transform, EVAL_BATCH):
            fp32_logits.append(module(batch).numpy())
            onnx_logits.append(session.run(["logits"], {"image": batch.numpy()})[0])
            labels.append(y.numpy())
    fp32, ort_out, labels = np.concatenate(fp32_logits), np.concatenate(onnx_logits), np.concatenate(labels)
    onnx_diff = float(np.abs(fp32 - ort_out).max())
    disagree = int((fp32.argmax(1) != ort_out.argmax(1)).sum())
    log.info("ONNX vs PyTorch on %d target-test images: max |logit difference| %.3g, %d disagreements",
             len(labels), onnx_diff, disagree)
    if not onnx_diff < ONNX_TOLERANCE or disagree:
        raise ExportCheckFailed(f"the ONNX export of run {run.run_dir} does not match PyTorch on {len(labels)} "
                                f"target-test images: largest absolute logit difference {onnx_diff:.3g} (tolerance "
                                f"{ONNX_TOLERANCE:g}), {disagree} predicted classes differ; nothing was written. "
                                f"Try another --opset, or report it with the versions of torch, onnx and onnxruntime")
    onnx_check = {"images": int(len(labels)), "max_abs_logit_diff": onnx_diff, "tolerance": ONNX_TOLERANCE,
                  "predictions_agree": int(len(labels) - disagree), "opset": opset,
                  "exporter": "torch.onnx.export(dynamo=True)", "runtime": "onnxruntime CPUExecutionProvider"}

    # 2. INT8: calibrate on source-train images, save, reload, evaluate and time the reloaded program
    log.info("quantising to INT8 (PT2E, X86InductorQuantizer, %d-bit activations), calibrating on %d source-train "
             "images", 7 if seven_bit else 8, len(calib))
    qmodel = quantize_int8(module, (b for b, _ in batches(images.source_train, calib, transform, EVAL_BATCH)), size,
                           reduce_range=seven_bit)
    layers = quantized_layers(qmodel)
    save_int8(qmodel, tmp / INT8_FILE, size)
    int8 = load_int8(tmp / INT8_FILE)
    first = next(batches(split, test_samples[:EVAL_BATCH], transform, EVAL_BATCH))[0]
    with torch.no_grad():
        if not torch.equal(int8(first), qmodel(first)):
            raise ExportCheckFailed(f"{INT8_FILE} read back gives other outputs than the quantized model; nothing "
                                    f"was written")
    del qmodel
    latency = None
    if inductor:
        # dynamo keeps compiled code per forward function with a limit on variants: an earlier export in
        # this process (another run, other shapes) must not push these models back to eager mode unnoticed
        from torch import _dynamo

        _dynamo.reset()
    with inductor_freezing() if inductor else contextlib.nullcontext(), torch.no_grad():
        int8_fn = compiled(int8, "INT8") if inductor else int8
        int8_logits = []
        for batch, _ in batches(split, test_samples, transform, EVAL_BATCH):
            int8_logits.append((padded(int8_fn, batch, EVAL_BATCH) if inductor else int8_fn(batch)).numpy())
        if inductor and latency_batches:
            latency = latency_table(module, int8, first, latency_batches, latency_repeats)
    q8 = np.concatenate(int8_logits)
    fp32_acc, int8_acc = accuracy(fp32.argmax(1), labels), accuracy(q8.argmax(1), labels)
    scale = float(np.abs(fp32).max())
    int8_check = {
        "flow": "PT2E: torch.export + torchao prepare_pt2e/convert_pt2e, X86InductorQuantizer (static, "
                "per-channel weights)",
        "calibration": {"split": "source_train", "images": len(calib), "dataset": run.config.source},
        # 7 bits where the exporting CPU has no VNNI (--int8-reduce-range auto): its kernels saturate on 8
        "activation_bits": 7 if seven_bit else 8, "exporting_cpu_has_vnni": cpu_has_vnni(),
        "conv_and_linear_layers": layers,
        "evaluated_with": "torch.compile (Inductor, freezing): oneDNN INT8 kernels" if inductor else
                          "eager: quantize/dequantize with float reference operators",
        "images": int(len(labels)),
        "fp32_accuracy": fp32_acc, "int8_accuracy": int8_acc, "accuracy_change": int8_acc - fp32_acc,
        "predictions_agree_with_fp32": float((fp32.argmax(1) == q8.argmax(1)).mean()),
        "max_abs_logit_diff": float(np.abs(fp32 - q8).max()),
        "max_abs_logit_diff_relative": float(np.abs(fp32 - q8).max()) / scale if scale else None,
        "latency": latency,
    }
    checks = {"onnx": onnx_check, "int8": int8_check, "target_test_images": int(len(labels)),
              "target_test_split_size": len(split.samples), "data_root": images.root,
              "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "seconds": round(time.time() - started, 1)}
    atomic_write_json(tmp / CHECKS_FILE, checks)
    files = [*onnx_files, tmp / INT8_FILE, tmp / CHECKS_FILE]
    card = model_card(run, checks, {f.name: {"sha256": file_digest(f), "bytes": f.stat().st_size} for f in files})
    atomic_write_json(tmp / CARD_FILE, card)
    return card
