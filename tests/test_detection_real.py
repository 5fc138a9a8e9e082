"""The detection foundations on the real NWPU VHR-10 copy in ../shared/data (slow: reads 650 files)."""

import numpy as np
import pytest

from conftest import real_data_root
from da.detection import NWPU_VHR10, load_detection, split_by_image
from da.detection.anchors import (anchor_generator_args, boxes_wh, default_anchor_shapes, fit_anchors,
                                  mean_best_iou)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nwpu():
    root = real_data_root()
    if not (root / NWPU_VHR10.folder).is_dir():
        pytest.skip(f"NWPU VHR-10 not found under {root}; set DA_DATA_ROOT")
    return load_detection("NWPU-VHR-10", root)


def test_counts_match_the_registry(nwpu):
    assert len(nwpu) == NWPU_VHR10.num_images == 650  # the shared copy has no negative set
    assert nwpu.num_boxes() == NWPU_VHR10.num_boxes == 3896
    assert tuple(nwpu.boxes_per_class().values()) == NWPU_VHR10.boxes_per_class
    assert max(max(s.image_size) for s in nwpu.samples) <= 704  # downscaled copy


def test_fitted_anchors_beat_the_defaults(nwpu):
    sp = split_by_image(nwpu, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert (len(sp.train), len(sp.val), len(sp.test)) == (455, 65, 130)
    wh = np.concatenate([boxes_wh(s.boxes) for s in sp.train])
    fit = fit_anchors(wh, k=9, seed=0)
    default = mean_best_iou(wh, default_anchor_shapes())
    args = anchor_generator_args(fit.anchors, levels=5)
    grid = mean_best_iou(wh, args.shapes())
    print(f"\n{len(wh)} training boxes; fitted anchors (w, h): {np.round(fit.anchors, 1).tolist()}")
    print(f"mean best IoU: fitted {fit.mean_iou:.3f}, as AnchorGenerator grid {grid:.3f}, defaults {default:.3f}")
    print(f"AnchorGenerator sizes {args.sizes}, ratios {args.aspect_ratios[0]}")
    assert fit.mean_iou >= default


def test_tiny_training_on_real_images(nwpu, tmp_path):
    """Three SGD steps of the full detector (offline ImageNet Lite0, fitted anchors, OHEM) on real images,
    scored on a few val and test images: the record says what ran on what."""
    import json

    from da.detection.config import DetectionConfig
    from da.detection.engine import run_detection

    cfg = DetectionConfig(data_root=str(real_data_root()), out=str(tmp_path), epochs=1, max_steps_per_epoch=3,
                          batch_size=2, max_eval_images=4, anchors="fitted", sampler="ohem", min_size=384,
                          max_size=384, num_workers=0)
    record = json.loads((run_detection(cfg) / "record.json").read_text())
    assert record["split"] == {"seed": 0, "train": 455, "val": 65, "test": 130, "train_boxes": 2773,
                               "test_boxes": record["split"]["test_boxes"]}
    assert record["init"]["loaded"] == record["init"]["total"] > 250  # every trunk tensor from ImageNet
    assert record["anchors"]["fitted_mean_best_iou"] > record["anchors"]["default_mean_best_iou"]
    assert len(record["history"]) == 1 and record["history"][0]["train"]["loss"] > 0
    for key in ("nms_0.5", "nms_0.3"):
        m = record["test"][key]
        assert m["images"] == 4 and 0 <= m["map"] <= m["map_50"] <= 1
        assert set(m["ap50_per_class"]) == set(NWPU_VHR10.classes)
    assert record["test"]["nms_0.3"]["detections"] <= record["test"]["nms_0.5"]["detections"]
