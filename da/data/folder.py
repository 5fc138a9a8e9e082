"""Scan a dataset folder into (relative path, class) samples, skipping unreadable files, and load them."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from da.data.registry import DatasetSpec, missing_dataset_message
from da.utils.io import atomic_write_text

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


MAX_IMAGE_SIDE = 8192  # px; scene images are far smaller, and a larger one would hold a loader worker's memory
# modes load_rgb turns into RGB faithfully; 16-bit greyscale is rescaled to 8 bits there
SUPPORTED_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I;16", "I;16L", "I;16B"}


def check_image(path: Path) -> str | None:
    """Why ``path`` cannot be used as an image, or None when it decodes completely."""
    try:
        if path.stat().st_size == 0:
            return "zero-byte file"
        with Image.open(path) as img:
            if max(img.size) > MAX_IMAGE_SIDE:
                return f"{img.size[0]}x{img.size[1]} px, larger than the {MAX_IMAGE_SIDE} px limit (MAX_IMAGE_SIDE)"
            if img.mode not in SUPPORTED_MODES:
                return f"pixel mode {img.mode!r} is not supported (supported: {', '.join(sorted(SUPPORTED_MODES))})"
            img.load()  # a full decode: truncated JPEGs only fail here
    except Exception as err:  # PIL raises several types for non-images and broken files
        return f"{type(err).__name__}: {err}"
    return None


def _name_problem(name: str) -> str | None:
    """Why a file name cannot travel through manifests and records (UTF-8 text), or None."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return f"file name is not valid UTF-8 (bytes {os.fsencode(name)!r}); rename the file"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return f"file name {ascii(name)} holds a control character (a newline, ...); rename the file"
    return None


def scan(spec: DatasetSpec, root: str | os.PathLike, classes: list[str] | None = None,
         workers: int = 8) -> ScanResult:
    """List and verify the images of ``spec`` under ``root`` (only ``classes`` when given).

    Each file is decoded completely once; files verified before with the same size and modification time
    are not decoded again (remembered outside the data folder, see ``_verified_memo_path``).

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

    memo_path = _verified_memo_path(folder)
    memo = _read_memo(memo_path)
    stats = {rel: _stat(folder / rel) for rel, _ in candidates}

    def why(item: tuple[str, str]) -> str | None:
        rel = item[0]
        problem = _name_problem(rel)
        if problem or (rel in memo and memo[rel] == stats[rel]):  # verified before, unchanged since
            return problem
        return check_image(folder / rel)

    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decoding releases the GIL
        reasons = list(pool.map(why, candidates))
    fresh = {rel: stats[rel] for (rel, _), r in zip(candidates, reasons) if r is None}
    if fresh != {k: v for k, v in memo.items() if k in fresh} or len(memo) != len(fresh):
        _write_memo(memo_path, fresh)
    samples = [item for item, why in zip(candidates, reasons) if why is None]
    skipped = [(item[0], why) for item, why in zip(candidates, reasons) if why is not None]
    if skipped:
        listing = "; ".join(f"{ascii(p)[1:-1]} ({why})" for p, why in skipped[:20])
        more = f" and {len(skipped) - 20} more" if len(skipped) > 20 else ""
        warnings.warn(f"dataset {spec.name}: skipped {len(skipped)} unreadable file(s) under {folder}: {listing}{more}",
                      stacklevel=2)
    empty = [c for c in wanted if not any(cls == c for _, cls in samples)]
    if empty:
        raise ValueError(f"dataset {spec.name}: class folder(s) {', '.join(str(folder / c) for c in empty)} "
                         f"hold no readable image")
    return ScanResult(spec=spec, folder=folder, samples=samples, skipped=skipped)


# ------------------------------------------------------------------ verified files, remembered between runs
def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _verified_memo_path(folder: Path) -> Path:
    """Where the files of ``folder`` that decoded completely are remembered, by (size, mtime): outside the
    data (which may be read-only), under DA_CACHE_DIR, else $XDG_CACHE_HOME/da or ~/.cache/da."""
    base = os.environ.get("DA_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "da"
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    return Path(base) / "verified" / f"{key}.json"


def _read_memo(path: Path) -> dict[str, list[int]]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # none yet, or damaged: verify everything again


def _write_memo(path: Path, memo: dict[str, list[int]]) -> None:
    try:
        atomic_write_text(path, json.dumps(memo, sort_keys=True))
    except OSError as err:  # a read-only home only costs the speed-up
        log.info("could not remember verified images at %s (%s)", path, err)


def load_rgb(path: Path) -> Image.Image:
    """The image as 8-bit RGB.  16-bit greyscale keeps its top 8 bits (PIL's own conversion clips every value
    above 255 to white)."""
    with Image.open(path) as img:
        if img.mode.startswith("I;16"):
            return Image.fromarray((np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8)).convert("RGB")
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
