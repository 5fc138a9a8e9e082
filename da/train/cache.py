"""Frozen-prefix cache: a frozen prefix of the network is run once per image and view, not every step.

Where a strategy freezes the first stages (``linear``, ``partial:K``), their output is a fixed function
of the input image.  It is computed once per (images, prefix weights, input size, transform, view) and
stored on disk in float16; training then runs only the trainable stages.  The key hashes all of those,
so a change of any of them computes a new cache rather than reusing a stale one.

Each cache has a JSON index beside it (the images and the rest of its key).  A split whose images are all
in an existing cache with the same prefix, transform, views and view seed is sliced from it instead of
recomputed: stage 2's source splits are subsets of stage 1's, and each image's views are seeded by its
path, so the slice equals a fresh computation (bit for bit on the AID stage-1/stage-2 caches, measured).

The prefix is inference only, so it runs as fast as the machine allows (:class:`PrefixRuntime`): in the
channels_last memory format, and compiled by ``torch.compile`` with inductor's freezing (weights are
constants: BatchNorm folded into the convolutions, weights pre-packed for oneDNN), on fixed-size batches
(the last one zero-padded) so that it compiles once.  On a 2-core CPU that is ~3x the eager fp32 prefix
(results/benchmarks/prefix.txt) for outputs that differ from eager in float rounding only; the runtime is
part of the cache key.  Where inductor cannot compile (no C++ compiler, no triton), the eager
channels_last prefix runs instead, with a warning, under its own key.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from da.data.domains import Split
from da.train import checkpoint
from da.train.batches import SeededImages
from da.utils.cuda_home_notice import import_cpp_extension_quietly
from da.utils.io import atomic_write_json, exclusive_lock

log = logging.getLogger(__name__)


def weights_digest(modules: list[torch.nn.Module]) -> str:
    h = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class PrefixRuntime:
    """How the frozen prefix is executed: memory format and whether inductor compiles it.  ``legacy``: the
    behaviour before this choice existed (eager, the model's own layout), whose caches keep their keys."""

    channels_last: bool = False
    compile: bool = False
    legacy: bool = True

    @property
    def name(self) -> str:
        return ("inductor" if self.compile else "eager") + ("+channels_last" if self.channels_last else "")


@functools.cache
def inductor_works(device_type: str) -> bool:
    """Whether ``torch.compile`` (inductor) can compile and run a small function on this device type."""
    if device_type == "cpu":  # inductor's C++ builder would import it and print torch's CUDA_HOME notice
        import_cpp_extension_quietly()
    try:
        fn = torch.compile(lambda t: torch.relu(t) * 2 + 1, dynamic=False)
        out = fn(torch.arange(-2.0, 6.0, device=device_type))
        return bool(out[-1].item() == 11.0)
    except Exception as err:  # inductor raises many kinds: no C++ compiler, no triton, a failed build
        log.warning("torch.compile does not work here (%s: %s); the frozen prefix runs eagerly",
                    type(err).__name__, str(err).splitlines()[0] if str(err) else "")
        return False


class FrozenPrefix:
    """``model.stages[:prefix_len]`` as an inference-only function of a batch, executed as ``runtime`` says.

    A deep copy is compiled, so the model itself is untouched.  Batches are zero-padded to ``batch_size``:
    one input shape means one compilation."""

    def __init__(self, model, prefix_len: int, runtime: PrefixRuntime, batch_size: int):
        self.runtime, self.batch_size = runtime, batch_size
        if runtime.legacy:
            self.fn = lambda x: model.prefix(x, prefix_len)
            return
        net = torch.nn.Sequential(*copy.deepcopy(list(model.stages[:prefix_len]))).eval().requires_grad_(False)
        if runtime.channels_last:
            net.to(memory_format=torch.channels_last)
        self.fn = torch.compile(net, dynamic=False) if runtime.compile else net

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        if self.runtime.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.runtime.compile and n < self.batch_size:
            x = torch.cat([x, x.new_zeros((self.batch_size - n, *x.shape[1:]))])
        if self.runtime.compile:
            import torch._inductor.config as inductor_config

            try:
                with inductor_config.patch(freezing=True):  # compilation happens on the first call
                    return self.fn(x)[:n]
            except Exception as err:
                raise RuntimeError(f"torch.compile failed on the frozen prefix ({type(err).__name__}: "
                                   f"{str(err).splitlines()[0] if str(err) else ''}); run with --compile-prefix false "
                                   f"to cache it eagerly") from err
        return self.fn(x)


_LAST_PREFIX: dict[tuple, FrozenPrefix] = {}


def frozen_prefix(model, prefix_len: int, runtime: PrefixRuntime, batch_size: int, digest: str) -> FrozenPrefix:
    """A :class:`FrozenPrefix`, reused while the prefix weights (``digest``) and runtime stay the same: every
    split of a stage, and every run of a process with the same prefix (a sweep task, the tests), compiles
    it once."""
    key = (digest, prefix_len, runtime, batch_size, str(next(model.parameters()).device))
    if runtime.legacy:
        return FrozenPrefix(model, prefix_len, runtime, batch_size)
    if key not in _LAST_PREFIX:
        _LAST_PREFIX.clear()  # one compiled prefix at a time: bounded memory
        _LAST_PREFIX[key] = FrozenPrefix(model, prefix_len, runtime, batch_size)
    return _LAST_PREFIX[key]


def _payload(split: Split, prefix_digest: str, transform_desc: str, views: int, view_seed: int,
             runtime: PrefixRuntime = PrefixRuntime()) -> dict:
    payload = {"dataset": split.dataset, "images": [rel for rel, _ in split.samples], "prefix": prefix_digest,
               "transform": transform_desc, "views": views, "view_seed": view_seed, "format": 1}
    if not runtime.legacy:  # earlier caches keep their keys
        payload["runtime"] = runtime.name
    return payload


def cache_key(split: Split, prefix_digest: str, transform_desc: str, views: int, view_seed: int,
              runtime: PrefixRuntime = PrefixRuntime()) -> str:
    payload = _payload(split, prefix_digest, transform_desc, views, view_seed, runtime)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def _safe_name(dataset: str) -> str:
    """A dataset name as one plain file-name component (``folder:../x`` must not leave the cache folder)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", dataset).lstrip(".") or "dataset"


def _from_superset(cache_dir: Path, payload: dict) -> tuple[torch.Tensor, Path] | None:
    """The rows of ``payload['images']`` from a cache that holds them all under the same key otherwise."""
    same = {k: v for k, v in payload.items() if k != "images"}
    for index_path in sorted(cache_dir.glob(f"{_safe_name(payload['dataset'])}-*.json")):
        try:
            other = json.loads(index_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a foreign or damaged file: compute instead
        if {k: v for k, v in other.items() if k != "images"} != same:
            continue
        row = {rel: i for i, rel in enumerate(other["images"])}
        if all(rel in row for rel in payload["images"]) and index_path.with_suffix(".pt").exists():
            feats = _read(index_path.with_suffix(".pt"))
            if feats is None:  # damaged: compute instead of slicing
                continue
            return feats[torch.tensor([row[rel] for rel in payload["images"]], dtype=torch.long)], index_path
    return None


@torch.no_grad()
def prefix_outputs(model, prefix_len: int, split: Split, transform, views: int, view_seed: int, cache_dir: Path,
                   device: torch.device, batch_size: int = 128, num_workers: int = 0,
                   prefix_digest: str | None = None,
                   runtime: PrefixRuntime = PrefixRuntime()) -> tuple[torch.Tensor, bool]:
    """(N, views, C, H, W) float16 outputs of ``model.stages[:prefix_len]``; True when read from disk."""
    digest = prefix_digest or weights_digest(list(model.stages[:prefix_len]))
    key = cache_key(split, digest, repr(transform), views, view_seed, runtime)
    path = Path(cache_dir) / f"{_safe_name(split.dataset)}-{key}.pt"
    feats = _read(path)
    if feats is not None:
        return feats, True
    if runtime.compile and not inductor_works(device.type):
        runtime = replace(runtime, compile=False)  # inductor_works has warned once
        return prefix_outputs(model, prefix_len, split, transform, views, view_seed, cache_dir, device, batch_size,
                              num_workers, digest, runtime)
    payload = _payload(split, digest, repr(transform), views, view_seed, runtime)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Array tasks that start together need the same cache: one computes it, the others wait and read it.
    with exclusive_lock(path.with_suffix(".lock")):
        feats = _read(path, repair=True)
        if feats is not None:
            return feats, True
        for stale in path.parent.glob(f".{path.stem}.*.tmp"):  # a killed writer's leftovers (we hold the lock)
            stale.unlink(missing_ok=True)
        sliced = _from_superset(path.parent, payload)
        if sliced is not None:
            feats, source = sliced
            _store(path, feats, key, payload)
            log.info("sliced the prefix outputs of %d %s images from %s", len(feats), split.dataset, source.name)
            return feats, True
        prefix = frozen_prefix(model, prefix_len, runtime, batch_size, digest)
        feats = _compute(model, prefix, split, transform, views, view_seed, device, batch_size, num_workers)
        _store(path, feats, key, payload)
        log.info("cached prefix outputs of %d %s images x %d views at %s (%.0f MB, %s)", feats.shape[0], split.dataset,
                 views, path, feats.numel() * 2 / 1e6, runtime.name)
        return feats, False


def _read(path: Path, repair: bool = False) -> torch.Tensor | None:
    """The cached tensor, or None when there is none; a damaged file (truncated, not a checkpoint) is
    removed when ``repair`` (the caller holds the lock), so that it is rebuilt."""
    if not path.exists():
        return None
    try:
        return checkpoint.load(path)["feats"]
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for a damaged file
        if not repair:
            return None
        log.warning("the cache file %s is damaged (%s: %s); rebuilding it", path, type(err).__name__, err)
        path.unlink(missing_ok=True)
        path.with_suffix(".json").unlink(missing_ok=True)
        return None


def _store(path: Path, feats: torch.Tensor, key: str, payload: dict) -> None:
    checkpoint.save(path, {"feats": feats, "key": key})
    atomic_write_json(path.with_suffix(".json"), payload)  # after the tensors: an index never points at nothing


def _compute(model, prefix: FrozenPrefix, split, transform, views, view_seed, device, batch_size,
             num_workers) -> torch.Tensor:
    was_training = model.training
    model.eval()
    chunks = []
    data = SeededImages(split, transform, view_seed)
    for v in range(views):
        data.epoch_key = ("view", v)
        loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        out = [prefix(x.to(device)).to("cpu", torch.float16, memory_format=torch.contiguous_format) for x, _ in loader]
        chunks.append(torch.cat(out))
    model.train(was_training)
    return torch.stack(chunks, dim=1).contiguous()
