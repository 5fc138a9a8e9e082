"""Fetch and verify a dataset archive with torchvision's download utilities; fail loudly otherwise."""

from __future__ import annotations

import os
from pathlib import Path

from torchvision.datasets.utils import download_and_extract_archive

from da.data.registry import DatasetSpec


class DownloadError(RuntimeError):
    pass


def download(spec: DatasetSpec, root: str | os.PathLike) -> Path:
    """Download, md5-check and unpack ``spec`` under ``root``; return its image folder.

    Datasets without a direct URL of known checksum (AID, RSSCN7, NWPU-RESISC45, WHU-RS19 are
    distributed through cloud drives) raise with the instructions for placing the files by hand.
    """
    folder = spec.folder(root)
    manual = f"place the files by hand so that the layout is {spec.layout()} (source: {spec.homepage})"
    if spec.url is None:
        raise DownloadError(f"dataset {spec.name} has no direct download with a known checksum; {manual}")
    extract_root = Path(root) / spec.archive_extract_dir
    try:
        download_and_extract_archive(spec.url, download_root=str(Path(root)), extract_root=str(extract_root),
                                     md5=spec.md5)
    except Exception as err:  # network errors, checksum mismatch, a broken archive: all end the same way
        raise DownloadError(f"downloading dataset {spec.name} from {spec.url} failed ({type(err).__name__}: {err}); "
                            f"{manual}") from err
    if not folder.is_dir():
        raise DownloadError(f"dataset {spec.name}: the archive from {spec.url} did not unpack into {folder}; {manual}")
    return folder
