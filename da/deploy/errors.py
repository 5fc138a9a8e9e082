"""What goes wrong in an export, said once for every format."""

from __future__ import annotations


class ExportCheckFailed(RuntimeError):
    """An exported model does not match the PyTorch model (or cannot run); nothing was written."""


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "no message"
