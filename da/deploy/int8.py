"""The INT8 format of an export (``model_int8.pt2``).

    model.onnx        FP32, input ``image`` (N, 3, S, S) normalised, output ``logits`` (N, C); N is dynamic
    model_int8.pt2    INT8, a torch.export program (load it with :func:`load_int8`)
    checks.json       the checks and measurements below
    model_card.json   classes, input size, normalisation, datasets, method, the run's metrics, the checks,
                      versions and the sha256 of every file above
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from da.deploy.errors import ExportCheckFailed, first_line

log = logging.getLogger(__name__)

INT8_FILE = "model_int8.pt2"

# --int8-reduce-range: "auto" quantizes activations to 7 bits where this CPU lacks VNNI, else to 8 bits
REDUCE_RANGE_CHOICES = ("auto", "on", "off")


def cpu_has_vnni() -> bool:
    """Whether this CPU has an INT8 dot-product instruction (AVX512-VNNI, AVX-VNNI or AMX).

    Without one, oneDNN's INT8 convolutions add pairs of u8 x s8 products in int16 (``vpmaddubsw``), which
    saturates for activations that use all 8 bits, where 7-bit ones do not (measured by experiments/bench_int8.py,
    results/benchmarks/int8_activation_bits.txt).  Unknown (an older torch) counts as absent."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is None:
        return False
    caps = capabilities()
    return any(caps.get(flag, False) for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


def resolve_reduce_range(choice: str) -> bool:
    """``--int8-reduce-range``: "on" and "off" as given; "auto" is on exactly where :func:`cpu_has_vnni` is
    false (the x86 quantizer's own advice for CPUs without VNNI)."""
    if choice not in REDUCE_RANGE_CHOICES:
        raise ValueError(f"--int8-reduce-range must be one of {', '.join(REDUCE_RANGE_CHOICES)}, got {choice!r}")
    return not cpu_has_vnni() if choice == "auto" else choice == "on"


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


def quantize_int8(module: nn.Module, calibration: Iterator[torch.Tensor], img_size: int,
                  reduce_range: bool = False) -> torch.fx.GraphModule:
    """PT2E post-training static quantization of ``module`` (images -> logits), calibrated on ``calibration``;
    ``reduce_range`` quantizes activations to 7 bits (0-127) instead of 8 (see :func:`cpu_has_vnni`)."""
    prepare_pt2e, convert_pt2e, xiq = _torchao_x86()
    example = torch.zeros(2, 3, img_size, img_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchao's deprecation notices about torch internals, not actionable here
        try:
            graph = torch.export.export(
                module, (example,), dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1, max=65536)}}).module()
        except Exception as err:  # torch.export raises many types for code it cannot capture
            raise ExportCheckFailed(f"torch.export cannot capture the model for INT8 quantization "
                                    f"({type(err).__name__}: {first_line(err)})") from err
        config = xiq.get_default_x86_inductor_quantization_config(reduce_range=reduce_range)
        quantizer = xiq.X86InductorQuantizer().set_global(config)
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
