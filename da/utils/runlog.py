"""Each run directory keeps its own log (``log.txt``), whether it runs under Slurm, in a terminal or in a test."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def run_log(path: str | os.PathLike, logger: str = "da") -> Iterator[logging.Handler]:
    """Append the ``da`` loggers' INFO and above to ``path`` for the ``with`` block (a resumed run continues
    its log). INFO reaches the file even when the application configured no logging."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(FORMAT))
    target = logging.getLogger(logger)
    level = target.level
    if target.getEffectiveLevel() > logging.INFO:
        target.setLevel(logging.INFO)
    target.addHandler(handler)
    try:
        yield handler
    finally:
        target.removeHandler(handler)
        target.setLevel(level)
        handler.close()


def file_only(handler: logging.Handler, logger: logging.Logger, level: int, msg: str, *args) -> None:
    """A line for the run's log file alone (``handler``, from ``run_log``): for what the console has already
    shown another way, such as a Python warning, so that the screen does not show it twice."""
    if logger.isEnabledFor(level):
        handler.handle(logger.makeRecord(logger.name, level, "(file only)", 0, msg, args, None))
