"""Input that is not what it says: every case ends in the correct result or a clear error naming the file,
option or run, never in a silently wrong number (issue 14's corpus; the config cases are in test_config.py,
the healing cases in test_heal.py, the record cases in test_tables.py)."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import make_folder_dataset
from da.data import folder as folder_mod
from da.data.classmaps import resolve_class_map
from da.data.folder import load_rgb, scan
from da.data.registry import DATASETS, RSSCN7
from da.rundir import run_dir_for
from da.train import train_stage
from da.train.engine import StaleRunError
from test_engine import tiny_cfg


# ---------------------------------------------------------------------------------------------- images
def test_16_bit_greyscale_is_rescaled_not_clipped_to_white(tmp_path):
    values = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0 .. 65472
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    rgb = np.asarray(load_rgb(tmp_path / "g16.png"))
    assert rgb.shape == (32, 32, 3) and np.array_equal(rgb[..., 0], (values >> 8).astype(np.uint8))
    assert rgb.min() == 0 and rgb.max() == 255 and len(np.unique(rgb)) > 200


def test_oversized_and_unsupported_images_are_skipped_naming_them(tmp_path):
    make_folder_dataset(tmp_path, "RSSCN7", list(RSSCN7.classes), 2)
    cls_dir = tmp_path / "RSSCN7" / "bField"
    Image.new("L", (folder_mod.MAX_IMAGE_SIDE + 1, 8)).save(cls_dir / "huge.png")
    Image.fromarray(np.zeros((8, 8), np.float32), mode="F").save(cls_dir / "float.tif")
    with pytest.warns(UserWarning) as caught:
        found = scan(RSSCN7, tmp_path)
    text = " ".join(str(w.message) for w in caught)
    assert f"bField/huge.png ({folder_mod.MAX_IMAGE_SIDE + 1}x8 px, larger than the {folder_mod.MAX_IMAGE_SIDE} px limit" in text
    assert "bField/float.tif (pixel mode 'F' is not supported" in text
    assert len(found.samples) == 14


def test_file_names_that_are_not_utf8_are_named_and_skipped(tmp_path):
    make_folder_dataset(tmp_path, "RSSCN7", list(RSSCN7.classes), 2)
    good = tmp_path / "RSSCN7" / "cIndustry" / "cindustry_0.jpg"
    odd = os.path.join(os.fsencode(good.parent), b"caf\xe9.jpg")  # Latin-1 bytes, not UTF-8
    shutil.copyfile(good, odd)
    with pytest.warns(UserWarning) as caught:
        found = scan(RSSCN7, tmp_path)
    text = str(caught[0].message)
    assert r"cIndustry/caf\udce9.jpg (file name is not valid UTF-8 (bytes b'cIndustry/caf\xe9.jpg')" in text
    assert len(found.samples) == 14


def test_verified_images_are_not_decoded_again_until_they_change(tmp_path, monkeypatch):
    make_folder_dataset(tmp_path, "RSSCN7", list(RSSCN7.classes), 2)
    calls = []
    real = folder_mod.inspect_image
    monkeypatch.setattr(folder_mod, "inspect_image", lambda p: calls.append(p) or real(p))
    scan(RSSCN7, tmp_path)
    assert len(calls) == 14
    calls.clear()
    scan(RSSCN7, tmp_path)
    assert calls == []  # remembered by (size, mtime)
    changed = tmp_path / "RSSCN7" / "aGrass" / "agrass_0.jpg"
    changed.write_bytes(changed.read_bytes()[:100])  # now truncated
    with pytest.warns(UserWarning, match="agrass_0.jpg .*Truncated"):
        found = scan(RSSCN7, tmp_path)
    assert calls == [changed] and len(found.samples) == 13


# ---------------------------------------------------------------------------------------------- class maps
@pytest.mark.parametrize("name,text", [
    ("m.yaml", "classes:\n  aGrass: [Meadow]\n  bField: [Farmland]\n  aGrass: [Forest]\n"),
    ("m.json", '{"classes": {"aGrass": ["Meadow"], "aGrass": ["Forest"]}}'),
])
def test_class_map_with_a_repeated_key_is_refused(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"class map {path}: key\(s\) aGrass given more than once"):
        resolve_class_map(DATASETS["AID"], RSSCN7, path)


@pytest.mark.parametrize("group", ["[]", "null"])
def test_class_map_with_an_empty_group_is_refused(tmp_path, group):
    path = tmp_path / "m.yaml"
    path.write_text(f"classes:\n  aGrass: [Meadow]\n  bField: {group}\n")
    with pytest.raises(ValueError, match="target class bField has no source class"):
        resolve_class_map(DATASETS["AID"], RSSCN7, path)


# ---------------------------------------------------------------------------------------------- stale reuse
def _swap_map(path, a, b):
    data = json.loads(path.read_text())
    data["classes"][a], data["classes"][b] = data["classes"][b], data["classes"][a]
    path.write_text(json.dumps(data))


def test_reuse_checks_what_the_run_saw(tiny_root, tmp_path):
    from da.data.classmaps import builtin_maps

    data = tmp_path / "data"
    shutil.copytree(tiny_root, data)
    cmap = tmp_path / "map.json"
    shutil.copyfile(builtin_maps()[("AID", "RSSCN7")], cmap)
    cfg = tiny_cfg(data, tmp_path / "runs", method="source_only", stages=1, epochs=1, class_map=str(cmap))
    first = train_stage(cfg, stage=2)
    assert train_stage(cfg, stage=2) == first  # same inputs: reused
    run_dir = run_dir_for(cfg, 2)

    _swap_map(cmap, "aGrass", "bField")  # same path, other labels
    with pytest.raises(StaleRunError, match=rf"{run_dir} was made from other inputs .*class map.*rm -r {run_dir}"):
        train_stage(cfg, stage=2)
    _swap_map(cmap, "aGrass", "bField")
    assert train_stage(cfg, stage=2) == first

    for path in data.rglob("*.jpg"):  # the same files with other times, as after a copy to another machine
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert train_stage(cfg, stage=2) == first
    img = next((data / "RSSCN7" / "eForest").iterdir())
    blob = img.read_bytes()  # one byte changed, same size and same file time: only the contents tell
    img.write_bytes(blob[:-3] + bytes([blob[-3] ^ 1]) + blob[-2:])
    os.utime(img, ns=(1_000_000_000, 1_000_000_000))
    with pytest.raises(StaleRunError, match="the images"):
        train_stage(cfg, stage=2)
    Image.new("RGB", (36, 36), (255, 0, 0)).save(img, format="JPEG")  # an image replaced in place
    with pytest.raises(StaleRunError, match="the images"):
        train_stage(cfg, stage=2)


def test_reuse_checks_the_weights_file(tiny_root, tmp_path):
    import torch

    from da.models import build_model

    weights = tmp_path / "w.pt"
    model = build_model("timm:tf_efficientnet_lite0", 7, weights="none")
    torch.save({"model": model.state_dict()}, weights)
    cfg = tiny_cfg(tiny_root, tmp_path / "runs", method="source_only", stages=1, epochs=1, weights=str(weights))
    train_stage(cfg, stage=2)
    state = torch.load(weights)
    next(iter(state["model"].values())).add_(1.0)
    torch.save(state, weights)  # replaced: same path, other numbers
    with pytest.raises(StaleRunError, match="the weights file"):
        train_stage(cfg, stage=2)


def test_a_record_that_fingerprinted_file_times_is_reused_with_a_warning(tiny_root, tmp_path, caplog):
    """Records written before data fingerprints hashed contents hashed file times, which no copy keeps: such a
    run is reused (its data cannot be checked), and the log says so; its other inputs are still compared."""
    cfg = tiny_cfg(tiny_root, tmp_path / "runs", method="source_only", stages=1, epochs=1)
    first = train_stage(cfg, stage=2)
    record = run_dir_for(cfg, 2) / "record.json"
    data = json.loads(record.read_text())
    data["inputs"]["data"] = "6b827f11737e82a046dbd613051721f4cd54121b088eed7407a6f51165263c53"
    record.write_text(json.dumps(data))
    with caplog.at_level("WARNING"):
        assert train_stage(cfg, stage=2) == first
    assert "fingerprinted its data by file times" in caplog.text

