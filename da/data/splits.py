"""Stratified, seeded splits that are the same on every machine, and their manifests.

Each class's files are sorted by relative path, then permuted by a numpy ``Generator`` seeded from
(seed, a stable hash of the dataset name and class): the result depends on nothing but those, not on
file-system order, Python's hash seed or the global RNG.  Because each class is split on its own, the
split of a subset of classes (the shared classes of stage 2) is the subset of the full split.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from pathlib import Path

import numpy as np

from da.utils.io import atomic_write_text


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def stratified_split(samples: list[tuple[str, str]], fractions: dict[str, float], seed: int,
                     key: str) -> dict[str, list[tuple[str, str]]]:
    """Split (relative path, class) samples into named parts with the given fractions per class.

    ``fractions`` must sum to 1; each part gets ``round(fraction * n)`` images of a class (the last part
    takes the rest), and every part with a positive fraction gets at least one image of a class that
    has enough images.
    """
    names = list(fractions)
    if not names or abs(sum(fractions.values()) - 1.0) > 1e-9 or any(f < 0 for f in fractions.values()):
        raise ValueError(f"split fractions {fractions} must be non-negative and sum to 1")
    by_class: dict[str, list[str]] = {}
    for rel, cls in samples:
        by_class.setdefault(cls, []).append(rel)
    parts: dict[str, list[tuple[str, str]]] = {n: [] for n in names}
    for cls in sorted(by_class):
        files = sorted(by_class[cls])
        rng = np.random.default_rng([seed, _stable_int(f"{key}/{cls}")])
        order = [files[i] for i in rng.permutation(len(files))]
        start = 0
        for j, name in enumerate(names):
            if j == len(names) - 1:
                count = len(order) - start
            else:
                count = int(round(fractions[name] * len(order)))
                if fractions[name] > 0 and count == 0 and len(order) - start > 1:
                    count = 1
                count = min(count, len(order) - start)
            parts[name] += [(rel, cls) for rel in order[start:start + count]]
            start += count
    return {n: sorted(p) for n, p in parts.items()}


def long_tailed_subset(samples: list[tuple[str, str]], class_order: list[str], imbalance: float, seed: int,
                       key: str) -> list[tuple[str, str]]:
    """Keep of the r-th class of ``class_order`` (r = 0 .. K-1) round(n * imbalance ** (-r / (K - 1))) of its
    n samples (at least one), a seeded random choice per class: a long-tailed prior whose largest and
    smallest shares differ by ``imbalance`` when every class has n samples."""
    if imbalance < 1:
        raise ValueError(f"imbalance must be >= 1, got {imbalance}")
    by_class: dict[str, list[str]] = {}
    for rel, cls in samples:
        by_class.setdefault(cls, []).append(rel)
    kept = []
    last = max(len(class_order) - 1, 1)
    for rank, cls in enumerate(class_order):
        files = sorted(by_class.get(cls, []))
        count = max(1, int(round(len(files) * imbalance ** (-rank / last)))) if files else 0
        rng = np.random.default_rng([seed, _stable_int(f"{key}/{cls}")])
        kept += [(files[i], cls) for i in sorted(rng.permutation(len(files))[:count])]
    return sorted(kept)


def per_class_subset(samples: list[tuple[str, str]], per_class: int, seed: int, key: str) -> list[tuple[str, str]]:
    """At most ``per_class`` samples of each class, a seeded random choice (0: all of them): the small,
    fixed subset a smoke run trains and caches, whatever the size of the dataset."""
    if per_class <= 0:
        return list(samples)
    by_class: dict[str, list[str]] = {}
    for rel, cls in samples:
        by_class.setdefault(cls, []).append(rel)
    kept = []
    for cls, files in by_class.items():
        files = sorted(files)
        rng = np.random.default_rng([seed, _stable_int(f"{key}/{cls}")])
        kept += [(files[i], cls) for i in sorted(rng.permutation(len(files))[:per_class])]
    return sorted(kept)


def manifest_text(rows: list[tuple[str, str, str]]) -> str:
    """CSV text of (split, relative path, class) rows, header included, in a fixed order."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["split", "path", "label"])
    writer.writerows(sorted(rows))
    return buf.getvalue()


def manifest_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write_manifest(path: str | os.PathLike, rows: list[tuple[str, str, str]]) -> str:
    """Write the manifest atomically; return its sha256."""
    text = manifest_text(rows)
    atomic_write_text(Path(path), text)
    return manifest_hash(text)


def read_manifest(path: str | os.PathLike) -> list[tuple[str, str, str]]:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != ["split", "path", "label"]:
            raise ValueError(f"manifest {path}: expected the header split,path,label, got {header}")
        return [tuple(row) for row in reader]
