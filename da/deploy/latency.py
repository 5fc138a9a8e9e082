"""CPU latency of an export's models: Inductor-compiled FP32 and INT8 and eager FP32, alternating in one loop
so that load from other processes affects each alike; the median and the fastest call."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import statistics
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from da.deploy.errors import ExportCheckFailed, first_line
from da.utils.cuda_home_notice import import_cpp_extension_quietly

log = logging.getLogger(__name__)


@contextlib.contextmanager
def inductor_freezing() -> Iterator[None]:
    # freezing folds the weights into constants, which is what lets Inductor prepack INT8 weights for oneDNN
    import torch._inductor.config as inductor_config

    with inductor_config.patch(freezing=True), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def compiled(module: nn.Module, what: str) -> Callable[[torch.Tensor], torch.Tensor]:
    import_cpp_extension_quietly()  # a CPU compile: torch's CUDA_HOME notice would say nothing about it
    compiled = torch.compile(module, dynamic=False)

    def call(images: torch.Tensor) -> torch.Tensor:
        try:
            return compiled(images)
        except Exception as err:  # Inductor raises many types (no C++ compiler, a failed lowering)
            raise ExportCheckFailed(f"torch.compile (Inductor) failed on the {what} model ({type(err).__name__}: "
                                    f"{first_line(err)}); INT8 kernels on the CPU need it and a C++ compiler "
                                    f"(g++) on the PATH") from err
    return call


def padded(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch: int) -> torch.Tensor:
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


def latency_table(fp32_module: nn.Module, int8: nn.Module, sample: torch.Tensor, batches: tuple[int, ...],
             repeats: int) -> dict:
    """CPU latency of FP32 (eager and compiled) and INT8 (compiled) at each batch size, and the speed-ups.

    Speed-ups are ratios of medians; the fastest call is kept as well because on a shared machine it is
    the better estimate of the uncontended latency, and the load average says how shared it was."""
    out: dict = {"unit": "ms per batch", "repeats": repeats, "threads": torch.get_num_threads(),
                 "cpu": cpu_name(), "batches": {}}
    for n in batches:
        images = sample.repeat((n + len(sample) - 1) // len(sample), 1, 1, 1)[:n].contiguous()
        fns = {"fp32_eager": fp32_module, "fp32_compiled": compiled(fp32_module, "FP32"),
               "int8_compiled": compiled(int8, "INT8")}
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


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} logical CPUs"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs"
