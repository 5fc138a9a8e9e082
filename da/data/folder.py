"""Scan a dataset folder into (relative path, class) samples, skipping unreadable files, and load them."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections import Counter
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
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # relative path -> (width, height)
    files_in_class_folders: int | None = None  # every file under the official class folders found

    def count_by_class(self) -> dict[str, int]:
        counts = {c: 0 for c in self.spec.classes}
        for _, cls in self.samples:
            counts[cls] += 1
        return counts

    def summary(self) -> dict:
        """The data a run saw, for its record: images per class and the distribution of image sizes, next to
        what the registry knows of the official release (so a resized copy cannot pass for it)."""
        sizes = Counter(f"{w}x{h}" for w, h in (self.sizes[rel] for rel, _ in self.samples if rel in self.sizes))
        return {
            "dataset": self.spec.name,
            "images": len(self.samples),
            "images_per_class": {c: n for c, n in self.count_by_class().items() if n},
            "image_sizes": dict(sizes.most_common()),
            "skipped": len(self.skipped),
            "files_in_class_folders": self.files_in_class_folders,
            "official": {"images": self.spec.num_images, "image_size": self.spec.image_size},
            "differs_from_release": release_differences(self),
        }


MAX_IMAGE_SIDE = 8192  # px; scene images are far smaller, and a larger one would hold a loader worker's memory
# modes load_rgb turns into RGB faithfully; 16-bit greyscale is rescaled to 8 bits there
SUPPORTED_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I;16", "I;16L", "I;16B"}


def check_image(path: Path) -> str | None:
    """Why ``path`` cannot be used as an image, or None when it decodes completely."""
    return inspect_image(path)[0]


def inspect_image(path: Path) -> tuple[str | None, tuple[int, int] | None]:
    """(why ``path`` cannot be used as an image or None, its (width, height) when it decodes completely)."""
    try:
        if path.stat().st_size == 0:
            return "zero-byte file", None
        with Image.open(path) as img:
            if max(img.size) > MAX_IMAGE_SIDE:
                return f"{img.size[0]}x{img.size[1]} px, larger than the {MAX_IMAGE_SIDE} px limit (MAX_IMAGE_SIDE)", None
            if img.mode not in SUPPORTED_MODES:
                return f"pixel mode {img.mode!r} is not supported (supported: {', '.join(sorted(SUPPORTED_MODES))})", None
            img.load()  # a full decode: truncated JPEGs only fail here
            return None, img.size
    except Exception as err:  # PIL raises several types for non-images and broken files
        return f"{type(err).__name__}: {err}", None


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

    def inspect(item: tuple[str, str]) -> tuple[str | None, tuple[int, int] | None]:
        rel = item[0]
        problem = _name_problem(rel)
        if problem:
            return problem, None
        known = memo.get(rel)
        if isinstance(known, list) and len(known) == 4 and known[:2] == stats[rel]:  # verified before, unchanged since
            return None, (known[2], known[3])
        return inspect_image(folder / rel)

    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decoding releases the GIL
        results = list(pool.map(inspect, candidates))
    sizes = {rel: size for (rel, _), (why, size) in zip(candidates, results) if why is None}
    fresh = {rel: stats[rel] + list(size) for rel, size in sizes.items()}
    if fresh != {k: v for k, v in memo.items() if k in fresh} or len(memo) != len(fresh):
        _write_memo(memo_path, fresh)
    samples = [item for item, (why, _) in zip(candidates, results) if why is None]
    skipped = [(item[0], why) for item, (why, _) in zip(candidates, results) if why is not None]
    if skipped:
        listing = "; ".join(f"{ascii(p)[1:-1]} ({why})" for p, why in skipped[:20])
        more = f" and {len(skipped) - 20} more" if len(skipped) > 20 else ""
        warnings.warn(f"dataset {spec.name}: skipped {len(skipped)} unreadable file(s) under {folder}: {listing}{more}",
                      stacklevel=2)
    empty = [c for c in wanted if not any(cls == c for _, cls in samples)]
    if empty:
        raise ValueError(f"dataset {spec.name}: class folder(s) {', '.join(str(folder / c) for c in empty)} "
                         f"hold no readable image")
    found = ScanResult(spec=spec, folder=folder, samples=samples, skipped=skipped, sizes=sizes,
                       files_in_class_folders=_count_class_files(spec, folder))
    _compare_with_release(found)
    return found


class DatasetMismatchWarning(UserWarning):
    """A dataset on disk differs from the official release the registry describes."""


def _count_class_files(spec: DatasetSpec, folder: Path) -> int | None:
    """Files under every official class folder (a listing, no decoding), or None for ``folder:`` datasets."""
    if spec.num_images is None:
        return None
    return sum(1 for c in spec.classes if (folder / c).is_dir()
               for p in (folder / c).iterdir() if p.is_file() and not p.name.startswith("."))


def release_differences(found: ScanResult) -> list[str]:
    """How the files on disk differ from the official release: another image count or image size."""
    spec = found.spec
    problems = []
    if spec.num_images is not None and found.files_in_class_folders != spec.num_images:
        problems.append(f"{found.files_in_class_folders:,} files in its class folders, the official release has "
                        f"{spec.num_images:,} images")
    if spec.image_size is not None and found.sizes:
        (w, h), n = Counter(found.sizes.values()).most_common(1)[0]
        if (w, h) != (spec.image_size, spec.image_size):
            problems.append(f"its images are mostly {w}x{h} px ({n:,} of {len(found.sizes):,}), the official "
                            f"release's are {spec.image_size}x{spec.image_size} px")
    return problems


# (dataset, folder) pairs already warned about: a run scans a dataset once per stage, and each would
# otherwise print the same warning again (Python's own once-per-place rule forgets whenever any library
# touches the warning filters, and each call site is a place of its own)
_warned_folders: set[tuple[str, str]] = set()


def _compare_with_release(found: ScanResult) -> None:
    problems = release_differences(found)
    key = (found.spec.name, str(found.folder.resolve()))
    if problems and key not in _warned_folders:
        _warned_folders.add(key)
        warnings.warn(f"dataset {found.spec.name} under {found.folder} is not the official release: "
                      + "; ".join(problems) + ". Numbers from it are not comparable with published ones (the "
                      "record keeps what the run saw under 'data')", DatasetMismatchWarning, stacklevel=3)


# ------------------------------------------------------------------ verified files, remembered between runs
def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _verified_memo_path(folder: Path) -> Path:
    """Where the files of ``folder`` that decoded completely are remembered, by (file size, mtime), with their
    width and height: outside the
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
