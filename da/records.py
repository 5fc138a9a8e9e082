"""Run records: one JSON per run, written atomically, then a done marker.

The record's top-level keys are a contract that tables and users rely on (``REQUIRED_KEYS``); a change
of its meaning bumps ``SCHEMA_VERSION``.  Version 2 adds, per epoch, ``scores`` (every label-free
validator of ``da.selection``) and, per run, ``selection`` as the validator's name; version 1 records
(selection on source-val accuracy, no scores) are still read.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from da import __version__
from da.rundir import DONE_FILE, RECORD_FILE
from da.utils.io import atomic_write_json, atomic_write_text

SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)
REQUIRED_KEYS = ("schema_version", "config", "config_hash", "seed", "git_commit", "stage", "epochs",
                 "selected_epoch", "target_test", "source_val", "oracle", "wall_time_s", "images_per_s")
# A detection run's record (da.detection.engine): val and test are per NMS threshold, history per epoch.
DETECTION_SCHEMA_VERSION = 1
DETECTION_REQUIRED_KEYS = ("schema_version", "kind", "config", "config_hash", "seed", "git_commit", "history",
                           "selected_epoch", "val", "test", "wall_time_s")
# kind -> (the schema versions this code reads, the keys every record of that kind has)
SCHEMAS = {"classification": (READABLE_SCHEMA_VERSIONS, REQUIRED_KEYS),
           "detection": ((DETECTION_SCHEMA_VERSION,), DETECTION_REQUIRED_KEYS)}


class RecordError(ValueError):
    pass


def git_commit() -> str:
    """The commit of the code that ran, with ``-dirty`` when it had uncommitted changes.

    Only when this package is the ``da/`` of a git checkout (run from the checkout or installed editable); an
    installed copy (site-packages, perhaps inside some other repository or a virtual environment inside this
    one) has no commit of its own, and says so with its version rather than name another tree's commit."""
    package = Path(__file__).resolve().parent
    repo = package.parent
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")}

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=10)

    try:
        top = git("rev-parse", "--show-toplevel")
        # the checkout's own root, and this very file tracked in it (not a copy under an ignored folder)
        if (top.returncode != 0 or Path(top.stdout.strip()).resolve() != repo
                or git("ls-files", "--error-unmatch", "--", f"{package.name}/records.py").returncode != 0):
            return f"unknown (installed da {__version__}, not run from a git checkout)"
        commit = git("rev-parse", "--verify", "-q", "HEAD")
        if commit.returncode != 0:
            return f"unknown (da {__version__}, a git checkout without commits)"
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.SubprocessError) as err:  # no git program, or it hung
        return f"unknown (da {__version__}, git failed: {type(err).__name__})"
    return commit.stdout.strip() + ("-dirty" if dirty else "")


def launch_info() -> dict[str, Any]:
    """Where the run executed: the Slurm job and array index when under Slurm."""
    env = os.environ
    return {
        "slurm_job_id": env.get("SLURM_JOB_ID"),
        "slurm_array_job_id": env.get("SLURM_ARRAY_JOB_ID"),
        "slurm_array_task_id": env.get("SLURM_ARRAY_TASK_ID"),
        "slurm_restart_count": int(env.get("SLURM_RESTART_COUNT", 0) or 0),
        "hostname": os.uname().nodename,
    }


def environment(device_type: str = "cpu") -> dict[str, Any]:
    """The software and hardware a run used: library versions, CUDA/cuDNN, the GPU, threads, determinism."""
    import platform
    from importlib import metadata

    import torch

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    cuda = device_type == "cuda" and torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        **{name: version(dist) for name, dist in (("torch", "torch"), ("torchvision", "torchvision"),
                                                   ("timm", "timm"), ("numpy", "numpy"), ("pillow", "pillow"),
                                                   ("da", "da"))},
        "cuda": torch.version.cuda,  # the CUDA torch was built with (None: a CPU build)
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }


def peak_memory_mb(device_type: str = "cpu") -> dict[str, float | None]:
    """The process's peak resident memory so far (Linux VmHWM, which, unlike getrusage's maxrss, starts
    afresh at exec and so is not the launching process's), and the peak CUDA memory allocated."""
    rss = None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                rss = round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:  # not Linux
        pass
    cuda = None
    if device_type == "cuda":
        import torch

        cuda = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return {"rss": rss, "cuda_allocated": cuda}


def summary(record: dict[str, Any]) -> str:
    """How a run went, in one line: the selected epoch and rule, target-test and source-val accuracy, time."""
    epochs = len(record["epochs"])
    text = (f"stage {record['stage']}: epoch {record['selected_epoch']} of {epochs} selected by "
            f"{record.get('selection', 'source_acc')}; source-val accuracy {100 * record['source_val']['accuracy']:.1f} %")
    if record.get("target_test"):
        text += f", target-test accuracy {100 * record['target_test']['accuracy']:.1f} %"
    return text + f" ({record['wall_time_s']:.0f} s)"


def is_done(run_dir: str | os.PathLike) -> bool:
    return (Path(run_dir) / DONE_FILE).exists() and (Path(run_dir) / RECORD_FILE).exists()


def write_record(run_dir: str | os.PathLike, record: dict[str, Any], kind: str = "classification") -> Path:
    """Write a run's record, then its done marker; a record that lacks a key of its kind is refused."""
    missing = [k for k in SCHEMAS[kind][1] if k not in record]
    if missing:
        raise RecordError(f"record for {run_dir} lacks {missing}")
    path = atomic_write_json(Path(run_dir) / RECORD_FILE, record)
    atomic_write_text(Path(run_dir) / DONE_FILE, record["config_hash"] + "\n")
    return path


def load_record(path: str | os.PathLike, kind: str = "classification") -> dict[str, Any]:
    """Read and check one record of ``kind``; the error names the file and what is wrong."""
    versions, required = SCHEMAS[kind]
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RecordError(f"run record {path}: unreadable ({err}); delete its run directory and rerun") from err
    if not isinstance(record, dict):
        raise RecordError(f"run record {path}: not a JSON object")
    if record.get("kind", "classification") != kind:
        raise RecordError(f"run record {path}: a {record.get('kind')} record where a {kind} record was expected")
    if record.get("schema_version") not in versions:
        raise RecordError(f"run record {path}: schema_version {record.get('schema_version')!r}, this code reads "
                          f"{versions}; rerun it with this version or use the matching code")
    missing = [k for k in required if k not in record]
    if missing:
        raise RecordError(f"run record {path}: incomplete, lacks {', '.join(missing)}")
    return record
