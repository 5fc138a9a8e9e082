"""The export folder, replaced as a whole and only where it is ours.

**ONNX.** ``torch.onnx.export`` with the torch.export-based exporter (``dynamo=True``, which translates the
graph with onnxscript; the TorchScript-based one is deprecated in torch 2.9+), opset 18, of a module that
returns the logits only, with a dynamic batch axis.  The file is then run by onnxruntime on the run's own
target-test images (its splits, rebuilt from its config and checked against its manifest, through its
evaluation transform): the largest absolute logit difference against PyTorch must stay under
``ONNX_TOLERANCE`` and every predicted class must agree, otherwise the export fails.  An earlier export is replaced only in what it wrote itself (its card's files): anything else a user
kept there stays.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from da.deploy.card import CARD_FILE


def check_out(out: Path) -> None:
    """Refuse to replace a folder that is not an earlier export (it could hold anything)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / CARD_FILE).exists())):
        raise FileExistsError(f"--out {out} exists and is not an earlier export (no {CARD_FILE} in it); give an "
                              f"empty or new folder, or remove it")


def own_files(folder: Path) -> set[str]:
    """What an earlier export wrote into ``folder``: its card and the files the card lists."""
    try:
        card = json.loads((folder / CARD_FILE).read_text())
        return {CARD_FILE, *card.get("files", {})}
    except (OSError, ValueError, AttributeError):
        return {CARD_FILE}


def replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished export ``tmp`` to ``out``.  An earlier export there is replaced, but only what it wrote
    (its card's files): anything else in the folder (da-predict's predictions, a user's notes) moves into the new
    export first, and back if the move fails."""
    old, kept = None, []
    if out.exists():
        ours = own_files(out)
        for entry in sorted(out.iterdir()):
            if entry.name not in ours and not (tmp / entry.name).exists():
                os.replace(entry, tmp / entry.name)
                kept.append(entry.name)
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        if old is not None:
            os.replace(old, out)  # put the earlier export back, with what it held
            for name in kept:
                os.replace(tmp / name, out / name)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
