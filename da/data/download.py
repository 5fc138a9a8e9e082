"""Fetch a dataset archive, check its md5, unpack it into place; never leave a half-made dataset behind.

The archive is streamed to ``<root>/.downloads/<file>.part``; an interrupted download keeps that part and
the next ``--download`` resumes it (HTTP Range), falling back to a fresh start when the server does not
resume.  Only a complete file whose md5 matches the registry is unpacked, into a private folder next
to the destination that is renamed into place at the end, so the dataset folder appears whole or not at
all.  A wrong md5 deletes the part file, so the next try starts clean.

``DA_DATASET_MIRROR`` (a base URL) fetches every archive by its file name from there instead of the
registered host: a lab mirror, or the test server.  The md5 is checked all the same.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from http.client import HTTPException
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from da.data.registry import DatasetSpec

MIRROR_ENV = "DA_DATASET_MIRROR"
DOWNLOADS_DIR = ".downloads"
CHUNK = 1 << 20
TIMEOUT_S = 60  # a stalled connection: no byte for this long
DEADLINE_S = 6 * 3600  # the whole download (resumable: a rerun continues from the part)
MAX_BYTES = 50 << 30  # no registered archive comes near this; a server that streams forever is cut here


class DownloadError(RuntimeError):
    pass


def archive_url(spec: DatasetSpec) -> str | None:
    """Where ``spec``'s archive is fetched from: ``$DA_DATASET_MIRROR/<file name>`` or its registered URL."""
    if spec.url is None:
        return None
    mirror = os.environ.get(MIRROR_ENV)
    return f"{mirror.rstrip('/')}/{spec.archive_name}" if mirror else spec.url


def download(spec: DatasetSpec, root: str | os.PathLike, progress: bool = True) -> Path:
    """Download, md5-check and unpack ``spec`` under ``root``; return its image folder.

    Datasets without a direct URL of known checksum (AID, RSSCN7, WHU-RS19 are distributed through cloud
    drives) raise with the instructions for placing the files by hand.
    """
    root = Path(root)
    folder = spec.folder(root)
    manual = f"or place the files by hand so that the layout is {spec.layout()} (source: {spec.homepage})"
    url = archive_url(spec)
    if url is None:
        raise DownloadError(f"dataset {spec.name} has no direct download with a known checksum; place the files "
                            f"by hand so that the layout is {spec.layout()} (source: {spec.homepage})")
    if folder.is_dir():
        return folder
    archive = root / DOWNLOADS_DIR / spec.archive_name
    try:
        root.mkdir(parents=True, exist_ok=True)
        fetch(url, archive, spec.md5, progress=progress)
        unpack(archive, spec, root)
    except DownloadError as err:
        raise DownloadError(f"dataset {spec.name}: {err}; {manual}") from err
    except OSError as err:  # a read-only or full data root
        raise DownloadError(f"dataset {spec.name}: cannot write under {root} ({err}); give a writable "
                            f"--data-root") from err
    archive.unlink(missing_ok=True)  # unpacked and checked: the archive would only double the disk use
    return folder


def fetch(url: str, dest: Path, md5: str | None, progress: bool = True) -> Path:
    """Stream ``url`` to ``dest`` (through ``dest.part``, resumed when it exists) and check its md5."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the part is already whole (or longer): check it below
            response = None
        else:
            raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError, HTTPException) as err:
        raise DownloadError(f"cannot reach {url} ({getattr(err, 'reason', err)})") from err
    if response is not None:
        with response:
            resumed = have and response.status == 206
            if not resumed:
                have = 0  # the server sent the whole file: start the part over
            length = response.headers.get("Content-Length")
            expected = have + int(length) if length is not None else None
            got = have
            if expected is not None and expected > MAX_BYTES:
                raise DownloadError(f"{url}: the server announces {expected:,} bytes, more than the {MAX_BYTES:,} "
                                    f"a dataset archive may have; refused")
            start = time.monotonic()
            try:
                with open(part, "ab" if resumed else "wb") as out, tqdm(
                        total=expected, initial=have, unit="B", unit_scale=True, desc=dest.name,
                        disable=not progress or None, leave=False) as bar:
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
                        if got > MAX_BYTES:
                            part.unlink()
                            raise DownloadError(f"{url}: more than {MAX_BYTES:,} bytes and still sending; refused "
                                                f"and deleted what came")
                        if time.monotonic() - start > DEADLINE_S:
                            raise DownloadError(_interrupted(url, part, got, expected,
                                                             f"over the {DEADLINE_S:,} s deadline"))
            except (OSError, HTTPException) as err:  # a dropped connection, a timeout
                raise DownloadError(_interrupted(url, part, got, expected, err)) from err
            if expected is not None and got < expected:
                raise DownloadError(_interrupted(url, part, got, expected, "connection closed early"))
    if md5 is not None:
        found = file_md5(part)
        if found != md5:
            part.unlink()
            raise DownloadError(f"{url}: md5 {found} does not match the expected {md5} (a truncated or changed "
                                f"file); deleted it, so the next try starts clean")
    os.replace(part, dest)
    return dest


def _interrupted(url: str, part: Path, got: int, expected: int | None, why) -> str:
    of = f" of {expected:,}" if expected else ""
    return (f"download of {url} interrupted after {got:,}{of} bytes ({why}); the part is kept at {part}: run "
            f"again with --download to resume")


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def unpack(archive: Path, spec: DatasetSpec, root: Path) -> Path:
    """Unpack ``archive`` in a private folder, check that it holds ``spec``'s layout, then rename the
    folder it brings into place (an atomic rename on one file system)."""
    rel = PurePosixPath(spec.image_dir).relative_to(spec.archive_extract_dir or ".")
    top = rel.parts[0]
    dest_parent = root / spec.archive_extract_dir
    dest = dest_parent / top
    staging = root / f".unpacking-{spec.name}"
    shutil.rmtree(staging, ignore_errors=True)  # left by an earlier attempt that was killed
    staging.mkdir(parents=True)
    try:
        _extract(archive, staging)
        if not (staging / rel).is_dir():
            found = sorted(p.name for p in staging.iterdir())[:10]
            raise DownloadError(f"the archive {archive.name} does not hold {rel}/ (it holds {found})")
        missing = [c for c in spec.classes if not (staging / rel / c).is_dir()]
        if missing:
            raise DownloadError(f"the archive {archive.name} lacks the class folder(s) {', '.join(missing[:10])} "
                                f"under {rel}/")
        if dest.exists():
            raise DownloadError(f"{dest} exists but does not hold the dataset's layout {spec.layout()}; move it "
                                f"away and run again")
        dest_parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / top, dest)
    except DownloadError:
        archive.unlink(missing_ok=True)  # its md5 was right or unknown, yet it is unusable: fetch anew
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _extract(archive: Path, into: Path) -> None:
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():  # no member may land outside the staging folder
                    parts = PurePosixPath(name).parts
                    if name.startswith("/") or ".." in parts:
                        raise DownloadError(f"the archive {archive.name} holds an unsafe path {name!r}")
                zf.extractall(into)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                tf.extractall(into, filter="data")  # refuses absolute paths, '..' and device files
        else:
            raise DownloadError(f"{archive.name} is neither a zip nor a tar archive (a truncated download?)")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as err:
        raise DownloadError(f"the archive {archive.name} is damaged ({type(err).__name__}: {err})") from err


def ensure_datasets(names: list[str], root: str | os.PathLike, progress: bool = True) -> None:
    """Download each registered dataset of ``names`` whose folder is missing (``--download``)."""
    from da.data.registry import get_spec

    for name in dict.fromkeys(n for n in names if n):
        spec = get_spec(name, root)
        if not spec.folder(root).is_dir():
            print(f"downloading dataset {spec.name} from {archive_url(spec) or '(no URL)'}", flush=True)
            download(spec, root, progress=progress)
