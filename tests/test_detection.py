"""The detection foundations (issue 20): readers, split, box transforms, anchor fit."""

import json

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.transforms import v2

from det_fixtures import IMAGES, NAMES, make_coco, make_nwpu, make_voc
from da.detection import (DetectionDataError, DetectionSample, DetectionSet, load_detection, read_coco,
                          read_nwpu_vhr10, read_voc, split_by_image)
from da.detection.anchors import (anchor_generator_args, default_anchor_shapes, fit_anchors, mean_best_iou,
                                  shape_iou)
from da.detection.transforms import RandomRot90, detection_transforms, rot90_boxes, sample_inputs

EXPECTED_BOXES = [[[2, 3, 12, 10], [20, 5, 38, 25]], [[5, 5, 15, 35]]]
EXPECTED_LABELS = [[1, 2], [3]]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("det")
    return {"nwpu": make_nwpu(root), "voc": make_voc(root), "coco": make_coco(root), "root": root}


# --- readers ------------------------------------------------------------------------------------------------

def _check_positives(ds):
    for s, boxes, labels, (_, (w, h), _) in zip(ds.samples, EXPECTED_BOXES, EXPECTED_LABELS, IMAGES):
        assert s.boxes.dtype == torch.float32 and s.labels.dtype == torch.int64
        assert s.boxes.tolist() == boxes and s.labels.tolist() == labels
        assert s.image_size == (h, w)


def test_nwpu_reader(layouts):
    ds = read_nwpu_vhr10(layouts["nwpu"])
    assert ds.classes[:3] == NAMES and len(ds.classes) == 10
    assert [s.image_path.name for s in ds.samples] == ["001.jpg", "002.jpg", "003.jpg"]
    _check_positives(ds)
    neg = ds.samples[2]  # the negative set: no boxes, shape (0, 4) so that collation still works
    assert neg.boxes.shape == (0, 4) and neg.labels.shape == (0,) and neg.image_size == (32, 32)
    assert ds.num_boxes() == 3 and ds.boxes_per_class()["ship"] == 1 and ds.boxes_per_class()["vehicle"] == 0
    assert len(read_nwpu_vhr10(layouts["nwpu"], include_negatives=False)) == 2
    assert len(load_detection("NWPU-VHR-10", layouts["root"])) == 3


def test_voc_reader_keeps_difficult(layouts):
    ds = read_voc(layouts["voc"] / "Annotations", layouts["voc"] / "JPEGImages", classes=NAMES)
    _check_positives(ds)
    assert ds.samples[0].difficult.tolist() == [False, True]
    # without given classes the names are the sorted names found: airplane, ship, storage tank (already sorted)
    assert read_voc(layouts["voc"] / "Annotations", layouts["voc"] / "JPEGImages").classes == NAMES


def test_coco_reader_maps_category_ids(layouts):
    ds = read_coco(layouts["coco"] / "instances.json", layouts["coco"] / "images")
    assert ds.classes == NAMES  # ids 3, 7, 11 -> labels 1, 2, 3 whatever the list order
    _check_positives(ds)
    assert ds.samples[2].num_boxes == 0


def _nwpu_copy(tmp_path, text):
    folder = make_nwpu(tmp_path)
    (folder / "ground truth" / "002.txt").write_text(text)
    return folder


@pytest.mark.parametrize("text, line, words", [
    ("(5,5),(15,35),3\n(5,5),(15,35)\n", 2, "cannot read"),
    ("(5,5),(15,35),3\n(5,5),(15,35),11\n", 2, "class 11"),
    ("\n(15,5),(5,35),3\n", 2, "degenerate"),
    ("(5,5),(5,35),3\n", 1, "degenerate"),
    ("(5,5),(52,35),3\n", 1, "outside"),  # width 50, 1 px tolerance: 52 is out
])
def test_nwpu_errors_name_file_and_line(tmp_path, text, line, words):
    with pytest.raises(DetectionDataError, match=words) as e:
        read_nwpu_vhr10(_nwpu_copy(tmp_path, text))
    assert f"002.txt:{line}:" in str(e.value)


def test_nwpu_tolerance_and_spaces(tmp_path):
    ds = read_nwpu_vhr10(_nwpu_copy(tmp_path, "( 5, 5),(51 ,35), 3\n"))  # 51 = width + 1: accepted
    assert ds.samples[1].boxes.tolist() == [[5, 5, 51, 35]]


def test_nwpu_missing_ground_truth(tmp_path):
    folder = make_nwpu(tmp_path)
    (folder / "ground truth" / "002.txt").unlink()
    with pytest.raises(DetectionDataError, match=r"images without ground truth: \['002'\]"):
        read_nwpu_vhr10(folder)


def test_voc_and_coco_errors(layouts, tmp_path):
    xml = tmp_path / "a" / "x.xml"
    xml.parent.mkdir()
    xml.write_text("<annotation><filename>001.jpg</filename><size><width>40</width><height>30</height></size>"
                   "<object><name>ship</name><bndbox><xmin>9</xmin><ymin>1</ymin><xmax>4</xmax><ymax>5</ymax>"
                   "</bndbox></object></annotation>")
    with pytest.raises(DetectionDataError, match=r"x\.xml: object 1: degenerate"):
        read_voc(xml.parent, layouts["voc"] / "JPEGImages")
    with pytest.raises(DetectionDataError, match="'ship' is not in the given classes"):
        read_voc(xml.parent, layouts["voc"] / "JPEGImages", classes=("airplane",))
    doc = json.loads((layouts["coco"] / "instances.json").read_text())
    doc["annotations"][1]["bbox"] = [20, 5, 0, 20]  # zero width
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(DetectionDataError, match=r"annotation 2 \(entry 1\): degenerate"):
        read_coco(bad, layouts["coco"] / "images")


# --- split --------------------------------------------------------------------------------------------------

def _synthetic_set(n_common=90, n_rare=10):
    def s(i, labels):
        return DetectionSample(image_path=__import__("pathlib").Path(f"/d/{i:03d}.jpg"),
                               boxes=torch.tensor([[0.0, 0.0, 2.0, 2.0]] * len(labels)),
                               labels=torch.tensor(labels, dtype=torch.int64), image_size=(4, 4))
    samples = [s(i, [1, 1]) for i in range(n_common)] + [s(n_common + i, [1, 2]) for i in range(n_rare)]
    return DetectionSet(samples, ("common", "rare"), __import__("pathlib").Path("/d"))


def test_split_is_seeded_and_stratified_by_rarest_class():
    ds = _synthetic_set()
    sp = split_by_image(ds, val_fraction=0.1, test_fraction=0.2, seed=3)
    assert (len(sp.train), len(sp.val), len(sp.test)) == (70, 10, 20)
    # images holding the rare class split 7 / 1 / 2, not left to chance
    assert [sum(2 in s.labels.tolist() for s in sp[n]) for n in ("train", "val", "test")] == [7, 1, 2]
    assert sp.manifest() == split_by_image(ds, 0.1, 0.2, seed=3).manifest()
    other = split_by_image(ds, 0.1, 0.2, seed=4).manifest()
    assert other != sp.manifest() and sorted(r[0] for r in other) == sorted(r[0] for r in sp.manifest())
    assert sp.manifest()[0] == ("000.jpg", dict(sp.manifest())["000.jpg"])
    names = {n: {s.image_path for s in sp[n]} for n in ("train", "val", "test")}
    assert not (names["train"] & names["val"]) and not (names["train"] & names["test"])
    with pytest.raises(ValueError, match="sum below 1"):
        split_by_image(ds, 0.5, 0.5)


def test_split_manifest_file(tmp_path):
    sp = split_by_image(_synthetic_set(8, 2), 0.25, 0.25, seed=0)
    sp.write_manifest(tmp_path / "m.csv")
    lines = (tmp_path / "m.csv").read_text().splitlines()
    assert lines[0] == "image,split" and len(lines) == 11 and lines[1].startswith("000.jpg,")


# --- transforms ---------------------------------------------------------------------------------------------

H, W = 4, 6
BOX = [1.0, 0.5, 4.0, 3.0]


def _image_and_boxes():
    img = torch.zeros(1, H, W, dtype=torch.uint8)
    img[0, 0, 1] = 255  # a marker at row 0, column 1 (pixel centre x=1.5, y=0.5), inside BOX
    return tv_tensors.Image(img), tv_tensors.BoundingBoxes([BOX], format="XYXY", canvas_size=(H, W))


@pytest.mark.parametrize("transform, box, canvas, marker", [
    (v2.RandomHorizontalFlip(1.0), [2, 0.5, 5, 3], (4, 6), (0, 4)),  # x -> 6 - x
    (v2.RandomVerticalFlip(1.0), [1, 1, 4, 3.5], (4, 6), (3, 1)),  # y -> 4 - y
    (RandomRot90((1,)), [0.5, 2, 3, 5], (6, 4), (4, 0)),  # (x, y) -> (y, 6 - x)
    (RandomRot90((2,)), [2, 1, 5, 3.5], (4, 6), (3, 4)),  # (x, y) -> (6 - x, 4 - y)
    (RandomRot90((3,)), [1, 1, 3.5, 4], (6, 4), (1, 3)),  # (x, y) -> (4 - y, x)
])
def test_box_transforms_by_hand(transform, box, canvas, marker):
    img, boxes = _image_and_boxes()
    out_img, out = transform(img, {"boxes": boxes, "labels": torch.tensor([7])})
    assert out["boxes"].tolist() == [box] and tuple(out["boxes"].canvas_size) == canvas
    assert tuple(out_img.shape[-2:]) == canvas and out["labels"].tolist() == [7]
    assert out_img[0, marker[0], marker[1]] == 255 and out_img.sum() == 255  # pixels moved with the box


def test_rot90_matches_torchvision_rotate_and_four_turns_are_identity():
    b = torch.tensor([[1.0, 0.5, 4.0, 3.0], [0.0, 0.0, 6.0, 4.0]])
    for k in (1, 2, 3):
        tv = v2.functional.rotate(tv_tensors.BoundingBoxes(b, format="XYXY", canvas_size=(H, W)), 90 * k,
                                  expand=True)
        assert torch.allclose(rot90_boxes(b, (H, W), k), tv.as_subclass(torch.Tensor), atol=1e-4)
    four = b
    size = (H, W)
    for _ in range(4):
        four, size = rot90_boxes(four, size, 1), (size[1], size[0])
    assert torch.equal(four, b)


def test_rot90_keeps_box_format():
    boxes = tv_tensors.BoundingBoxes([[1.0, 0.5, 3.0, 2.5]], format="XYWH", canvas_size=(H, W))
    out = RandomRot90((1,))(boxes)
    assert out.format == tv_tensors.BoundingBoxFormat.XYWH and out.tolist() == [[0.5, 2.0, 2.5, 3.0]]


def test_train_pipeline_scale_jitter_and_tensor(layouts):
    ds = read_nwpu_vhr10(layouts["nwpu"])
    image, target = sample_inputs(ds.samples[0])
    torch.manual_seed(0)
    t = detection_transforms(train=True, target_size=(80, 80), scale_range=(0.5, 0.5))
    out_img, out = t(image, target)
    assert out_img.dtype == torch.float32 and float(out_img.max()) <= 1.0
    # the 40x30 image fitted into 80x80 times 0.5: longer side 40, so scale 1 whatever the rotation
    assert sorted(out_img.shape[-2:]) == [30, 40]
    areas = sorted(((b[2] - b[0]) * (b[3] - b[1])).item() for b in out["boxes"])
    assert areas == [70.0, 360.0] and sorted(out["labels"].tolist()) == [1, 2]
    t = detection_transforms(train=True, target_size=(80, 80), scale_range=(1.0, 1.0))
    out_img, out = t(image, target)
    assert sorted(out_img.shape[-2:]) == [60, 80]  # scale 2: areas x4
    assert sorted(((b[2] - b[0]) * (b[3] - b[1])).item() for b in out["boxes"]) == [280.0, 1440.0]
    ev_img, ev = detection_transforms(train=False)(image, target)
    assert ev["boxes"].tolist() == EXPECTED_BOXES[0] and ev_img.shape == (3, 30, 40)
    with pytest.raises(TypeError, match="ToImage"):
        RandomRot90((1,))(__import__("PIL.Image").Image.new("RGB", (4, 4)))


# --- anchors ------------------------------------------------------------------------------------------------

def test_shape_iou_by_hand():
    # (10, 20) vs (20, 10): overlap 10 x 10 = 100, union 200 + 200 - 100 = 300
    assert shape_iou([[10, 20]], [[20, 10], [10, 20], [5, 5]])[0].tolist() == pytest.approx([1 / 3, 1.0, 25 / 200])
    assert mean_best_iou([[10, 20], [4, 4]], [[10, 20], [8, 8]]) == pytest.approx((1 + 16 / 64) / 2)


CENTRES = np.array([[10.0, 10.0], [40.0, 20.0], [30.0, 90.0]])


def _clusters(seed=0, n=200, noise=0.05):
    rng = np.random.default_rng(seed)
    return np.concatenate([c * (1 + noise * rng.standard_normal((n, 2))) for c in CENTRES])


def test_fit_recovers_known_clusters():
    fit = fit_anchors(_clusters(), k=3, seed=0)
    assert fit.anchors == pytest.approx(CENTRES, rel=0.03)  # sorted by area: 100, 800, 2700
    assert fit.mean_iou > 0.9
    assert np.bincount(fit.assignment).tolist() == [200, 200, 200]


def test_fit_is_seeded():
    wh = np.random.default_rng(1).uniform(5, 100, (300, 2))
    a, b = fit_anchors(wh, k=5, seed=7), fit_anchors(wh, k=5, seed=7)
    assert np.array_equal(a.anchors, b.anchors) and a.mean_iou == b.mean_iou
    assert np.all(np.diff(a.anchors.prod(axis=1)) >= 0)
    with pytest.raises(ValueError, match="cannot make 5 anchors"):
        fit_anchors(wh[:3], k=5)


def test_generator_args_follow_torchvision_convention():
    anchors = np.array([[16.0, 8.0], [16.0, 32.0], [64.0, 64.0]])  # sqrt areas 11.31, 22.63, 64
    args = anchor_generator_args(anchors, levels=3)
    assert args.sizes == ((11.31,), (22.63,), (64.0,))
    assert args.aspect_ratios == ((0.5, 1.0, 2.0),) * 3  # h / w
    gen = AnchorGenerator(args.sizes, args.aspect_ratios)
    # torchvision's cell anchors for level 0, ratio 0.5 (h / w): w = 11.31 / sqrt(.5) = 16, h = 8
    cell = gen.cell_anchors[0]
    wh = torch.stack([cell[:, 2] - cell[:, 0], cell[:, 3] - cell[:, 1]], 1)
    assert wh[0].tolist() == pytest.approx([16.0, 8.0], abs=1.0)  # torchvision rounds to whole pixels
    assert mean_best_iou(anchors, args.shapes()) == pytest.approx(1.0, abs=1e-3)
    # 3 anchors over 5 levels: sizes resampled geometrically, finest smallest
    five = anchor_generator_args(anchors, levels=5).sizes
    assert [s[0] for s in five] == pytest.approx([11.31, 16.0, 22.63, 38.05, 64.0], abs=0.01)


def test_default_shapes():
    d = default_anchor_shapes()
    assert d.shape == (15, 2)
    assert d[0] == pytest.approx([32 / np.sqrt(0.5), 32 * np.sqrt(0.5)])  # ratio 0.5: wide
