"""The download path without internet: a local HTTP server on 127.0.0.1 serves small archives in each
dataset's real layout (good, wrong md5, truncated, interrupted), and hand-placed data is compared with
the registry."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import threading
import warnings
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from PIL import Image

from conftest import make_folder_dataset
from da.data import registry
from da.data.download import DOWNLOADS_DIR, MIRROR_ENV, DownloadError, download
from da.data.folder import DatasetMismatchWarning, scan
from da.data.registry import DATASETS, RSSCN7

DOWNLOADABLE = ("NWPU-RESISC45", "UCMerced", "EuroSAT")


def make_archive(spec, per_class: int = 2, side: int = 32, extra: dict[str, bytes] | None = None) -> bytes:
    """A zip in ``spec``'s release layout (the folders its official archive unpacks into), small images."""
    rel = PurePosixPath(spec.image_dir).relative_to(spec.archive_extract_dir or ".")
    ext, fmt = (".tif", "TIFF") if spec.name == "UCMerced" else (".jpg", "JPEG")
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for cls in spec.classes:
            for i in range(per_class):
                img = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(img, fmt)
                zf.writestr(f"{rel}/{cls}/{cls}_{i}{ext}", img.getvalue())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


class ArchiveServer:
    """Serves ``files`` (name -> bytes) with Range support; ``cut[name] = n`` announces the whole file but
    closes the connection after n bytes (an interrupted download)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.ranges: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                data = server.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                header = self.headers.get("Range")
                server.ranges.append(header)
                start = int(header.split("=")[1].rstrip("-")) if header else 0
                self.send_response(206 if header else 200)
                if header:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if name in server.cut:
                    body = body[:server.cut.pop(name)]
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mirror"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    srv = ArchiveServer()
    monkeypatch.setenv(MIRROR_ENV, srv.url)
    yield srv
    srv.close()


def serve(server, monkeypatch, name: str, data: bytes, md5: str | None = "auto"):
    """Put ``data`` on the server as dataset ``name``'s archive and register its md5."""
    spec = DATASETS[name]
    server.files[spec.archive_name] = data
    spec = dataclasses.replace(spec, md5=hashlib.md5(data).hexdigest() if md5 == "auto" else md5)
    monkeypatch.setitem(DATASETS, name, spec)
    return spec


def leftovers(root: Path) -> list[str]:
    """Anything a download leaves besides finished dataset folders: parts, archives, staging folders."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".unpacking" in p.name or p.suffix == ".part"
                  or (p.parent.name == DOWNLOADS_DIR and p.is_file()))


def test_registered_urls_are_pinned_https_mirrors_with_md5():
    for name in DOWNLOADABLE:
        spec = DATASETS[name]
        assert spec.url.startswith("https://") and "/resolve/" in spec.url and len(spec.md5) == 32, name
        assert spec.url_source
        commit = spec.url.split("/resolve/")[1].split("/")[0]
        assert len(commit) == 40 and int(commit, 16) >= 0  # a revision, not a moving branch


@pytest.mark.parametrize("name", DOWNLOADABLE)
def test_good_archive_is_checked_unpacked_and_usable(tmp_path, server, monkeypatch, name):
    spec = serve(server, monkeypatch, name, make_archive(DATASETS[name]))
    folder = download(spec, tmp_path, progress=False)
    assert folder == spec.folder(tmp_path) and folder.is_dir()
    with pytest.warns(DatasetMismatchWarning, match=f"{len(spec.classes) * 2} files in its class folders"):
        found = scan(spec, tmp_path)
    assert found.count_by_class() == {c: 2 for c in spec.classes}
    assert found.summary()["image_sizes"] == {"32x32": 2 * len(spec.classes)}
    assert leftovers(tmp_path) == []  # the archive is removed once unpacked
    assert download(spec, tmp_path) == folder and len(server.ranges) == 1  # present: not fetched again


def test_wrong_md5_leaves_nothing_and_the_next_try_starts_clean(tmp_path, server, monkeypatch):
    data = make_archive(DATASETS["UCMerced"])
    spec = serve(server, monkeypatch, "UCMerced", data, md5="0" * 32)
    with pytest.raises(DownloadError, match=r"UCMerced: .*md5 [0-9a-f]{32} does not match the expected 0{32}.*"
                                            r"next try starts clean.*UCMerced_LandUse/Images/<class folder>"):
        download(spec, tmp_path, progress=False)
    assert not (tmp_path / "UCMerced_LandUse").exists() and leftovers(tmp_path) == []
    spec = serve(server, monkeypatch, "UCMerced", data)
    download(spec, tmp_path, progress=False)
    assert server.ranges == [None, None]  # the second try fetched the whole file again
    assert len(list(spec.folder(tmp_path).rglob("*.tif"))) == 2 * len(spec.classes)


def test_truncated_archive_is_refused_before_anything_is_unpacked(tmp_path, server, monkeypatch):
    data = make_archive(DATASETS["EuroSAT"])
    spec = serve(server, monkeypatch, "EuroSAT", data[: len(data) // 2], md5=hashlib.md5(data).hexdigest())
    with pytest.raises(DownloadError, match="does not match the expected"):
        download(spec, tmp_path, progress=False)
    assert not (tmp_path / "EuroSAT").exists() and leftovers(tmp_path) == []
    # without a known md5 the archive itself is found damaged: still nothing half-extracted
    spec = serve(server, monkeypatch, "EuroSAT", data[: len(data) // 2], md5=None)
    with pytest.raises(DownloadError, match="neither a zip nor a tar archive"):
        download(spec, tmp_path, progress=False)
    assert not (tmp_path / "EuroSAT").exists() and leftovers(tmp_path) == []


def test_archive_without_the_layout_or_with_unsafe_paths_is_refused(tmp_path, server, monkeypatch):
    spec = serve(server, monkeypatch, "EuroSAT", make_archive(dataclasses.replace(DATASETS["EuroSAT"], image_dir="x",
                                                                                  archive_extract_dir="")))
    with pytest.raises(DownloadError, match=r"does not hold 2750/"):
        download(spec, tmp_path, progress=False)
    spec = serve(server, monkeypatch, "EuroSAT", make_archive(DATASETS["EuroSAT"], extra={"../evil.txt": b"x"}))
    with pytest.raises(DownloadError, match="unsafe path '../evil.txt'"):
        download(spec, tmp_path, progress=False)
    assert not (tmp_path.parent / "evil.txt").exists() and not (tmp_path / "EuroSAT").exists()
    assert leftovers(tmp_path) == []


def test_interrupted_download_keeps_its_part_and_resumes(tmp_path, server, monkeypatch):
    data = make_archive(DATASETS["NWPU-RESISC45"])
    spec = serve(server, monkeypatch, "NWPU-RESISC45", data)
    server.cut[spec.archive_name] = 5000
    with pytest.raises(DownloadError, match=rf"interrupted after 5,000 of {len(data):,} bytes.*run again with "
                                            rf"--download to resume"):
        download(spec, tmp_path, progress=False)
    part = tmp_path / DOWNLOADS_DIR / (spec.archive_name + ".part")
    assert part.stat().st_size == 5000 and not spec.folder(tmp_path).exists()
    download(spec, tmp_path, progress=False)
    assert server.ranges == [None, "bytes=5000-"]  # the second request asked only for the rest
    assert scan(spec, tmp_path).count_by_class() == {c: 2 for c in spec.classes} and leftovers(tmp_path) == []


def test_unreachable_host_and_manual_datasets_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9/none")  # the discard port: nothing listens
    with pytest.raises(DownloadError, match=r"UCMerced: cannot reach http://127.0.0.1:9/none/UCMerced_LandUse.zip.*"
                                            r"place the files by hand"):
        download(DATASETS["UCMerced"], tmp_path, progress=False)
    with pytest.raises(DownloadError, match=r"AID has no direct download.*<data-root>/AID/<class folder>"):
        download(DATASETS["AID"], tmp_path)


def test_hand_placed_dataset_is_compared_with_the_release(tmp_path):
    make_folder_dataset(tmp_path, "RSSCN7", list(RSSCN7.classes), 2)
    with pytest.warns(DatasetMismatchWarning, match=r"RSSCN7 .* not the official release: 14 files in its class "
                                                    r"folders, the official release has 2,800 images; its images "
                                                    r"are mostly 24x24 px \(14 of 14\).* 400x400 px"):
        found = scan(RSSCN7, tmp_path)
    summary = found.summary()
    assert summary["images_per_class"] == {c: 2 for c in RSSCN7.classes}
    assert summary["image_sizes"] == {"24x24": 14} and summary["official"] == {"images": 2800, "image_size": 400}
    assert summary["differs_from_release"][0] == "14 files in its class folders, the official release has 2,800 images"
    # a copy with the official count and size raises no warning (sizes come from the memo on the second scan)
    spec = dataclasses.replace(RSSCN7, num_images=14, image_size=24)
    for _ in range(2):
        with warnings.catch_warnings():
            warnings.simplefilter("error", DatasetMismatchWarning)
            assert scan(spec, tmp_path).summary()["differs_from_release"] == []


def test_resisc45_ucm_preset_resolves_the_protocol():
    from da.cli import config_from_args

    cfg = config_from_args(["--preset", "resisc45-ucm", "smoke", "--download"], "t")
    assert (cfg.stage1, cfg.source, cfg.target, cfg.download) == ("NWPU-RESISC45", "NWPU-RESISC45", "UCMerced", True)
    assert cfg.max_steps_per_epoch == 3  # the second preset applies on top
    assert registry.get_spec("resisc45").url and registry.get_spec("ucm").url


@pytest.mark.slow
def test_resisc45_ucm_preset_runs_end_to_end_from_downloads(tmp_path, server, monkeypatch):
    """Both stages of the preset from nothing on disk: the two archives are fetched, checked, unpacked and
    trained on; the record says what data the run saw."""
    import json

    from da.cli import config_from_args
    from da.train import run_experiment

    for name in ("NWPU-RESISC45", "UCMerced"):
        serve(server, monkeypatch, name, make_archive(DATASETS[name], per_class=6, side=40))
    cfg = config_from_args(["--preset", "resisc45-ucm", "smoke", "--download", "--data-root", str(tmp_path / "data"),
                            "--out", str(tmp_path / "runs"), "--progress", "false", "--num-workers", "0",
                            "--batch-size", "8"], "t")
    record = json.loads(Path(run_experiment(cfg)).read_text())
    assert sorted(record["data"]) == ["NWPU-RESISC45", "UCMerced"]
    assert record["data"]["UCMerced"]["images_per_class"] == {c: 6 for c in record["classes"]}
    assert len(record["classes"]) == 20 and record["data"]["NWPU-RESISC45"]["image_sizes"] == {"40x40": 21 * 6}
    assert record["split_sizes"]["target_test"] > 0 and 0 <= record["target_test"]["accuracy"] <= 1
    stage1 = json.loads(next((tmp_path / "runs").glob("stage1-*/record.json")).read_text())
    assert stage1["data"]["NWPU-RESISC45"]["images"] == 45 * 6
    assert leftovers(tmp_path / "data") == []


def test_a_download_has_a_deadline_and_a_size_cap(tmp_path, server, monkeypatch):
    from da.data import download as dl

    data = make_archive(DATASETS["NWPU-RESISC45"])
    spec = serve(server, monkeypatch, "NWPU-RESISC45", data)
    monkeypatch.setattr(dl, "DEADLINE_S", -1)  # past it after the first chunk
    with pytest.raises(DownloadError, match=r"interrupted after [\d,]+ of [\d,]+ bytes \(over the -1 s deadline\).*resume"):
        download(spec, tmp_path, progress=False)
    monkeypatch.setattr(dl, "DEADLINE_S", 3600)
    monkeypatch.setattr(dl, "MAX_BYTES", 1000)
    with pytest.raises(DownloadError, match="announces [\\d,]+ bytes, more than the 1,000"):
        download(spec, tmp_path / "b", progress=False)


def test_the_run_program_reports_a_failed_download_as_one_error_line(tmp_path, monkeypatch, capsys):
    from da.scripts.run import main

    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9/none")  # nothing listens
    rc = main(["--stage1", "UCMerced", "--source", "UCMerced", "--target", "RSSCN7", "--download", "--data-root",
               str(tmp_path), "--out", str(tmp_path / "runs"), "--progress", "false"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: dataset UCMerced: cannot reach") and "Traceback" not in err
