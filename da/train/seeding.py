"""Seeds derived from names, so that every random stream is a pure function of (seed, what, when)."""

from __future__ import annotations

import hashlib
import os
import random

import numpy as np
import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any printable parts; the same on every machine and Python run."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    """Seed the global generators once at the start of a run (never inside a dataset)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def generator(*parts: object) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


def set_deterministic(on: bool) -> None:
    """Deterministic algorithms and cuDNN settings (``--deterministic``); off restores torch's defaults.

    cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG`` for deterministic matmuls; it is read when CUDA starts, so it is
    set here (when the user has not) before any CUDA work of the run.
    """
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = False if on else torch.backends.cudnn.benchmark
