"""Frozen-prefix cache: a frozen prefix of the network is run once per image and view, not every step.

Where a strategy freezes the first stages (``linear``, ``partial:K``), their output is a fixed function
of the input image.  It is computed once per (images, prefix weights, input size, transform, view) and
stored on disk in float16; training then runs only the trainable stages.  The key hashes all of those,
so a change of any of them computes a new cache rather than reusing a stale one.

Each cache has a JSON index beside it (the images and the rest of its key).  A split whose images are all
in an existing cache with the same prefix, transform, views and view seed is sliced from it instead of
recomputed: stage 2's source splits are subsets of stage 1's, and each image's views are seeded by its
path, so the slice equals a fresh computation (bit for bit on the AID stage-1/stage-2 caches, measured).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from da.data.domains import Split
from da.train import checkpoint
from da.train.batches import SeededImages
from da.utils.io import atomic_write_json, exclusive_lock

log = logging.getLogger(__name__)


def weights_digest(modules: list[torch.nn.Module]) -> str:
    h = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _payload(split: Split, prefix_digest: str, transform_desc: str, views: int, view_seed: int) -> dict:
    return {"dataset": split.dataset, "images": [rel for rel, _ in split.samples], "prefix": prefix_digest,
            "transform": transform_desc, "views": views, "view_seed": view_seed, "format": 1}


def cache_key(split: Split, prefix_digest: str, transform_desc: str, views: int, view_seed: int) -> str:
    payload = _payload(split, prefix_digest, transform_desc, views, view_seed)
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
                   prefix_digest: str | None = None) -> tuple[torch.Tensor, bool]:
    """(N, views, C, H, W) float16 outputs of ``model.stages[:prefix_len]``; True when read from disk."""
    digest = prefix_digest or weights_digest(list(model.stages[:prefix_len]))
    payload = _payload(split, digest, repr(transform), views, view_seed)
    key = cache_key(split, digest, repr(transform), views, view_seed)
    path = Path(cache_dir) / f"{_safe_name(split.dataset)}-{key}.pt"
    feats = _read(path)
    if feats is not None:
        return feats, True
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
        feats = _compute(model, prefix_len, split, transform, views, view_seed, device, batch_size, num_workers)
        _store(path, feats, key, payload)
        log.info("cached prefix outputs of %d %s images x %d views at %s (%.0f MB)", feats.shape[0], split.dataset,
                 views, path, feats.numel() * 2 / 1e6)
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


def _compute(model, prefix_len, split, transform, views, view_seed, device, batch_size, num_workers) -> torch.Tensor:
    was_training = model.training
    model.eval()
    chunks = []
    data = SeededImages(split, transform, view_seed)
    for v in range(views):
        data.epoch_key = ("view", v)
        loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        out = [model.prefix(x.to(device), prefix_len).to("cpu", torch.float16) for x, _ in loader]
        chunks.append(torch.cat(out))
    model.train(was_training)
    return torch.stack(chunks, dim=1).contiguous()
