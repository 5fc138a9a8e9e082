"""torch's "No CUDA runtime is found, using CUDA_HOME=..." notice, kept off runs that compile for the CPU.

``torch.utils.cpp_extension`` looks for a CUDA toolkit once, when it is first imported, and logs that notice
whenever it finds one (nvcc on PATH, /usr/local/cuda) but no usable GPU.  Inductor imports it to compile the
frozen prefix for the CPU, where CUDA_HOME plays no part, so every CPU run printed it.  Importing the module
first with that one message dropped keeps every other record of that logger, and every Python warning, as is.
"""

from __future__ import annotations

import logging
import sys

MODULE = "torch.utils.cpp_extension"
NOTICE = "No CUDA runtime is found"


class _DropCudaHomeNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(NOTICE)


def import_cpp_extension_quietly() -> None:
    """Import ``torch.utils.cpp_extension`` (once per process) without its CUDA_HOME notice."""
    if MODULE in sys.modules:
        return
    logger = logging.getLogger(MODULE)
    drop = _DropCudaHomeNotice()
    logger.addFilter(drop)  # only for the import: the notice is logged then, once, and never again
    try:
        import torch.utils.cpp_extension  # noqa: F401
    finally:
        logger.removeFilter(drop)
