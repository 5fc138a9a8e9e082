"""Classify a folder of images (any depth) with a finished run: one CSV row per image."""

from __future__ import annotations

import csv
import io
import os
import warnings
from pathlib import Path

import torch

from da.data.folder import check_image
from da.data.registry import IMAGE_EXTENSIONS
from da.deploy.load import ExportedModel, FinishedRun
from da.utils.io import atomic_write_text


def list_images(folder: str | os.PathLike) -> list[str]:
    """Image files under ``folder`` at any depth (by extension, hidden files skipped), as sorted relative paths."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist; give a folder of images (any depth)")
    found = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not found:
        raise ValueError(f"image folder {folder} holds no image ({', '.join(IMAGE_EXTENSIONS)}, any depth); "
                         f"point --images at the folder that holds them")
    return found


def predict_folder(run: FinishedRun | ExportedModel, folder: str | os.PathLike, batch_size: int = 64, device: str = "cpu",
                   prior_correction: bool = False, num_workers: int = 0,
                   progress: bool = True) -> tuple[list[dict], list[tuple[str, str]]]:
    """(one row per readable image: path, predicted class, class probabilities; the skipped (path, reason)).

    Unreadable images are skipped and listed in one warning, as in training.  With ``prior_correction`` the
    probabilities are the run's calibrated posteriors corrected to its target-prior estimate, and the raw
    prediction is kept beside the corrected one.
    """
    folder = Path(folder)
    paths = list_images(folder)
    reasons = [check_image(folder / p) for p in paths]
    skipped = [(p, why) for p, why in zip(paths, reasons) if why is not None]
    readable = [p for p, why in zip(paths, reasons) if why is None]
    if skipped:
        listing = "; ".join(f"{p} ({why})" for p, why in skipped[:20])
        warnings.warn(f"skipped {len(skipped)} unreadable image(s) under {folder}: {listing}", stacklevel=2)
    if not readable:
        raise ValueError(f"image folder {folder}: none of its {len(paths)} image file(s) is readable")
    logits = run.logits(folder, [(p, 0) for p in readable], batch_size, device, num_workers, progress)
    raw = logits.softmax(1)
    probs = run.prior_corrected(logits) if prior_correction else raw
    rows = []
    for i, path in enumerate(readable):
        row = {"path": path, "predicted": run.classes[int(probs[i].argmax())]}
        if prior_correction:
            row["predicted_uncorrected"] = run.classes[int(raw[i].argmax())]
        row.update({f"p_{c}": round(float(probs[i, k]), 6) for k, c in enumerate(run.classes)})
        rows.append(row)
    return rows, skipped


FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets run as a formula at the start of a cell


def spreadsheet_safe(value):
    """A text cell a spreadsheet would run as a formula (a file named ``=HYPERLINK(...).jpg``) with a leading
    apostrophe, which shows the text as text; numbers and other text unchanged."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_LEADS) else value


def write_csv(rows: list[dict], path: str | os.PathLike) -> Path:
    """The rows as CSV, written atomically (a reader never sees half a file); text cells that a spreadsheet
    would run as formulas are escaped (:func:`spreadsheet_safe`)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[spreadsheet_safe(k) for k in rows[0]], lineterminator="\n")
    writer.writeheader()
    writer.writerows([{spreadsheet_safe(k): spreadsheet_safe(v) for k, v in row.items()} for row in rows])
    return atomic_write_text(path, buf.getvalue())


def probabilities_tensor(rows: list[dict], classes: list[str]) -> torch.Tensor:
    """The probability columns of ``rows`` as an (N, C) tensor (tests, and readers of the CSV)."""
    return torch.tensor([[float(r[f"p_{c}"]) for c in classes] for r in rows])
