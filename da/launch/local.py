"""``--cluster local`` on a machine with GPUs, and the one-process-per-run rule for every profile.

submitit's local executor starts every job of an array at once and gives each the same
``CUDA_VISIBLE_DEVICES`` (none at all unless the profile asks for GPUs), so on a machine with several
GPUs the runs would pile onto one device.  Here each run gets one GPU of its own, pinned through
``CUDA_VISIBLE_DEVICES`` (so it sees it as ``cuda:0``), and a run starts only when a GPU is free.
Training is one process per run, so a profile asking for more tasks or nodes is refused.
"""

from __future__ import annotations

import logging
import os
import shlex
import time
from pathlib import Path
from typing import Any, Callable, Iterable

log = logging.getLogger(__name__)

# submitit's local executor stops a job after 2 minutes unless told otherwise; a run resumes from its
# checkpoint after a stop, but only a few times, so a real run needs a real limit
LOCAL_TIMEOUT_MIN = 7 * 24 * 60


def check_single_process(profile: dict[str, Any], where: str | Path) -> None:
    """Refuse a profile that asks for more than one process per run: training has no multi-process mode
    (it would run the same run twice, side by side, on the same run directory)."""
    for key in ("tasks_per_node", "nodes"):
        value = profile.get(key, 1)
        if value != 1 or isinstance(value, bool):
            raise ValueError(f"profile {where}: {key}: {value!r} asks for several processes per run, but "
                             f"multi-process training is not supported yet; set tasks_per_node: 1 and nodes: 1 "
                             f"in profile {where} (one run uses one GPU; runs go in parallel as array tasks)")


def local_gpus() -> list[str]:
    """The GPUs local jobs may be pinned to: the entries of CUDA_VISIBLE_DEVICES when it is set (indices,
    or UUIDs such as GPU-8f3e...; CUDA ignores everything from the first invalid entry on, and so do we),
    else one index per GPU torch can see."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        gpus = []
        for entry in (e.strip() for e in env.split(",")):
            if not entry or entry.startswith("-"):
                break
            gpus.append(entry)
        return gpus
    try:
        import torch
        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no usable CUDA build: no GPUs
        return []


def pinned_parameters(params: dict[str, Any], gpu: str) -> dict[str, Any]:
    """submitit LocalExecutor parameters that give a job exactly ``gpu``: an index through its own
    ``visible_gpus``, anything else (a UUID, a MIG id) through a setup line, as ``visible_gpus`` takes ints."""
    out = {k: v for k, v in params.items() if k != "gpus_per_node"}
    if gpu.isdigit():
        out.update(gpus_per_node=1, visible_gpus=(int(gpu),))
    else:
        out.update(gpus_per_node=0, setup=[f"export CUDA_VISIBLE_DEVICES={shlex.quote(gpu)}"])
    return out


def map_one_per_gpu(folder: str | Path, params: dict[str, Any], gpus: list[str], fn: Callable,
                    *iterables: Iterable, poll_s: float = 2.0, executor_class=None) -> list:
    """``fn(*args)`` for each ``args`` of ``zip(*iterables)``, as local submitit jobs with one GPU each.

    At most one job runs on a GPU at a time: once every GPU is busy, the next job waits (polling every
    ``poll_s`` seconds) for one to finish.  Returns the jobs, in input order, once the last has started.
    """
    if not gpus:
        raise ValueError("map_one_per_gpu needs at least one GPU")
    if executor_class is None:
        import submitit
        executor_class = submitit.LocalExecutor
    free = list(gpus)
    running: list[tuple[str, Any]] = []
    jobs = []
    for args in zip(*iterables):
        while not free:
            for gpu, job in list(running):
                if job.done():
                    running.remove((gpu, job))
                    free.append(gpu)
            if not free:
                time.sleep(poll_s)
        gpu = free.pop(0)
        executor = executor_class(folder=folder)
        executor.update_parameters(**pinned_parameters(params, gpu))
        job = executor.submit(fn, *args)
        log.info("local job %s on GPU %s", job.job_id, gpu)
        running.append((gpu, job))
        jobs.append(job)
    return jobs
