"""The data layer on tiny generated folders: registry, scanning, bad files, class maps, splits, transforms."""

import json
import warnings

import pytest
import torch

from da.data import (DATASETS, ImageListDataset, adaptation_splits, get_spec, read_manifest, resolve_class_map,
                     scan, stratified_split, supervised_splits, train_transform, eval_transform, write_manifest)
from da.data.classmaps import builtin_maps
from da.data.registry import RSSCN7
from da.data.transforms import RandomRot90, batch_mixer

from conftest import make_folder_dataset, write_image

AID_SHARED = ["Meadow", "Farmland", "Industrial", "River", "Pond", "Forest", "DenseResidential",
              "MediumResidential", "SparseResidential", "Parking"]


def test_registry_official_class_counts():
    expected = {"NWPU-RESISC45": 45, "AID": 30, "UCMerced": 21, "RSSCN7": 7, "RSSCN7-LT": 7, "EuroSAT": 10,
                "WHU-RS19": 19}
    assert {n: len(s.classes) for n, s in DATASETS.items()} == expected
    for spec in DATASETS.values():
        assert len(set(spec.classes)) == len(spec.classes)
    assert get_spec("resisc45").name == "NWPU-RESISC45" and get_spec("ucm").name == "UCMerced"


def test_unknown_dataset_lists_known_names():
    with pytest.raises(ValueError, match="known datasets: .*AID.*RSSCN7"):
        get_spec("ImageNet")


def test_missing_dataset_folder_names_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"RSSCN7.*not found.*<data-root>/RSSCN7/<class folder>"):
        scan(RSSCN7, tmp_path)


def test_missing_class_folder(tmp_path):
    make_folder_dataset(tmp_path, "RSSCN7", list(RSSCN7.classes[:-1]), 2)
    with pytest.raises(FileNotFoundError, match="gParking"):
        scan(RSSCN7, tmp_path)


def test_empty_class_folder(tmp_path):
    make_folder_dataset(tmp_path, "RSSCN7", list(RSSCN7.classes), 2)
    for f in (tmp_path / "RSSCN7" / "bField").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match=r"bField is empty"):
        scan(RSSCN7, tmp_path)


def test_bad_files_are_skipped_counted_and_warned_once(tmp_path):
    make_folder_dataset(tmp_path, "RSSCN7", list(RSSCN7.classes), 3)
    cls_dir = tmp_path / "RSSCN7" / "aGrass"
    (cls_dir / "zero.jpg").write_bytes(b"")
    good = (cls_dir / "agrass_0.jpg").read_bytes()
    (cls_dir / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (cls_dir / "notes.txt").write_text("not an image")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = scan(RSSCN7, tmp_path)
    msgs = [str(w.message) for w in caught if "unreadable file" in str(w.message)]
    assert len(msgs) == 1
    assert "skipped 3" in msgs[0] and "zero-byte" in msgs[0] and "truncated.jpg" in msgs[0] and "notes.txt" in msgs[0]
    assert len(found.samples) == 21 and len(found.skipped) == 3
    assert all(not rel.endswith(("zero.jpg", "truncated.jpg", "notes.txt")) for rel, _ in found.samples)
    # every remaining file loads: a training epoch never meets a bad file
    ds = ImageListDataset(found.folder, [(rel, 0) for rel, _ in found.samples], transform=None)
    assert all(ds[i][0].size == (24, 24) for i in range(len(ds)))


def test_generic_folder_dataset(tmp_path):
    make_folder_dataset(tmp_path, "mine", ["b_cls", "a_cls"], 2)
    spec = get_spec("folder:mine", root=tmp_path)
    assert spec.classes == ("a_cls", "b_cls")
    assert len(scan(spec, tmp_path).samples) == 4
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_spec("folder:nowhere", root=tmp_path)


def test_builtin_maps_are_valid():
    maps = builtin_maps()
    assert set(maps) >= {("AID", "RSSCN7"), ("NWPU-RESISC45", "UCMerced"), ("NWPU-RESISC45", "RSSCN7"),
                         ("NWPU-RESISC45", "AID"), ("AID", "UCMerced")}
    for (s, t) in maps:
        cmap = resolve_class_map(DATASETS[s], DATASETS[t])  # validates every name
        assert len(set(cmap.source_classes)) == len(cmap.source_classes)
    assert len(resolve_class_map(DATASETS["NWPU-RESISC45"], DATASETS["UCMerced"]).shared_classes) == 20
    aid = resolve_class_map(DATASETS["AID"], DATASETS["RSSCN7"])
    assert aid.source_label()["River"] == aid.source_label()["Pond"] == aid.target_label()["dRiverLake"]
    assert aid.shared_classes == list(RSSCN7.classes)


def test_user_class_map_json_and_yaml(tmp_path):
    j = tmp_path / "m.json"
    j.write_text(json.dumps({"classes": {"fResident": ["DenseResidential"], "eForest": "Forest"}}))
    cmap = resolve_class_map(DATASETS["AID"], RSSCN7, j)
    assert cmap.shared_classes == ["eForest", "fResident"]  # target order, not file order
    y = tmp_path / "m.yaml"
    y.write_text("classes:\n  aGrass: [Meadow]\n")
    assert resolve_class_map(DATASETS["AID"], RSSCN7, y).source_label() == {"Meadow": 0}


def test_class_map_unknown_source_class_lists_valid(tmp_path):
    j = tmp_path / "m.json"
    j.write_text(json.dumps({"classes": {"aGrass": ["Lawn"]}}))
    with pytest.raises(ValueError, match=r"Lawn.*valid: Airport, BareLand"):
        resolve_class_map(DATASETS["AID"], RSSCN7, j)


def test_class_map_unknown_target_class(tmp_path):
    j = tmp_path / "m.json"
    j.write_text(json.dumps({"classes": {"hSea": ["Beach"]}}))
    with pytest.raises(ValueError, match=r"hSea.*valid: aGrass"):
        resolve_class_map(DATASETS["AID"], RSSCN7, j)


def test_no_shared_class(tmp_path):
    j = tmp_path / "m.json"
    j.write_text(json.dumps({"classes": {}}))
    with pytest.raises(ValueError, match="share no class"):
        resolve_class_map(DATASETS["AID"], RSSCN7, j)
    with pytest.raises(ValueError, match="no built-in class map from RSSCN7 to UCMerced"):
        resolve_class_map(RSSCN7, DATASETS["UCMerced"])


def test_the_second_pair_reads_the_map_the_other_way_round():
    """RSSCN7 -> AID: the 7 RSSCN7 classes, each with the AID classes that fall into it (River and Pond are
    dRiverLake): the same label space as AID -> RSSCN7, the roles of the datasets swapped."""
    forward = resolve_class_map(DATASETS["AID"], RSSCN7)
    back = resolve_class_map(RSSCN7, DATASETS["AID"])
    assert back.shared_classes == forward.shared_classes == list(RSSCN7.classes)
    assert back.source_label() == forward.target_label()  # RSSCN7 class -> the same index both ways
    assert back.target_label() == forward.source_label()  # AID class -> the same index both ways
    assert sorted(back.target_classes) == sorted(forward.source_classes)
    assert resolve_class_map(RSSCN7, DATASETS["AID"], None).to_dict()["classes"]["dRiverLake"] == {
        "source": ["dRiverLake"], "target": ["River", "Pond"]}


def test_grouped_map_errors_name_the_side_and_class(tmp_path):
    j = tmp_path / "m.json"
    j.write_text(json.dumps({"classes": {"x": {"source": ["aGrass"], "target": ["Meadow", "Lawn"]}}}))
    with pytest.raises(ValueError, match=r"\['Lawn'\] \(for x\) not classes of target AID"):
        resolve_class_map(RSSCN7, DATASETS["AID"], j)
    j.write_text(json.dumps({"classes": {"x": {"source": ["aGrass"], "target": ["Meadow"]},
                                         "y": {"source": ["bField"], "target": ["Meadow"]}}}))
    with pytest.raises(ValueError, match="target class Meadow maps to both x and y"):
        resolve_class_map(RSSCN7, DATASETS["AID"], j)
    j.write_text(json.dumps({"classes": {"x": {"source": ["aGrass"], "target": ["Meadow"]}, "y": ["bField"]}}))
    with pytest.raises(ValueError, match="shared class y must be a mapping with 'source' and 'target'"):
        resolve_class_map(RSSCN7, DATASETS["AID"], j)


def test_named_builtin_map_the_six_class_benchmark(tmp_path):
    """--class-map AID-RSSCN7-6class: the literature's 6 classes (no aGrass on RSSCN7; AID's Farmland, Forest,
    Industrial, Parking, DenseResidential, River), chosen by name; it is not the pair's default map."""
    six = resolve_class_map(DATASETS["AID"], RSSCN7, "AID-RSSCN7-6class")
    assert six.shared_classes == ["bField", "cIndustry", "dRiverLake", "eForest", "fResident", "gParking"]
    assert sorted(six.source_classes) == sorted(["Farmland", "Forest", "Industrial", "Parking", "DenseResidential",
                                                 "River"])
    assert builtin_maps()[("AID", "RSSCN7")].stem == "AID-RSSCN7"
    make_folder_dataset(tmp_path, "AID", AID_SHARED, 10)
    make_folder_dataset(tmp_path, "RSSCN7", list(RSSCN7.classes), 10)
    s = adaptation_splits("AID", "RSSCN7", tmp_path, 0.2, 0.3, 0, class_map="AID-RSSCN7-6class")
    assert len(s["source_train"]) + len(s["source_val"]) == 60 and len(s["target_train"]) + len(s["target_test"]) == 60


def test_transductive_target_is_the_whole_target_set_twice(tmp_path):
    """The published protocol: every target image is both unlabelled training data and test data."""
    from da.config import ConfigError, RunConfig

    make_folder_dataset(tmp_path, "RSSCN7", list(RSSCN7.classes), 10)
    make_folder_dataset(tmp_path, "AID", AID_SHARED, 10)
    s = adaptation_splits("RSSCN7", "AID", tmp_path, 0.2, 0.3, 0, transductive=True)
    assert s["target_train"].samples == s["target_test"].samples and len(s["target_test"]) == 100
    held = adaptation_splits("RSSCN7", "AID", tmp_path, 0.2, 0.3, 0)
    assert len(held["target_test"]) == 30 and not set(held["target_train"].samples) & set(held["target_test"].samples)
    assert {l for _, l in held["target_test"].samples} == set(range(7))
    with pytest.raises(ConfigError, match="--transductive tests on the target training images"):
        RunConfig(transductive=True, target_labeled_fraction=1.0).validate()
    assert RunConfig(transductive=True).config_hash() != RunConfig().config_hash()


def test_stratified_split_is_seeded_stratified_and_order_free():
    samples = [(f"{c}/{i}.jpg", c) for c in "abc" for i in range(40)]
    a = stratified_split(samples, {"train": 0.75, "test": 0.25}, seed=3, key="x")
    b = stratified_split(list(reversed(samples)), {"train": 0.75, "test": 0.25}, seed=3, key="x")
    assert a == b
    for c in "abc":
        assert sum(1 for _, k in a["test"] if k == c) == 10
    assert set(a["train"]).isdisjoint(a["test"]) and len(a["train"]) + len(a["test"]) == 120
    c = stratified_split(samples, {"train": 0.75, "test": 0.25}, seed=4, key="x")
    assert c["test"] != a["test"]
    # subsets of classes get the same per-class split (what makes stage 1 and stage 2 agree)
    sub = stratified_split([s for s in samples if s[1] == "b"], {"train": 0.75, "test": 0.25}, seed=3, key="x")
    assert sub["test"] == [s for s in a["test"] if s[1] == "b"]
    with pytest.raises(ValueError, match="sum to 1"):
        stratified_split(samples, {"train": 0.5, "test": 0.4}, seed=0, key="x")


def test_adaptation_splits_and_manifest(tmp_path):
    make_folder_dataset(tmp_path, "AID", AID_SHARED, 10)
    make_folder_dataset(tmp_path, "RSSCN7", list(RSSCN7.classes), 10)
    # the official layout has all 30 AID classes, but only mapped classes are scanned
    s = adaptation_splits("AID", "RSSCN7", tmp_path, val_fraction=0.2, test_fraction=0.3, seed=0,
                          labeled_fraction=0.1)
    assert len(s["source_train"]) + len(s["source_val"]) == 100
    assert len(s["target_test"]) == 21 and len(s["target_train"]) == 49
    assert len(s["target_labeled"]) == 7 and set(s["target_labeled"].samples) <= set(s["target_train"].samples)
    assert sorted({lab for _, lab in s["source_train"].samples}) == list(range(7))
    path = tmp_path / "run" / "manifest.csv"
    digest = write_manifest(path, [tuple(r.split(",")) for r in s.manifest().splitlines()[1:]])
    assert digest == s.manifest_hash()
    rows = read_manifest(path)
    assert ("target_test", f"RSSCN7/{s['target_test'].samples[0][0]}",
            RSSCN7.classes[s["target_test"].samples[0][1]]) in rows
    again = adaptation_splits("AID", "RSSCN7", tmp_path, 0.2, 0.3, 0, 0.1)
    assert again.manifest_hash() == s.manifest_hash()


def test_target_supervised_reference_labels_all_of_target_train(tmp_path):
    make_folder_dataset(tmp_path, "AID", AID_SHARED, 10)
    make_folder_dataset(tmp_path, "RSSCN7", list(RSSCN7.classes), 10)
    s = adaptation_splits("AID", "RSSCN7", tmp_path, 0.2, 0.3, 0, labeled_fraction=1.0)
    assert s["target_labeled"].samples == s["target_train"].samples
    assert not set(s["target_labeled"].samples) & set(s["target_test"].samples)


def test_long_tailed_target_is_a_registered_label_shifted_view(tmp_path):
    """RSSCN7-LT: RSSCN7's images and class map, its target train and test splits subsampled to the same
    10:1 long-tailed prior (class order from a seeded permutation); the source side is untouched."""
    from da.data.domains import long_tail_order

    make_folder_dataset(tmp_path, "AID", AID_SHARED, 10)
    make_folder_dataset(tmp_path, "RSSCN7", list(RSSCN7.classes), 40)
    spec = get_spec("RSSCN7-LT")
    assert spec.folder(tmp_path) == RSSCN7.folder(tmp_path) and spec.long_tail_imbalance == 10
    full = adaptation_splits("AID", "RSSCN7", tmp_path, 0.2, 0.25, 0)
    lt = adaptation_splits("AID", "RSSCN7-LT", tmp_path, 0.2, 0.25, 0)
    assert lt["source_train"].samples == full["source_train"].samples
    order = long_tail_order(spec, lt.classes)
    assert sorted(order) == sorted(lt.classes) and order != lt.classes  # a permutation, not the class order
    for name, per_class in (("target_train", 30), ("target_test", 10)):
        counts = {c: 0 for c in lt.classes}
        for _, lab in lt[name].samples:
            counts[lt.classes[lab]] += 1
        expected = [max(1, round(per_class * 10 ** (-r / 6))) for r in range(7)]
        assert [counts[c] for c in order] == expected, name
        assert set(lt[name].samples) <= set(full[name].samples)
    assert counts[order[0]] / counts[order[-1]] == 10
    again = adaptation_splits("AID", "RSSCN7-LT", tmp_path, 0.2, 0.25, 0)
    assert again.manifest_hash() == lt.manifest_hash()


def test_supervised_splits(tmp_path):
    make_folder_dataset(tmp_path, "mine", ["x", "y"], 10)
    s = supervised_splits("folder:mine", tmp_path, val_fraction=0.2, seed=1)
    assert len(s["train"]) == 16 and len(s["val"]) == 4 and s.classes == ["x", "y"]


def test_rot90_is_exact_and_covers_all_turns():
    img = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    t = RandomRot90()
    seen = set()
    torch.manual_seed(0)
    for _ in range(40):
        out = t(img)
        k = next(k for k in range(4) if torch.equal(out, torch.rot90(img, k, dims=(-2, -1))))
        seen.add(k)
    assert seen == {0, 1, 2, 3}


def test_transforms_shapes_normalisation_and_mixing(tmp_path):
    write_image(tmp_path / "a.jpg", 0, size=40)
    from PIL import Image
    img = Image.open(tmp_path / "a.jpg")
    x = train_transform(32, (0.5,) * 3, (0.5,) * 3)(img)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    e1 = eval_transform(32, (0.5,) * 3, (0.5,) * 3)(img)
    assert torch.equal(e1, eval_transform(32, (0.5,) * 3, (0.5,) * 3)(img))  # evaluation is deterministic
    mix = batch_mixer(5, mixup_alpha=0.4)
    xb, yb = mix(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
    assert yb.shape == (4, 5) and torch.allclose(yb.sum(1), torch.ones(4))
    assert batch_mixer(5) is None


def test_images_per_class_is_a_seeded_subset_before_the_splits(tiny_root):
    """--images-per-class (the smoke preset's 20): at most that many images of each class of each dataset,
    the same ones every time, a new run (hash) only when set, and the data summary still the folder's."""
    from da.config import PRESETS, RunConfig, stage1_config
    from da.data.domains import adaptation_splits, supervised_splits
    from da.data.registry import AID

    full = supervised_splits("AID", tiny_root, 0.25, 0)
    sub = supervised_splits("AID", tiny_root, 0.25, 0, per_class=3)
    assert sum(len(p.samples) for p in sub.parts.values()) == 3 * len(AID.classes)
    assert sub.data == full.data  # the folder's summary: no "not the official release" warning from a subset
    again = supervised_splits("AID", tiny_root, 0.25, 0, per_class=3)
    assert {n: p.samples for n, p in again.parts.items()} == {n: p.samples for n, p in sub.parts.items()}
    other = supervised_splits("AID", tiny_root, 0.25, 1, per_class=3)
    assert {n: p.samples for n, p in other.parts.items()} != {n: p.samples for n, p in sub.parts.items()}
    ada = adaptation_splits("AID", "RSSCN7", tiny_root, 0.25, 0.25, 0, per_class=5)
    counts = {}
    for name in ("target_train", "target_test"):
        for _, label in ada.parts[name].samples:
            counts[label] = counts.get(label, 0) + 1
    assert set(counts.values()) == {5}  # every target class: 5 images, between its train and test splits
    assert RunConfig(images_per_class=0).config_hash() == RunConfig().config_hash()
    smoke = RunConfig(**PRESETS["smoke"])
    assert smoke.images_per_class == 20 and stage1_config(smoke).images_per_class == 20
