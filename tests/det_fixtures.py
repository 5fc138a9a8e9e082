"""A tiny detection dataset written in the three layouts the readers take: NWPU VHR-10, Pascal VOC, COCO.

The same two positive images and one negative image with the same boxes in each, so the readers can be
checked against each other and against the values below."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

NAMES = ("airplane", "ship", "storage tank")
# (file stem, (width, height), [(x1, y1, x2, y2, label 1..3)])
IMAGES = [
    ("001", (40, 30), [(2, 3, 12, 10, 1), (20, 5, 38, 25, 2)]),
    ("002", (50, 40), [(5, 5, 15, 35, 3)]),
]
NEGATIVE = ("003", (32, 32))
COCO_CATEGORY_IDS = (3, 7, 11)  # gaps, as COCO's own ids have, mapped onto 1..3


def _image(path: Path, size, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def make_nwpu(root: Path) -> Path:
    folder = root / "NWPU-VHR-10"
    for i, (stem, size, boxes) in enumerate(IMAGES):
        _image(folder / "positive image set" / f"{stem}.jpg", size, i)
        (folder / "ground truth").mkdir(parents=True, exist_ok=True)
        text = "".join(f"({x1},{y1}),({x2},{y2}),{c}\n" for x1, y1, x2, y2, c in boxes)
        (folder / "ground truth" / f"{stem}.txt").write_text(text + "\n")  # a trailing blank line, as in the release
    _image(folder / "negative image set" / f"{NEGATIVE[0]}.jpg", NEGATIVE[1], 9)
    return folder


def make_voc(root: Path) -> Path:
    folder = root / "voc"
    for i, (stem, (w, h), boxes) in enumerate(IMAGES):
        _image(folder / "JPEGImages" / f"{stem}.jpg", (w, h), i)
        objs = "".join(
            f"<object><name>{NAMES[c - 1]}</name><difficult>{int(j == 1)}</difficult><bndbox><xmin>{x1}</xmin>"
            f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
            for j, (x1, y1, x2, y2, c) in enumerate(boxes))
        (folder / "Annotations").mkdir(parents=True, exist_ok=True)
        (folder / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>{w}</width><height>{h}</height>"
            f"<depth>3</depth></size>{objs}</annotation>")
    return folder


def make_coco(root: Path) -> Path:
    folder = root / "coco"
    images, anns = [], []
    for i, (stem, (w, h), boxes) in enumerate(IMAGES + [(NEGATIVE[0], NEGATIVE[1], [])]):
        _image(folder / "images" / f"{stem}.jpg", (w, h), i if boxes else 9)
        images.append({"id": 100 + i, "file_name": f"{stem}.jpg", "width": w, "height": h})
        for x1, y1, x2, y2, c in boxes:
            anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": COCO_CATEGORY_IDS[c - 1],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    cats = [{"id": cid, "name": n} for cid, n in zip(COCO_CATEGORY_IDS, NAMES)][::-1]  # order must not matter
    (folder / "instances.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return folder


def make_nwpu_many(root: Path, n: int = 12, size: int = 96) -> Path:
    """``n`` NWPU-layout images of ``size`` px, each with one or two bright rectangles (classes 1..3) on
    noise, for end-to-end runs that must split into non-empty train, val and test."""
    folder = root / "NWPU-VHR-10"
    rng = np.random.default_rng(0)
    (folder / "ground truth").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
        lines = []
        for j in range(1 + i % 2):
            w, h = (int(v) for v in rng.integers(14, 36, 2))
            x1, y1 = (int(v) for v in rng.integers(0, size - 36, 2))
            c = 1 + (i + j) % 3
            img[y1:y1 + h, x1:x1 + w, c - 1] = 255
            lines.append(f"({x1},{y1}),({x1 + w},{y1 + h}),{c}\n")
        path = folder / "positive image set" / f"{i + 1:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path)
        (folder / "ground truth" / f"{i + 1:03d}.txt").write_text("".join(lines))
    return folder
