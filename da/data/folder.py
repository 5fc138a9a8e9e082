"""Scan a dataset folder into (relative path, class) samples, skipping unreadable files, and load them."""

from __future__ import annotations

import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from da.data.registry import DatasetSpec, missing_dataset_message

log = logging.getLogger(__name__)


@dataclass
class ScanResult:
    """All readable images of a dataset: ``samples`` are (path relative to ``folder``, class name)."""

    spec: DatasetSpec
    folder: Path
    samples: list[tuple[str, str]]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)

    def count_by_class(self) -> dict[str, int]:
        counts = {c: 0 for c in self.spec.classes}
        for _, cls in self.samples:
            counts[cls] += 1
        return counts


def check_image(path: Path) -> str | None:
    """Why ``path`` cannot be used as an image, or None when it decodes completely."""
    try:
        if path.stat().st_size == 0:
            return "zero-byte file"
        with Image.open(path) as img:
            img.load()  # a full decode: truncated JPEGs only fail here
    except Exception as err:  # PIL raises several types for non-images and broken files
        return f"{type(err).__name__}: {err}"
    return None


def scan(spec: DatasetSpec, root: str | os.PathLike, classes: list[str] | None = None,
         workers: int = 8) -> ScanResult:
    """List and verify the images of ``spec`` under ``root`` (only ``classes`` when given).

    Unreadable files are skipped, counted and reported in one warning, so a training run never meets
    them mid-epoch.  A missing dataset folder, a missing or empty class folder is an error.
    """
    folder = spec.folder(root) if not Path(spec.image_dir).is_absolute() else Path(spec.image_dir)
    if not folder.is_dir():
        raise FileNotFoundError(missing_dataset_message(spec, root))
    wanted = list(spec.classes) if classes is None else list(classes)
    missing = [c for c in wanted if not (folder / c).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"dataset {spec.name}: class folder(s) {', '.join(missing)} missing under {folder}; "
            f"the official layout is {spec.layout()}")
    candidates: list[tuple[str, str]] = []
    for cls in wanted:
        files = sorted(p for p in (folder / cls).iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise ValueError(f"dataset {spec.name}: class folder {folder / cls} is empty; "
                             f"put its images there or remove the class from the class map")
        candidates += [(f"{cls}/{p.name}", cls) for p in files]
    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decoding releases the GIL
        reasons = list(pool.map(lambda item: check_image(folder / item[0]), candidates))
    samples = [item for item, why in zip(candidates, reasons) if why is None]
    skipped = [(item[0], why) for item, why in zip(candidates, reasons) if why is not None]
    if skipped:
        listing = "; ".join(f"{p} ({why})" for p, why in skipped[:20])
        more = f" and {len(skipped) - 20} more" if len(skipped) > 20 else ""
        warnings.warn(f"dataset {spec.name}: skipped {len(skipped)} unreadable file(s) under {folder}: {listing}{more}",
                      stacklevel=2)
    empty = [c for c in wanted if not any(cls == c for _, cls in samples)]
    if empty:
        raise ValueError(f"dataset {spec.name}: class folder(s) {', '.join(str(folder / c) for c in empty)} "
                         f"hold no readable image")
    return ScanResult(spec=spec, folder=folder, samples=samples, skipped=skipped)


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


class ImageListDataset(Dataset):
    """Images listed as (relative path, integer label) under ``folder``; yields (image, label, index)."""

    def __init__(self, folder: str | os.PathLike, samples: list[tuple[str, int]], transform=None):
        self.folder = Path(folder)
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        rel, label = self.samples[index]
        img = load_rgb(self.folder / rel)
        if self.transform is not None:
            img = self.transform(img)
        return img, label, index

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.samples]
