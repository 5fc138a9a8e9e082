"""Detection datasets: NWPU VHR-10, Pascal VOC and COCO layouts read into one in-memory form.

Every reader returns a ``DetectionSet``: a list of ``DetectionSample`` (image path, boxes ``(N, 4)`` float32
``x1, y1, x2, y2`` in pixels of the image as stored, labels ``(N,)`` int64 in ``1..K``, image size) and the K
class names (label ``i`` is ``classes[i - 1]``; 0 is left to the background, as torchvision's detectors
expect).  Boxes are checked on reading (``x2 > x1``, ``y2 > y1``, inside the image within ``BOX_TOLERANCE``
pixels) so that a bad annotation fails here, with its file and line, rather than as a NaN loss later.

``split_by_image`` makes a seeded train / val / test split by image, stratified approximately by the rarest
class an image holds, with a manifest a run can record.
"""

from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from da.data.domains import CONTENT_FINGERPRINT
from da.data.registry import IMAGE_EXTENSIONS

# Annotations are drawn by hand and rounded, and VOC counts pixels from 1: a box may overhang the image by
# this much without being an error.  Anything further out is a wrong box or a box for another image size.
BOX_TOLERANCE = 1.0


class DetectionDataError(ValueError):
    """An annotation that cannot be read or a box that cannot be right; the message names the file."""


@dataclass(frozen=True)
class DetectionSample:
    """One image and its boxes; ``image_size`` is ``(height, width)`` as torchvision's ``canvas_size``."""

    image_path: Path
    boxes: torch.Tensor  # (N, 4) float32, x1 y1 x2 y2 in pixels
    labels: torch.Tensor  # (N,) int64 in 1..K
    image_size: tuple[int, int]
    difficult: torch.Tensor = field(default=None)  # (N,) bool: VOC "difficult", COCO "iscrowd"

    def __post_init__(self):
        if self.difficult is None:
            object.__setattr__(self, "difficult", torch.zeros(len(self.labels), dtype=torch.bool))

    @property
    def num_boxes(self) -> int:
        return int(self.labels.numel())


@dataclass
class DetectionSet:
    samples: list[DetectionSample]
    classes: tuple[str, ...]
    root: Path  # image paths in manifests are written relative to it

    def __len__(self) -> int:
        return len(self.samples)

    def num_boxes(self) -> int:
        return sum(s.num_boxes for s in self.samples)

    def boxes_per_class(self) -> dict[str, int]:
        counts = Counter()
        for s in self.samples:
            counts.update(s.labels.tolist())
        return {name: counts.get(i + 1, 0) for i, name in enumerate(self.classes)}

    def relative(self, sample: DetectionSample) -> str:
        try:
            return sample.image_path.relative_to(self.root).as_posix()
        except ValueError:
            return sample.image_path.as_posix()

    def fingerprint(self) -> str:
        """``content-sha256:`` + sha256 over the class names and, per image, its path, the sha256 of its bytes
        and its boxes, labels and difficult flags as parsed: changes when an image is added, removed or
        replaced or an annotation relabelled or moved, not when the same files are copied elsewhere (as
        classification's :meth:`da.data.domains.Splits.fingerprint`)."""
        h = hashlib.sha256(json.dumps(list(self.classes)).encode())
        for s in sorted(self.samples, key=self.relative):
            boxes = np.round(s.boxes.double().numpy(), 3).tolist()
            h.update(json.dumps([self.relative(s), hashlib.sha256(s.image_path.read_bytes()).hexdigest(), boxes,
                                 s.labels.tolist(), s.difficult.tolist()]).encode() + b"\n")
        return CONTENT_FINGERPRINT + h.hexdigest()


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file's header (PIL does not decode the pixels for this)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except OSError as e:
        raise DetectionDataError(f"{path}: cannot read the image ({e}); replace the file or drop its annotation")
    return h, w


def check_boxes(boxes: np.ndarray, size: tuple[int, int], where: list[str]) -> None:
    """Raise on a degenerate box or one outside the image; ``where[i]`` names box i (file and line/object)."""
    h, w = size
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        if not (x2 > x1 and y2 > y1):
            raise DetectionDataError(f"{where[i]}: degenerate box ({x1:g}, {y1:g}, {x2:g}, {y2:g}): needs x2 > x1 "
                                     "and y2 > y1; fix or delete the annotation")
        t = BOX_TOLERANCE
        if x1 < -t or y1 < -t or x2 > w + t or y2 > h + t:
            raise DetectionDataError(f"{where[i]}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) lies outside the "
                                     f"{w}x{h} image (tolerance {t:g} px); was it drawn on a differently sized "
                                     "copy of the image?")


def _sample(image_path: Path, boxes: list, labels: list, size: tuple[int, int], where: list[str],
            difficult: list | None = None) -> DetectionSample:
    arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    check_boxes(arr, size, where)
    return DetectionSample(
        image_path=image_path,
        boxes=torch.from_numpy(arr),
        labels=torch.as_tensor(labels, dtype=torch.int64).reshape(-1),
        image_size=size,
        difficult=torch.as_tensor(difficult if difficult is not None else [False] * len(labels),
                                  dtype=torch.bool).reshape(-1),
    )


# --- NWPU VHR-10 --------------------------------------------------------------------------------------------

NWPU_CLASSES = ("airplane", "ship", "storage tank", "baseball diamond", "tennis court", "basketball court",
                "ground track field", "harbor", "bridge", "vehicle")

_NUM = r"\s*(-?\d+(?:\.\d*)?)\s*"
# "(x1,y1),(x2,y2),c"; spaces are tolerated because some copies of the release have them.
_NWPU_LINE = re.compile(rf"^\s*\({_NUM},{_NUM}\)\s*,\s*\({_NUM},{_NUM}\)\s*,\s*(\d+)\s*$")


def parse_nwpu_file(path: Path, size: tuple[int, int], image_path: Path) -> DetectionSample:
    boxes, labels, where = [], [], []
    text = path.read_text(encoding="utf-8-sig")  # some editors leave a byte-order mark
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue  # the release ends some files with blank lines
        m = _NWPU_LINE.match(line)
        if m is None:
            raise DetectionDataError(f"{path}:{lineno}: cannot read {line.strip()!r}; expected "
                                     "'(x1,y1),(x2,y2),class' with class 1-10")
        c = int(m.group(5))
        if not 1 <= c <= len(NWPU_CLASSES):
            raise DetectionDataError(f"{path}:{lineno}: class {c} is not one of NWPU VHR-10's 1-10")
        boxes.append([float(m.group(i)) for i in range(1, 5)])
        labels.append(c)
        where.append(f"{path}:{lineno}")
    return _sample(image_path, boxes, labels, size, where)


def read_nwpu_vhr10(folder: str | Path, include_negatives: bool = True) -> DetectionSet:
    """The release's layout: ``positive image set/NNN.jpg`` with ``ground truth/NNN.txt``, and optionally
    ``negative image set/*.jpg`` (images without objects, no ground truth files).  The shared copy has no
    negative set; where one is present its images come back with no boxes (they teach the detector the
    background)."""
    folder = Path(folder)
    pos, gt, neg = folder / "positive image set", folder / "ground truth", folder / "negative image set"
    for d in (pos, gt):
        if not d.is_dir():
            raise DetectionDataError(f"{d}: missing; NWPU VHR-10 needs 'positive image set/' and 'ground truth/' "
                                     f"under {folder} as in the release")
    images = {p.stem: p for p in sorted(pos.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}
    truths = {p.stem: p for p in sorted(gt.iterdir()) if p.suffix.lower() == ".txt"}
    if set(images) != set(truths):
        only_img = sorted(set(images) - set(truths))[:5]
        only_gt = sorted(set(truths) - set(images))[:5]
        raise DetectionDataError(f"{folder}: images and ground truth files do not pair up (images without "
                                 f"ground truth: {only_img}; ground truth without image: {only_gt}); every "
                                 "positive image needs its NNN.txt")
    samples = [parse_nwpu_file(truths[k], image_size(images[k]), images[k]) for k in sorted(images)]
    if include_negatives and neg.is_dir():
        for p in sorted(neg.iterdir()):
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                samples.append(_sample(p, [], [], image_size(p), []))
    return DetectionSet(samples, NWPU_CLASSES, folder)


# --- Pascal VOC ---------------------------------------------------------------------------------------------

def read_voc(annotation_dir: str | Path, image_dir: str | Path, classes: tuple[str, ...] | None = None,
             root: str | Path | None = None) -> DetectionSet:
    """One xml per image (``filename``, ``size``, ``object/name``, ``object/bndbox``, ``object/difficult``).

    Coordinates are kept as written (VOC's are 1-based pixel indices, so a box may reach ``width``; the
    1 px tolerance accepts that).  ``classes`` fixes the names and their order; without it they are the
    sorted names found.  The image size comes from ``size`` when the xml has it, else from the image."""
    annotation_dir, image_dir = Path(annotation_dir), Path(image_dir)
    parsed = []
    for xml in sorted(annotation_dir.glob("*.xml")):
        try:
            tree = ET.parse(xml).getroot()
        except ET.ParseError as e:
            raise DetectionDataError(f"{xml}: not valid xml ({e}); fix or remove the file")
        fname = tree.findtext("filename")
        if not fname:
            raise DetectionDataError(f"{xml}: no <filename>; VOC xml names its image in <filename>")
        image_path = image_dir / fname.strip()
        if not image_path.is_file():
            raise DetectionDataError(f"{xml}: its image {image_path} does not exist")
        objs = []
        for j, obj in enumerate(tree.findall("object"), start=1):
            where = f"{xml}: object {j}"
            name = (obj.findtext("name") or "").strip()
            bb = obj.find("bndbox")
            if not name or bb is None:
                raise DetectionDataError(f"{where}: needs <name> and <bndbox>")
            try:
                box = [float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax")]
            except (TypeError, ValueError):
                raise DetectionDataError(f"{where}: <bndbox> needs numeric xmin, ymin, xmax, ymax")
            objs.append((name, box, (obj.findtext("difficult") or "0").strip() == "1", where))
        w, h = tree.findtext("size/width"), tree.findtext("size/height")
        size = (int(float(h)), int(float(w))) if w and h and float(w) > 0 and float(h) > 0 else image_size(image_path)
        parsed.append((image_path, size, objs))
    if not parsed:
        raise DetectionDataError(f"{annotation_dir}: no .xml files; point annotation_dir at VOC's Annotations/")
    names = tuple(classes) if classes is not None else tuple(sorted({o[0] for _, _, objs in parsed for o in objs}))
    index = {n: i + 1 for i, n in enumerate(names)}
    samples = []
    for image_path, size, objs in parsed:
        for name, _, _, where in objs:
            if name not in index:
                raise DetectionDataError(f"{where}: class {name!r} is not in the given classes {list(names)}")
        samples.append(_sample(image_path, [o[1] for o in objs], [index[o[0]] for o in objs], size,
                               [o[3] for o in objs], [o[2] for o in objs]))
    return DetectionSet(samples, names, Path(root) if root is not None else image_dir)


# --- COCO ---------------------------------------------------------------------------------------------------

def read_coco(json_path: str | Path, image_dir: str | Path, root: str | Path | None = None) -> DetectionSet:
    """COCO json: ``images`` (id, file_name, width, height), ``annotations`` (image_id, bbox ``[x, y, w, h]``,
    category_id, iscrowd) and ``categories`` (id, name).  Category ids are mapped in increasing order onto
    ``1..K`` (COCO's own ids have gaps); crowd regions are kept with ``difficult`` set.  Images without
    annotations are kept with no boxes."""
    json_path, image_dir = Path(json_path), Path(image_dir)
    try:
        doc = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DetectionDataError(f"{json_path}: cannot read the COCO json ({e})")
    for key in ("images", "annotations", "categories"):
        if key not in doc:
            raise DetectionDataError(f"{json_path}: no {key!r} list; a COCO detection file has images, "
                                     "annotations and categories")
    cats = sorted(doc["categories"], key=lambda c: c["id"])
    label_of = {c["id"]: i + 1 for i, c in enumerate(cats)}
    by_image: dict = {im["id"]: [] for im in doc["images"]}
    for n, ann in enumerate(doc["annotations"]):
        where = f"{json_path}: annotation {ann.get('id', '?')} (entry {n})"
        if ann.get("image_id") not in by_image:
            raise DetectionDataError(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
        if ann.get("category_id") not in label_of:
            raise DetectionDataError(f"{where}: category_id {ann.get('category_id')!r} is not in 'categories'")
        bbox = ann.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise DetectionDataError(f"{where}: bbox must be [x, y, width, height]")
        x, y, w, h = (float(v) for v in bbox)
        by_image[ann["image_id"]].append(([x, y, x + w, y + h], label_of[ann["category_id"]],
                                          bool(ann.get("iscrowd", 0)), where))
    samples = []
    for im in sorted(doc["images"], key=lambda im: im["id"]):
        image_path = image_dir / im["file_name"]
        size = (int(im["height"]), int(im["width"])) if im.get("height") and im.get("width") else image_size(image_path)
        anns = by_image[im["id"]]
        samples.append(_sample(image_path, [a[0] for a in anns], [a[1] for a in anns], size,
                               [a[3] for a in anns], [a[2] for a in anns]))
    return DetectionSet(samples, tuple(c["name"] for c in cats), Path(root) if root is not None else image_dir)


# --- splits -------------------------------------------------------------------------------------------------

SPLITS = ("train", "val", "test")


@dataclass
class DetectionSplits:
    train: list[DetectionSample]
    val: list[DetectionSample]
    test: list[DetectionSample]
    classes: tuple[str, ...]
    rows: list[tuple[str, str]]  # (image relative to the set's root, split), sorted by image

    def __getitem__(self, name: str) -> list[DetectionSample]:
        return getattr(self, name)

    def manifest(self) -> list[tuple[str, str]]:
        return list(self.rows)

    def write_manifest(self, path: str | Path) -> None:
        Path(path).write_text("image,split\n" + "".join(f"{img},{s}\n" for img, s in self.rows))


def split_by_image(dataset: DetectionSet, val_fraction: float = 0.1, test_fraction: float = 0.2,
                   seed: int = 0) -> DetectionSplits:
    """Seeded split by image, stratified approximately by each image's rarest class.

    Images are grouped by the class (over the whole set) with the fewest boxes among those they hold; images
    without boxes form their own group.  Each group is shuffled with the seed and the groups are laid end to
    end; walking that order, each image goes to the split furthest behind its share so far.  So every group,
    and the whole set, gets its shares to within one image, and a rare class (NWPU's bridges, 124 boxes) is
    not left out of val or test by chance.  Images with several classes make the stratification of the
    commoner classes approximate."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction={val_fraction}, test_fraction={test_fraction}: each must be in [0, 1) "
                         "and their sum below 1 so that training keeps images")
    counts = Counter()
    for s in dataset.samples:
        counts.update(s.labels.tolist())

    def key(s: DetectionSample) -> int:
        labels = set(s.labels.tolist())
        return min(labels, key=lambda c: (counts[c], c)) if labels else 0

    rng = np.random.default_rng(seed)
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(dataset.samples):
        groups.setdefault(key(s), []).append(i)
    order = []
    for k in sorted(groups):
        idx = groups[k]
        order.extend(idx[j] for j in rng.permutation(len(idx)))
    shares = np.array([1 - val_fraction - test_fraction, val_fraction, test_fraction])
    taken = np.zeros(3)
    assigned = {}
    for n, i in enumerate(order, start=1):
        s = int(np.argmax(shares * n - taken))  # furthest behind; ties go to train, then val
        taken[s] += 1
        assigned[i] = SPLITS[s]
    parts = {name: [dataset.samples[i] for i in range(len(dataset.samples)) if assigned[i] == name]
             for name in SPLITS}
    rows = sorted((dataset.relative(dataset.samples[i]), assigned[i]) for i in range(len(dataset.samples)))
    return DetectionSplits(parts["train"], parts["val"], parts["test"], dataset.classes, rows)


# --- registry -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DetectionDatasetSpec:
    name: str
    folder: str  # under the data root
    layout: str  # "nwpu" | "voc" | "coco"
    classes: tuple[str, ...]
    num_images: int  # images with objects
    num_boxes: int
    boxes_per_class: tuple[int, ...]  # in the order of classes
    citation: str
    notes: str = ""


NWPU_VHR10 = DetectionDatasetSpec(
    name="NWPU-VHR-10",
    folder="NWPU-VHR-10",
    layout="nwpu",
    classes=NWPU_CLASSES,
    num_images=650,
    num_boxes=3896,
    # Counted in the ground truth files; the release's readme says 477 vehicles, its files hold 598.
    boxes_per_class=(757, 302, 655, 390, 524, 159, 163, 224, 124, 598),
    citation="Cheng, Han, Zhou, Guo. Multi-class geospatial object detection and geographic image "
             "classification based on collection of part detectors. ISPRS J. 2014; Cheng, Zhou, Han. Learning "
             "rotation-invariant convolutional neural networks for object detection in VHR optical remote "
             "sensing images. IEEE TGRS 2016.",
    notes="layout: <root>/NWPU-VHR-10/positive image set/NNN.jpg, <root>/NWPU-VHR-10/ground truth/NNN.txt "
          "('(x1,y1),(x2,y2),c' lines), optional <root>/NWPU-VHR-10/negative image set/ (150 images in the "
          "release, absent from the shared copy).",
)

DETECTION_DATASETS = {NWPU_VHR10.name: NWPU_VHR10}


def load_detection(name: str, root: str | Path, include_negatives: bool = True) -> DetectionSet:
    """A registered detection dataset from its folder under the data root."""
    if name not in DETECTION_DATASETS:
        raise ValueError(f"unknown detection dataset {name!r}; known: {', '.join(sorted(DETECTION_DATASETS))}")
    spec = DETECTION_DATASETS[name]
    folder = Path(root) / spec.folder
    if not folder.is_dir():
        raise DetectionDataError(f"{folder}: not found; {spec.notes}")
    if spec.layout == "nwpu":
        return read_nwpu_vhr10(folder, include_negatives=include_negatives)
    raise NotImplementedError(f"{spec.name}: layout {spec.layout!r} has no loader here; use read_voc or read_coco")
