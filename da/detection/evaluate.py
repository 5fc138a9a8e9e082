"""Post-processing (class-wise NMS at a chosen IoU) and COCO-style evaluation with pycocotools.

The detector returns up to ``raw_detections_per_img`` per-class boxes without NMS (``da.detection.model``);
``postprocess`` applies the score floor, class-wise NMS (``torchvision.ops.batched_nms``: boxes of different
classes never suppress each other) and keeps the ``detections_per_img`` best, as torchvision's RoI head does,
so that NMS 0.5 and 0.3 are scored from one forward pass.

``coco_metrics`` builds the ground truth and the detections as COCO objects in memory and runs pycocotools'
``COCOeval`` (bbox): mAP@[.5:.95] (``map``), mAP@0.5 (``map_50``), mAP@0.75 and AP per class (at
[.5:.95] and at 0.5), from the precision array (101-point interpolation, areas "all", up to 100 detections).
Ground-truth boxes marked ``difficult`` (VOC) / ``iscrowd`` (COCO) are ignored, as COCO does with crowds.
A class with no ground truth in the split has AP -1 in COCO; here it is NaN and left out of the mean.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch
from torchvision.ops import batched_nms


def postprocess(raw: dict[str, torch.Tensor], nms_iou: float, score_thresh: float, max_dets: int) -> dict:
    """Score floor, class-wise NMS at ``nms_iou`` and the ``max_dets`` highest-scoring boxes of one image."""
    boxes, scores, labels = raw["boxes"], raw["scores"], raw["labels"]
    keep = scores > score_thresh
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes, scores, labels, nms_iou)[:max_dets]  # sorted by decreasing score
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


def coco_metrics(ground_truth: list[dict], detections: list[dict], classes: tuple[str, ...]) -> dict:
    """COCO bbox metrics for images given as ground truth dicts (``boxes`` (N, 4) xyxy, ``labels`` 1..K,
    optional ``difficult``) and detection dicts (``boxes``, ``scores``, ``labels``), in the same order."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(ground_truth) != len(detections):
        raise ValueError(f"coco_metrics: {len(ground_truth)} ground-truth images but {len(detections)} detections")
    images, annotations, results = [], [], []
    for i, (gt, det) in enumerate(zip(ground_truth, detections)):
        images.append({"id": i})
        difficult = gt.get("difficult")
        for j, (box, label) in enumerate(zip(_np(gt["boxes"]), _np(gt["labels"]))):
            crowd = int(bool(difficult[j])) if difficult is not None else 0
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(label),
                                "bbox": _xywh(box), "area": float((box[2] - box[0]) * (box[3] - box[1])),
                                "iscrowd": crowd})
        for box, score, label in zip(_np(det["boxes"]), _np(det["scores"]), _np(det["labels"])):
            results.append({"image_id": i, "category_id": int(label), "bbox": _xywh(box), "score": float(score)})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations,
                    "categories": [{"id": k, "name": name} for k, name in enumerate(classes, start=1)]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
        dets = coco.loadRes(results) if results else _empty_results(coco)
        ev = COCOeval(coco, dets, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # precision: [T iou thresholds, R recall points, K classes, A areas, M max dets]; area "all", 100 dets
    precision = ev.eval["precision"][:, :, :, 0, -1]
    per_class, per_class_50 = {}, {}
    for k, name in enumerate(classes):
        p = precision[:, :, k]
        per_class[name] = _mean_ap(p)
        per_class_50[name] = _mean_ap(p[0])
    has_gt = [name for k, name in enumerate(classes) if any(a["category_id"] == k + 1 for a in annotations)]
    return {
        "map": _nanmean([per_class[c] for c in has_gt]),
        "map_50": _nanmean([per_class_50[c] for c in has_gt]),
        "map_75": _nanmean([_mean_ap(precision[5, :, k]) for k, c in enumerate(classes) if c in has_gt]),
        "ap_per_class": per_class,
        "ap50_per_class": per_class_50,
        # the precision-recall curve at IoU 0.5: interpolated precision at COCO's 101 recall points 0, 0.01, ..., 1
        # (null past the highest recall reached, and for a class without ground truth)
        "pr50_per_class": {name: [None if v < 0 else round(float(v), 4) for v in precision[0, :, k]]
                           for k, name in enumerate(classes)},
        "images": len(images),
        "gt_boxes": len(annotations),
        "detections": len(results),
    }


def _mean_ap(p: np.ndarray) -> float:
    valid = p[p > -1]  # -1: no ground truth for that class (and threshold)
    return float(valid.mean()) if valid.size else float("nan")


def _nanmean(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return float(np.mean(values)) if values else float("nan")


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def _xywh(box) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def _empty_results(coco):
    from pycocotools.coco import COCO
    res = COCO()
    res.dataset = {"images": coco.dataset["images"], "categories": coco.dataset["categories"], "annotations": []}
    res.createIndex()
    return res
