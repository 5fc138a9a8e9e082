"""Atomic file writes (a reader sees the old file or the new one, never half of one, and a signal that ends the
process waits until the write is over) and advisory locks."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# The signals that end or preempt a job: Slurm's (via submitit, whose handler checkpoints, requeues and exits
# with SystemExit from whatever line is running), a plain kill, Ctrl-C.
DEFERRED_SIGNALS = tuple(getattr(signal, name) for name in ("SIGUSR1", "SIGUSR2", "SIGTERM", "SIGINT")
                         if hasattr(signal, name))


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold the signals of DEFERRED_SIGNALS while the block runs, then hand each one that arrived to the
    handler that was in place (a write is never cut by an exception raised inside it: torch's zip writer, for
    one, turns that into a failed job).  Python handles signals in the main thread only: elsewhere, a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple[int, Any]] = []
    previous = {s: signal.getsignal(s) for s in DEFERRED_SIGNALS}
    for s in DEFERRED_SIGNALS:
        signal.signal(s, lambda signum, frame: caught.append((signum, frame)))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        for signum, frame in caught:
            handler = previous[signum]
            if callable(handler):
                handler(signum, frame)
            elif handler != signal.SIG_IGN:
                signal.raise_signal(signum)  # the default action, now that the file is whole


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "w") -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``; a
    signal that would end the process during the write is handled after it (:func:`signals_deferred`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with signals_deferred():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, mode) as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results on a shared file system must stay readable
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Standard JSON, atomically: a non-finite float (an AP of a class without test boxes, a score of nothing)
    is written as null, since ``NaN`` and ``Infinity`` are not JSON and other readers (jq, JavaScript, pandas'
    strict modes) refuse the whole file."""
    return atomic_write_text(path, json.dumps(finite_or_null(obj), indent=1, sort_keys=True, allow_nan=False) + "\n")


def finite_or_null(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float (numpy's included) replaced by None, containers rebuilt."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    return obj


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an advisory lock (``flock``) on ``path`` for the ``with`` block; the lock file says who holds it.

    A second holder blocks until the first leaves (or dies: the kernel releases the lock of a killed
    process, so a stale file never blocks); ``on_wait(holder)`` is called once before it blocks.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            if on_wait is not None:
                on_wait(f.read().strip() or "another process")
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
