"""The ONNX format of an export (``model.onnx``).

``export_run(run_dir)`` writes, into ``<run_dir>/export/`` (or ``out``)::
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from da.deploy.errors import ExportCheckFailed, first_line

ONNX_FILE = "model.onnx"
ONNX_OPSET = 18
ONNX_TOLERANCE = 1e-3  # largest absolute logit difference onnxruntime vs PyTorch that passes
# protobuf cannot hold a file over 2 GiB: larger models keep their weights in model.onnx.data beside it
ONNX_SINGLE_FILE_MAX_BYTES = 1_800_000_000


def export_onnx(module: nn.Module, path: Path, img_size: int, opset: int = ONNX_OPSET) -> list[Path]:
    """Write ``module`` (images -> logits) to ``path`` with a dynamic batch axis; returns the files written."""
    import onnx

    example = torch.zeros(2, 3, img_size, img_size)  # batch 2: torch.export specialises a size of 1
    batch = torch.export.Dim("batch", min=1, max=65536)
    external = sum(p.numel() * p.element_size() for p in module.parameters()) > ONNX_SINGLE_FILE_MAX_BYTES
    # the exporter prints its progress on stdout and logs every graph rewrite; the CLI prints its own summary
    with contextlib.redirect_stdout(io.StringIO()), quiet_loggers("onnx_ir", "onnxscript"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (example,), str(path), input_names=["image"], output_names=["logits"],
                              opset_version=opset, dynamo=True, external_data=external,
                              dynamic_shapes={"image": {0: batch}}, verbose=False)
        except Exception as err:  # torch.export and the ONNX translation raise many types
            raise ExportCheckFailed(f"torch.onnx.export failed ({type(err).__name__}: {first_line(err)}); "
                                    f"try another --opset, or report it with the backbone and the versions of "
                                    f"torch and onnxscript") from err
    onnx.checker.check_model(str(path))  # by path: also works when the weights are in an external file
    return [path] + sorted(path.parent.glob(path.name + ".data"))


@contextlib.contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def onnx_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the same CPU share as the PyTorch side
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
