"""What every benchmark table starts with (date, machine, versions, the command) and how it is written."""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from da.utils.io import atomic_write_text


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus() -> int:
    """CPUs this process may run on (a Slurm allocation's, not the node's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def header(title: str) -> list[str]:
    import timm
    import torchvision

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return [f"# {title}",
            f"# {time.strftime('%Y-%m-%d %H:%M')}, {cpu_name()}, {usable_cpus()} usable CPUs, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), torchvision {torchvision.__version__}, "
            f"timm {timm.__version__}, {device}",
            "# " + " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix()] + sys.argv[1:])]


def write_table(path: str | os.PathLike, lines: list[str]) -> str:
    text = "\n".join(lines) + "\n"
    print(text, end="")
    atomic_write_text(path, text)
    return text


def timed(fn, repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def run_peak_rss_mb(cache_root: str, data_root: str, flags: list[str]) -> float:
    """Peak RSS of one whole da-run (``flags``) in its own process, reading the caches under ``cache_root``, as
    its record gives it (VmHWM: the run's own, not this process's, which a child inherits through getrusage's
    maxrss until it execs)."""
    import json
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        Path(out, "cache").symlink_to(Path(cache_root, "cache").resolve())
        cmd = [sys.executable, "-m", "da.scripts.run", *flags, "--out", out, "--progress", "false"]
        if data_root:
            cmd += ["--data-root", data_root]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
        record = json.loads(Path(res.stdout.strip().splitlines()[-1]).read_text())
    return record["peak_memory_mb"]["rss"]
