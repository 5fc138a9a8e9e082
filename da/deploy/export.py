"""Export a finished run for deployment: ONNX (checked with onnxruntime), INT8 (PyTorch PT2E), a model card.

``export_run(run_dir)`` writes, into ``<run_dir>/export/`` (or ``out``)::

    model.onnx        FP32, input ``image`` (N, 3, S, S) normalised, output ``logits`` (N, C); N is dynamic
    model_int8.pt2    INT8, a torch.export program (load it with :func:`load_int8`)
    checks.json       the checks and measurements below
    model_card.json   classes, input size, normalisation, datasets, method, the run's metrics, the checks,
                      versions and the sha256 of every file above

**ONNX.** ``torch.onnx.export`` with the torch.export-based exporter (``dynamo=True``, which translates the
graph with onnxscript; the TorchScript-based one is deprecated in torch 2.9+), opset 18, of a module that
returns the logits only, with a dynamic batch axis.  The file is then run by onnxruntime on the run's own
target-test images (its splits, rebuilt from its config and checked against its manifest, through its
evaluation transform): the largest absolute logit difference against PyTorch must stay under
``ONNX_TOLERANCE`` and every predicted class must agree, otherwise the export fails.

**INT8.** Post-training static quantization in the PT2E flow: ``torch.export`` of the same module,
``prepare_pt2e`` / ``convert_pt2e`` with the ``X86InductorQuantizer`` (INT8 per-channel weights, per-tensor
activations), calibrated on images of the run's *source* training split only (the target's labels and
images are never used to fit anything).  torch 2.14 no longer has ``torch.ao.quantization.quantize_pt2e``:
the flow lives in the ``torchao`` package.  The eager/FX flow (``prepare_fx``) is no alternative here: it
is deprecated with the rest of ``torch.ao.quantization``, and it cannot trace the default backbone, whose
TF-"same" convolutions compute their padding from the input size in Python.  The converted program holds
quantize/dequantize nodes around float operators; only Inductor (``torch.compile`` with freezing, after
torchao's x86 passes are registered) turns them into oneDNN INT8 kernels, so INT8 accuracy and latency are
measured on the compiled program, and the FP32 latency on the FP32 model compiled the same way (the eager
FP32 latency is reported too).  Latency is the median (and the fastest) of repeated CPU calls after
warm-up, FP32 and INT8 alternating in one loop so that load from other processes affects both alike.

Everything is written into a temporary folder beside the destination and renamed into place at the end:
a failed export leaves nothing, and an earlier export in ``out`` is replaced only once the new one passed.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from da.data.domains import Split
from da.deploy.load import FinishedRun, RunNotUsable, load_run
from da.utils.cuda_home_notice import import_cpp_extension_quietly
from da.utils.io import atomic_write_json, file_digest

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
INT8_FILE = "model_int8.pt2"
CHECKS_FILE = "checks.json"
CARD_FILE = "model_card.json"
EXPORT_FILES = (ONNX_FILE, INT8_FILE, CHECKS_FILE, CARD_FILE)

ONNX_OPSET = 18
ONNX_TOLERANCE = 1e-3  # largest absolute logit difference onnxruntime vs PyTorch that passes
EVAL_BATCH = 32  # the INT8 program is compiled for fixed batch sizes; evaluation uses this one (padded)
LATENCY_BATCHES = (1, 32)
# protobuf cannot hold a file over 2 GiB: larger models keep their weights in model.onnx.data beside it
ONNX_SINGLE_FILE_MAX_BYTES = 1_800_000_000


class ExportCheckFailed(RuntimeError):
    """An exported model does not match the PyTorch model (or cannot run); nothing was written."""


class LogitsOnly(nn.Module):
    """The run's model as a deployable function: normalised images (N, 3, S, S) -> logits (N, C).

    ``DAModel.forward`` also returns the bottleneck features the alignment losses act on; a deployed
    classifier has no use for them, and exporting them would only add an output and its computation."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)[0]


# --------------------------------------------------------------------------------------------- the data

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


def _batches(split, samples, transform, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    from da.data.folder import ImageListDataset

    loader = torch.utils.data.DataLoader(ImageListDataset(split.folder, samples, transform), batch_size=batch_size,
                                         shuffle=False, num_workers=0)
    for images, labels, _ in loader:
        yield images, labels


def _subset(samples: list, n: int, seed: int) -> list:
    """``n`` of ``samples`` drawn at random, seeded, in their original order."""
    chosen = np.random.default_rng(seed).choice(len(samples), size=min(n, len(samples)), replace=False)
    return [samples[i] for i in sorted(chosen.tolist())]


def calibration_samples(split, n: int, seed: int) -> list[tuple[str, int]]:
    """``n`` source-training images drawn at random (seeded: the same export gives the same INT8 model)."""
    if n < 1:
        raise ValueError(f"--calibration-images must be at least 1, got {n}")
    return _subset(split.samples, n, seed)


# --------------------------------------------------------------------------------------------- ONNX

def export_onnx(module: nn.Module, path: Path, img_size: int, opset: int = ONNX_OPSET) -> list[Path]:
    """Write ``module`` (images -> logits) to ``path`` with a dynamic batch axis; returns the files written."""
    import onnx

    example = torch.zeros(2, 3, img_size, img_size)  # batch 2: torch.export specialises a size of 1
    batch = torch.export.Dim("batch", min=1, max=65536)
    external = sum(p.numel() * p.element_size() for p in module.parameters()) > ONNX_SINGLE_FILE_MAX_BYTES
    # the exporter prints its progress on stdout and logs every graph rewrite; the CLI prints its own summary
    with contextlib.redirect_stdout(io.StringIO()), _quiet_loggers("onnx_ir", "onnxscript"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (example,), str(path), input_names=["image"], output_names=["logits"],
                              opset_version=opset, dynamo=True, external_data=external,
                              dynamic_shapes={"image": {0: batch}}, verbose=False)
        except Exception as err:  # torch.export and the ONNX translation raise many types
            raise ExportCheckFailed(f"torch.onnx.export failed ({type(err).__name__}: {_first_line(err)}); "
                                    f"try another --opset, or report it with the backbone and the versions of "
                                    f"torch and onnxscript") from err
    onnx.checker.check_model(str(path))  # by path: also works when the weights are in an external file
    return [path] + sorted(path.parent.glob(path.name + ".data"))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "no message"


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _onnx_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the same CPU share as the PyTorch side
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------------------------- INT8

def _torchao_x86():
    """torchao's PT2E entry points; importing its x86 quantizer also registers the Inductor passes that
    lower quantize/dequantize + float convolution patterns to oneDNN INT8 kernels."""
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq
    except ImportError as err:
        raise ExportCheckFailed(f"INT8 export needs the torchao package (PyTorch's PT2E quantization moved there; "
                                f"pip install 'torchao>=0.18,<0.19' for torch 2.14): {err}") from err
    return prepare_pt2e, convert_pt2e, xiq


def quantize_int8(module: nn.Module, calibration: Iterator[torch.Tensor], img_size: int) -> torch.fx.GraphModule:
    """PT2E post-training static quantization of ``module`` (images -> logits), calibrated on ``calibration``."""
    prepare_pt2e, convert_pt2e, xiq = _torchao_x86()
    example = torch.zeros(2, 3, img_size, img_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchao's deprecation notices about torch internals, not actionable here
        try:
            graph = torch.export.export(
                module, (example,), dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1, max=65536)}}).module()
        except Exception as err:  # torch.export raises many types for code it cannot capture
            raise ExportCheckFailed(f"torch.export cannot capture the model for INT8 quantization "
                                    f"({type(err).__name__}: {_first_line(err)})") from err
        quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(graph, quantizer)
        seen = 0
        with torch.no_grad():
            for images in calibration:
                prepared(images)
                seen += len(images)
        if seen == 0:
            raise ValueError("no calibration images: the run's source training split is empty")
        return convert_pt2e(prepared)


def quantized_layers(graph: torch.fx.GraphModule) -> dict[str, int]:
    """How many convolutions and linear layers of the converted program read an INT8 weight.

    The quantizer leaves some in FP32: e.g. the stride-2 convolutions of TF-ported EfficientNets, which
    timm feeds through an explicit asymmetric pad that the x86 quantizer does not annotate."""
    layers = [n for n in graph.graph.nodes if n.op == "call_function"
              and n.target in (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)]
    int8 = [n for n in layers if isinstance(n.args[1], torch.fx.Node) and "dequantize" in str(n.args[1].target)]
    return {"int8": len(int8), "total": len(layers)}


def _drop_unused_tensors(graph: torch.fx.GraphModule) -> int:
    """Remove parameters and buffers the graph never reads; returns how many.

    ``convert_pt2e`` reads the INT8 copy of each quantized weight but keeps the FP32 original as an
    attribute, and ``torch.export`` saves every attribute: without this the INT8 file is larger than the
    FP32 one."""
    read = {node.target for node in graph.graph.nodes if node.op == "get_attr"}
    unused = [name for name, _ in [*graph.named_parameters(), *graph.named_buffers()] if name not in read]
    for name in unused:
        owner, _, attr = name.rpartition(".")
        delattr(graph.get_submodule(owner) if owner else graph, attr)
    return len(unused)


def save_int8(qmodel: torch.fx.GraphModule, path: Path, img_size: int) -> None:
    """The quantized program as a torch.export archive with a dynamic batch axis."""
    dropped = _drop_unused_tensors(qmodel)
    log.debug("INT8 program: %d FP32 tensors no longer read were left out", dropped)
    example = torch.zeros(2, 3, img_size, img_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(qmodel, (example,),
                                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},))
    torch.export.save(program, str(path))


def load_int8(path: str | os.PathLike) -> nn.Module:
    """The INT8 model written by ``da-export`` (``model_int8.pt2``) as a callable module, images -> logits.

    Outside this project the same is::

        import torch, torchao.quantization.pt2e.quantizer.x86_inductor_quantizer  # registers INT8 ops and passes
        model = torch.export.load("model_int8.pt2").module()
        with torch._inductor.config.patch(freezing=True), torch.no_grad():
            fast = torch.compile(model)   # oneDNN INT8 kernels; called eagerly it runs float reference ops
            logits = fast(images)         # images: (N, 3, S, S), normalised as in model_card.json
    """
    _torchao_x86()  # the quantize/dequantize ops must be registered before the archive can be read
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"INT8 model {path} does not exist; da-export --run RUN_DIR writes it")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.load(str(path)).module()


@contextlib.contextmanager
def _inductor_freezing() -> Iterator[None]:
    # freezing folds the weights into constants, which is what lets Inductor prepack INT8 weights for oneDNN
    import torch._inductor.config as inductor_config

    with inductor_config.patch(freezing=True), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _compiled(module: nn.Module, what: str) -> Callable[[torch.Tensor], torch.Tensor]:
    import_cpp_extension_quietly()  # a CPU compile: torch's CUDA_HOME notice would say nothing about it
    compiled = torch.compile(module, dynamic=False)

    def call(images: torch.Tensor) -> torch.Tensor:
        try:
            return compiled(images)
        except Exception as err:  # Inductor raises many types (no C++ compiler, a failed lowering)
            raise ExportCheckFailed(f"torch.compile (Inductor) failed on the {what} model ({type(err).__name__}: "
                                    f"{_first_line(err)}); INT8 kernels on the CPU need it and a C++ compiler "
                                    f"(g++) on the PATH") from err
    return call


def _padded(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch: int) -> torch.Tensor:
    """``fn`` compiled for ``batch`` rows, applied to fewer: zero rows fill the batch and are dropped after.
    Static activation scales and folded BatchNorm make every row independent of the others."""
    n = len(images)
    if n == batch:
        return fn(images)
    filler = images.new_zeros((batch - n, *images.shape[1:]))
    return fn(torch.cat([images, filler]))[:n]


def measure_latency(fns: dict[str, Callable[[torch.Tensor], torch.Tensor]], images: torch.Tensor,
                    repeats: int, warmup: int = 3) -> dict[str, dict[str, float]]:
    """Milliseconds per call of each function on ``images`` (median and fastest of ``repeats``), the
    functions alternating in one loop."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    with torch.no_grad():
        for fn in fns.values():
            for _ in range(warmup):
                fn(images)
        for _ in range(repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn(images)
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: {"median": round(statistics.median(ts), 3), "min": round(min(ts), 3)} for name, ts in times.items()}


# --------------------------------------------------------------------------------------------- the export

def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("torchao", "onnx", "onnxruntime", "onnxscript", "timm"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    return out


def _accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    return float((pred == labels).mean()) if len(labels) else float("nan")


def _check_out(out: Path) -> None:
    """Refuse to replace a folder that is not an earlier export (it could hold anything)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / CARD_FILE).exists())):
        raise FileExistsError(f"--out {out} exists and is not an earlier export (no {CARD_FILE} in it); give an "
                              f"empty or new folder, or remove it")


def _own_files(folder: Path) -> set[str]:
    """What an earlier export wrote into ``folder``: its card and the files the card lists."""
    try:
        card = json.loads((folder / CARD_FILE).read_text())
        return {CARD_FILE, *card.get("files", {})}
    except (OSError, ValueError, AttributeError):
        return {CARD_FILE}


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished export ``tmp`` to ``out``.  An earlier export there is replaced, but only what it wrote
    (its card's files): anything else in the folder (da-predict's predictions, a user's notes) moves into the new
    export first, and back if the move fails."""
    old, kept = None, []
    if out.exists():
        ours = _own_files(out)
        for entry in sorted(out.iterdir()):
            if entry.name not in ours and not (tmp / entry.name).exists():
                os.replace(entry, tmp / entry.name)
                kept.append(entry.name)
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        if old is not None:
            os.replace(old, out)  # put the earlier export back, with what it held
            for name in kept:
                os.replace(tmp / name, out / name)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
               inductor: bool = True, opset: int = ONNX_OPSET) -> dict:
    """Export the finished run ``run_dir``; returns the model card (also written as ``model_card.json``).

    ``eval_images``: N target-test images drawn at random (seeded) for the checks (default: all of them).
    ``inductor=False`` evaluates the INT8 program in eager mode (float reference operators: the same
    quantisation, no INT8 kernels) and measures no latency; the tests use it to stay fast.
    """
    check_dependencies()
    run = load_run(run_dir)
    if run.record.get("stage") == 1:  # a stage-1 run has no target: nothing to check the export on
        raise RunNotUsable(f"run {run.run_dir} is a stage-1 (supervised) run; export a stage-2 run "
                           f"(runs/stage2-<hash>)")
    out = Path(out) if out else run.run_dir / "export"
    _check_out(out)
    if eval_images is not None and eval_images < 1:
        raise ValueError(f"--eval-images must be at least 1, got {eval_images}")
    if latency_repeats < 1:
        raise ValueError(f"--latency-repeats must be at least 1, got {latency_repeats}")
    images = run_images(run, data_root)
    test_samples = images.target_test.samples
    if eval_images and eval_images < len(test_samples):  # a random subset: the split is ordered by class
        test_samples = _subset(test_samples, eval_images, run.config.split_seed)
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
                            latency_batches, inductor, opset)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    card["directory"] = str(out)
    return card


def _export_into(tmp: Path, run: FinishedRun, module: nn.Module, images: RunImages, test_samples, calib, transform,
                 size: int, latency_repeats: int, latency_batches: tuple[int, ...], inductor: bool, opset: int) -> dict:
    started = time.time()
    split = images.target_test
    # 1. ONNX, checked on the target-test images
    log.info("exporting ONNX (opset %d)", opset)
    onnx_files = export_onnx(module, tmp / ONNX_FILE, size, opset)
    session = _onnx_session(tmp / ONNX_FILE)
    fp32_logits, onnx_logits, labels = [], [], []
    with torch.no_grad():
        for batch, y in _batches(split, test_samples, transform, EVAL_BATCH):
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
    log.info("quantising to INT8 (PT2E, X86InductorQuantizer), calibrating on %d source-train images", len(calib))
    qmodel = quantize_int8(module, (b for b, _ in _batches(images.source_train, calib, transform, EVAL_BATCH)), size)
    layers = quantized_layers(qmodel)
    save_int8(qmodel, tmp / INT8_FILE, size)
    int8 = load_int8(tmp / INT8_FILE)
    first = next(_batches(split, test_samples[:EVAL_BATCH], transform, EVAL_BATCH))[0]
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
    with _inductor_freezing() if inductor else contextlib.nullcontext(), torch.no_grad():
        int8_fn = _compiled(int8, "INT8") if inductor else int8
        int8_logits = []
        for batch, _ in _batches(split, test_samples, transform, EVAL_BATCH):
            int8_logits.append((_padded(int8_fn, batch, EVAL_BATCH) if inductor else int8_fn(batch)).numpy())
        if inductor and latency_batches:
            latency = _latency(module, int8, first, latency_batches, latency_repeats)
    q8 = np.concatenate(int8_logits)
    fp32_acc, int8_acc = _accuracy(fp32.argmax(1), labels), _accuracy(q8.argmax(1), labels)
    scale = float(np.abs(fp32).max())
    int8_check = {
        "flow": "PT2E: torch.export + torchao prepare_pt2e/convert_pt2e, X86InductorQuantizer (static, "
                "per-channel weights)",
        "calibration": {"split": "source_train", "images": len(calib), "dataset": run.config.source},
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


def _latency(fp32_module: nn.Module, int8: nn.Module, sample: torch.Tensor, batches: tuple[int, ...],
             repeats: int) -> dict:
    """CPU latency of FP32 (eager and compiled) and INT8 (compiled) at each batch size, and the speed-ups.

    Speed-ups are ratios of medians; the fastest call is kept as well because on a shared machine it is
    the better estimate of the uncontended latency, and the load average says how shared it was."""
    out: dict = {"unit": "ms per batch", "repeats": repeats, "threads": torch.get_num_threads(),
                 "cpu": _cpu_name(), "batches": {}}
    for n in batches:
        images = sample.repeat((n + len(sample) - 1) // len(sample), 1, 1, 1)[:n].contiguous()
        fns = {"fp32_eager": fp32_module, "fp32_compiled": _compiled(fp32_module, "FP32"),
               "int8_compiled": _compiled(int8, "INT8")}
        entry: dict = measure_latency(fns, images, repeats)
        for stat in ("median", "min"):
            suffix = "" if stat == "median" else "_min"
            entry[f"speedup_int8_vs_fp32_compiled{suffix}"] = round(
                entry["fp32_compiled"][stat] / entry["int8_compiled"][stat], 3)
            entry[f"speedup_int8_vs_fp32_eager{suffix}"] = round(
                entry["fp32_eager"][stat] / entry["int8_compiled"][stat], 3)
        entry["load_average_1min"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
        out["batches"][str(n)] = entry
        log.info("latency at batch %d: %s", n, entry)
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} logical CPUs"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs"


def model_card(run: FinishedRun, checks: dict, files: dict) -> dict:
    """What a user of the exported files needs: input, output, provenance, metrics, checks, versions."""
    cfg, rec = run.config, run.record
    tt = rec.get("target_test") or {}
    card = {
        "model": {"backbone": cfg.backbone, "weights": cfg.weights, "bottleneck_dim": cfg.bottleneck_dim,
                  "num_classes": len(run.classes)},
        "classes": list(run.classes),
        "input": {"name": "image", "shape": ["batch", 3, run.img_size, run.img_size], "dtype": "float32",
                  "layout": "NCHW, RGB", "img_size": run.img_size,
                  "preprocessing": f"resize the shorter side, centre-crop {run.img_size} px, scale to [0, 1], "
                                   f"then (x - mean) / std per channel (the run's evaluation transform)",
                  "mean": run.mean, "std": run.std},
        "output": {"name": "logits", "shape": ["batch", len(run.classes)],
                   "meaning": "unnormalised class scores in the order of classes; softmax for probabilities"},
        "data": {"source": cfg.source, "target": cfg.target, "stage1": cfg.stage1 if cfg.stages == 2 else None,
                 "stages": cfg.stages, "class_map": cfg.class_map or "built-in",
                 "split_sizes": rec.get("split_sizes")},
        "training": {"method": cfg.method, "cls_loss": cfg.cls_loss, "strategy": cfg.strategy, "seed": cfg.seed,
                     "selection": rec.get("selection", cfg.selection), "selected_epoch": rec.get("selected_epoch"),
                     "epochs_run": len(rec.get("epochs") or []), "prior": cfg.prior or None},
        "metrics": {"target_test_accuracy": tt.get("accuracy"), "target_test_macro_f1": tt.get("macro_f1"),
                    "target_test_images": tt.get("n"),
                    "source_val_accuracy": (rec.get("source_val") or {}).get("accuracy")},
        "run": {"directory": str(run.run_dir), "config_hash": rec.get("config_hash"),
                "git_commit": rec.get("git_commit"), "finished_at": rec.get("finished_at")},
        "checks": checks,
        "versions": _versions(),
        "files": files,
        "how_to_load": {
            ONNX_FILE: "onnxruntime.InferenceSession('model.onnx').run(['logits'], {'image': x})",
            INT8_FILE: "import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer; "
                       "m = torch.export.load('model_int8.pt2').module(); torch.compile(m) under "
                       "torch._inductor.config.patch(freezing=True) for INT8 kernels "
                       "(or da.deploy.export.load_int8)"},
    }
    if run.prior and "estimate" in run.prior:
        card["target_prior_estimate"] = run.prior["estimate"]
    return card
