"""Checkpoints written atomically, with every RNG state, loaded without running code (weights_only)."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from da.utils.io import atomic_write

log = logging.getLogger(__name__)


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state() -> list:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]  # plain types: weights_only loads them


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np_state[1].numpy().astype(np.uint32), *np_state[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class DamagedCheckpoint(RuntimeError):
    pass


def save(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write atomically; a full disk is reported with the path and the space left, not torch's internals."""
    try:
        return atomic_write(path, lambda f: torch.save(payload, f), mode="wb")
    except (OSError, RuntimeError) as err:
        free = shutil.disk_usage(Path(path).parent).free
        need = sum(t.numel() * t.element_size() for t in _tensors(payload))
        if getattr(err, "errno", None) != errno.ENOSPC and free > need + 16 * 2**20:
            raise  # not a full disk
        raise OSError(errno.ENOSPC, f"could not write {path}: {free / 2**20:.0f} MiB free on its file system, "
                                    f"about {need / 2**20:.0f} MiB needed ({type(err).__name__}: {err})") from err


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def load(path: str | os.PathLike) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------------------------------- a run's state
def _digest(tensors: dict[str, torch.Tensor]) -> str:

    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def frozen_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters that training does not update (``requires_grad`` off): what the run was built
    with, rebuilt identically on resume, so a checkpoint need not hold them."""
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    return {k: v for k, v in model.state_dict().items() if k in frozen}


def save_training(path: str | os.PathLike, run, state, config_hash: str) -> Path:
    """Everything a resumed run needs to continue bit-identically: the model's trained parameters and every
    buffer, method (its own parameters and buffers), optimiser, scheduler, scaler, unfreezer, weight average,
    the run state and every RNG state.  Frozen parameters are left out (with ``lora:K:r`` the checkpoint holds
    the adapters, the head and the BatchNorm statistics): their digest is kept, and a resume checks it against
    the model it rebuilt."""
    frozen = frozen_weights(run.model)
    return save(path, {
        "model": {k: v for k, v in run.model.state_dict().items() if k not in frozen},
        "frozen_digest": _digest(frozen), "method": run.method.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
        "unfreezer": run.unfreezer.state_dict() if run.unfreezer else None,
        # --weight-ema: the averaged weights, the frozen ones left out as the model's (equal in both)
        "weight_average": run.weight_average.state_dict(set(frozen)) if run.weight_average else None,
        "state": state.to_dict(), "rng": rng_state(), "config_hash": config_hash})


def read_checkpoint(path: str | os.PathLike, config_hash: str) -> dict[str, Any]:
    """A run's checkpoint (any task's) as a dict: :class:`DamagedCheckpoint` when it cannot be read (a
    truncated or foreign file), an error naming the folder to remove when it belongs to another config."""
    try:
        ckpt = load(path)
    except Exception as err:  # truncated or not a checkpoint: torch raises several types
        raise DamagedCheckpoint(f"{path} is damaged ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from err
    if ckpt["config_hash"] != config_hash:
        raise RuntimeError(f"{path} belongs to config {ckpt['config_hash']}, not {config_hash}; "
                           f"remove {Path(path).parent} to start over")
    return ckpt


def set_aside(path: Path, err: DamagedCheckpoint, who: str) -> None:
    """Keep a damaged checkpoint as ``*.damaged`` for a look, and say so: the run starts over from epoch 1."""
    log.warning("%s: %s; starting %s from epoch 1", who, err, path.parent)
    print(f"{who}: {err}; starting over from epoch 1 (kept as {path.with_suffix('.damaged').name})", flush=True)
    path.replace(path.with_suffix(".damaged"))


def restore_training(ckpt: dict[str, Any], run, folder: str | os.PathLike = "the run folder"):
    """Load a :func:`read_checkpoint` checkpoint into ``run``; return its :class:`~da.train.state.RunState`.
    ``folder`` (the run's) is named in the errors as what to remove to start over."""
    from da.train.state import RunState

    if "frozen_digest" in ckpt:  # frozen parameters left out: the rebuilt model must hold what was saved
        frozen = {k: v for k, v in run.model.state_dict().items() if k not in ckpt["model"]}
        if _digest(frozen) != ckpt["frozen_digest"]:
            raise RuntimeError("the frozen weights this run starts from are not those its checkpoint was trained "
                               f"with (were the initial weights replaced?); remove {folder} to start over")
        missing, unexpected = run.model.load_state_dict(ckpt["model"], strict=False)
        if unexpected or set(missing) != set(frozen):
            raise RuntimeError(f"the checkpoint does not fit the model (unexpected {unexpected[:3]}, missing "
                               f"{sorted(set(missing) - set(frozen))[:3]}); remove {folder} to start over")
    else:  # checkpoints written before frozen parameters were left out
        run.model.load_state_dict(ckpt["model"])
    run.method.load_state_dict(ckpt["method"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.scaler.load_state_dict(ckpt["scaler"])
    if run.unfreezer is not None:
        run.unfreezer.load_state_dict(ckpt["unfreezer"])
    if run.weight_average is not None:  # a copy of the rebuilt model: what both checkpoints left out is right
        run.weight_average.load_state_dict(ckpt["weight_average"], set(run.model.state_dict()) - set(ckpt["model"]))
    set_rng_state(ckpt["rng"])
    return RunState.from_dict(ckpt["state"])
