"""Frozen-prefix cache: a frozen prefix of the network is run once per image and view, not every step.

Where a strategy freezes the first stages (``linear``, ``partial:K``), their output is a fixed function
of the input image.  It is computed once per (images, prefix weights, input size, transform, view) and
stored on disk in float16; training then runs only the trainable stages.  The key hashes all of those,
so a change of any of them computes a new cache rather than reusing a stale one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from da.data.domains import Split
from da.train import checkpoint
from da.train.batches import SeededImages

log = logging.getLogger(__name__)


def weights_digest(modules: list[torch.nn.Module]) -> str:
    h = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cache_key(split: Split, prefix_digest: str, transform_desc: str, views: int, view_seed: int) -> str:
    payload = {"dataset": split.dataset, "images": [rel for rel, _ in split.samples], "prefix": prefix_digest,
               "transform": transform_desc, "views": views, "view_seed": view_seed, "format": 1}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


@torch.no_grad()
def prefix_outputs(model, prefix_len: int, split: Split, transform, views: int, view_seed: int, cache_dir: Path,
                   device: torch.device, batch_size: int = 128, num_workers: int = 0,
                   prefix_digest: str | None = None) -> tuple[torch.Tensor, bool]:
    """(N, views, C, H, W) float16 outputs of ``model.stages[:prefix_len]``; True when read from disk."""
    digest = prefix_digest or weights_digest(list(model.stages[:prefix_len]))
    key = cache_key(split, digest, repr(transform), views, view_seed)
    path = Path(cache_dir) / f"{split.dataset}-{key}.pt"
    if path.exists():
        return checkpoint.load(path)["feats"], True
    path.parent.mkdir(parents=True, exist_ok=True)
    # Array tasks that start together need the same cache: one computes it, the others wait and read it.
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return checkpoint.load(path)["feats"], True
        return _compute(model, prefix_len, split, transform, views, view_seed, path, key, device, batch_size,
                        num_workers), False


def _compute(model, prefix_len, split, transform, views, view_seed, path, key, device, batch_size,
             num_workers) -> torch.Tensor:
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
    feats = torch.stack(chunks, dim=1).contiguous()
    checkpoint.save(path, {"feats": feats, "key": key})
    log.info("cached prefix outputs of %d %s images x %d views at %s (%.0f MB)", feats.shape[0], split.dataset,
             views, path, feats.numel() * 2 / 1e6)
    return feats
