"""The detection run's config: a typed dataclass with defaults, hashed into the run directory's name.

Defaults are sized for a CPU: images resized so that the longer side is 512 (NWPU VHR-10's are at most 704),
a 128-channel FPN, 512 RPN proposals in training of which 128 are sampled per image; torchvision's own
Faster R-CNN uses 800 / 1333, 256 channels, 2,000 and 512.  Fields marked ``_nohash`` do not change
the result (where the data lives, the output folder, the device, progress bars) and stay out of the hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from da.config import type_problem
from da.detection.data import DETECTION_DATASETS  # the registry holds the only list of names
from da.detection.roi_heads import BOX_CLS_LOSSES, SAMPLERS
from da.models.backbones import OFFLINE_BACKBONE, OFFLINE_WEIGHTS

ANCHOR_CHOICES = ("default", "fitted")
NMS_DEFAULTS = (0.5, 0.3)  # torchvision's Faster R-CNN default and the article's


def _nohash(default: Any) -> Any:
    return field(default=default, metadata={"hash": False})


# Named sets of fields for ``da-detect --preset`` (applied before --config and flags).
PRESETS = {
    # the committed NWPU VHR-10 runs (da/detection/sweeps/det_nwpu.yaml): about 50 min per run on 2 CPU cores
    "nwpu-cpu": dict(epochs=3, lr=0.01, warmup_iters=50, min_size=512, max_size=512),
    # every step of the pipeline in a minute or two on a CPU: a few steps on small images, a few eval images
    "smoke": dict(epochs=1, batch_size=2, max_steps_per_epoch=4, max_eval_images=8, min_size=256, max_size=256,
                  rpn_post_nms_train=128, rpn_post_nms_test=100, roi_batch_size=64, ohem_batch_size=32,
                  warmup_iters=2, lr=0.005),
}


class DetectionConfigError(ValueError):
    """A config value that cannot work; the message names the field."""


@dataclass(frozen=True)
class DetectionConfig:
    dataset: str = "NWPU-VHR-10"
    # read when a config is made, not when this module is imported (a test or a job may set it later)
    data_root: str = field(default_factory=lambda: os.environ.get("DA_DATA_ROOT", "data"), metadata={"hash": False})
    out: str = _nohash("runs/detection")
    split_seed: int = 0  # the train/val/test split by image; fixed while ``seed`` varies
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0

    backbone: str = OFFLINE_BACKBONE
    # imagenet | tf_efficientnet_lite0 (the offline ImageNet file) | none | a stage-1 run dir or checkpoint
    weights: str = OFFLINE_WEIGHTS
    frozen_bn: bool = True  # batch-norm statistics and affine kept from the weights (batches of 4 are too few)
    anchors: str = "default"
    anchor_k: int = 9

    fpn_channels: int = 128  # torchvision's detectors use 256
    min_size: int = 512
    max_size: int = 512
    rpn_pre_nms_train: int = 1000
    rpn_post_nms_train: int = 512
    rpn_pre_nms_test: int = 1000
    rpn_post_nms_test: int = 500
    roi_batch_size: int = 128  # proposals sampled per image by the default sampler
    sampler: str = "default"
    ohem_batch_size: int = 128  # the hardest RoIs kept per image
    ohem_nms: float = 0.7
    box_cls_loss: str = "ce"
    focal_gamma: float = 2.0

    epochs: int = 12
    batch_size: int = 4
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 100
    clip_grad_norm: float = 10.0
    scale_range: tuple[float, float] = (0.8, 1.25)
    rot90: bool = True
    max_steps_per_epoch: int = 0  # 0: the whole training split (tests shorten epochs with it)
    max_eval_images: int = 0  # 0: the whole split

    # evaluation: class-wise NMS IoU thresholds scored (the first one is the run's headline), score floor,
    # detections kept per image
    nms_thresholds: tuple[float, ...] = NMS_DEFAULTS
    score_thresh: float = 0.05
    detections_per_img: int = 100
    raw_detections_per_img: int = 1000  # kept before NMS

    device: str = _nohash("auto")
    num_workers: int = _nohash(-1)
    progress: bool = _nohash(False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DetectionConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DetectionConfigError(f"unknown detection config keys {unknown}; valid keys: {sorted(known)}")
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**data).validate()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    def hashed_dict(self) -> dict[str, Any]:
        d = self.to_dict()
        return {f.name: d[f.name] for f in fields(self) if f.metadata.get("hash", True)}

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.hashed_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def replace(self, **changes: Any) -> "DetectionConfig":
        return dataclasses.replace(self, **changes).validate()

    def run_dir(self) -> Path:
        return Path(self.out) / f"det-{self.config_hash()}"

    def check_weights(self) -> "DetectionConfig":
        """The weights exist here (a checkpoint or stage-1 run may be on the cluster only, so this is checked
        where the run starts or is submitted, not when a sweep is read)."""
        from da.models.model import WEIGHT_CHOICES
        if self.weights not in WEIGHT_CHOICES and not Path(self.weights).exists():
            raise DetectionConfigError(
                f"detection config weights={self.weights!r}: neither one of {', '.join(WEIGHT_CHOICES)} nor an "
                "existing checkpoint or stage-1 run directory")
        return self

    def check_types(self) -> None:
        hints = typing.get_type_hints(DetectionConfig)
        for f in fields(self):  # types first, as for RunConfig: rot90 "false" is no bool, lr inf no learning rate
            problem = type_problem(f.name, getattr(self, f.name), hints[f.name])
            if problem:
                raise DetectionConfigError(f"detection config {problem}")

    def validate(self) -> "DetectionConfig":
        def bad(name, why):
            raise DetectionConfigError(f"detection config {name}={getattr(self, name)!r}: {why}")

        self.check_types()
        if self.dataset not in DETECTION_DATASETS:
            bad("dataset", f"unknown detection dataset; known: {', '.join(sorted(DETECTION_DATASETS))}")
        if self.anchors not in ANCHOR_CHOICES:
            bad("anchors", f"choose from {', '.join(ANCHOR_CHOICES)}")
        if self.sampler not in SAMPLERS:
            bad("sampler", f"choose from {', '.join(SAMPLERS)}")
        if self.box_cls_loss not in BOX_CLS_LOSSES:
            bad("box_cls_loss", f"choose from {', '.join(BOX_CLS_LOSSES)}")
        for name in ("epochs", "batch_size", "min_size", "max_size", "anchor_k", "roi_batch_size",
                     "ohem_batch_size", "detections_per_img", "fpn_channels", "rpn_post_nms_train", "rpn_post_nms_test"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                bad(name, "must be an integer >= 1")
        if self.min_size > self.max_size:
            bad("min_size", f"must not exceed max_size={self.max_size}")
        if not self.nms_thresholds or not all(0 < t <= 1 for t in self.nms_thresholds):
            bad("nms_thresholds", "must be a non-empty list of IoU thresholds in (0, 1]")
        if not 0 <= self.score_thresh < 1:
            bad("score_thresh", "must be in [0, 1)")
        if not 0 < self.ohem_nms <= 1:
            bad("ohem_nms", "must be in (0, 1] (1 turns the NMS among hard RoIs off)")
        if not self.lr > 0:
            bad("lr", "must be > 0")
        for name in ("val_fraction", "test_fraction"):
            if not 0 < getattr(self, name) < 1:
                bad(name, "must lie strictly between 0 and 1 (the run selects and reports on these images)")
        if self.val_fraction + self.test_fraction >= 1:
            bad("test_fraction", f"with val_fraction={self.val_fraction} leaves no training images")
        for name in ("seed", "split_seed", "warmup_iters", "max_steps_per_epoch", "max_eval_images",
                     "rpn_pre_nms_train", "rpn_pre_nms_test", "raw_detections_per_img"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0")
        for name in ("weight_decay", "clip_grad_norm", "focal_gamma"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0")
        if not 0 <= self.momentum < 1:
            bad("momentum", "must lie in [0, 1)")
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            bad("scale_range", "must be two factors 0 < low <= high")
        return self


# The help of each field's flag (da-detect --help); a field without an entry fails tests/test_detection_model.py.
HELP = {
    "dataset": f"detection dataset: {', '.join(sorted(DETECTION_DATASETS))}",
    "data_root": "folder holding the datasets; default: $DA_DATA_ROOT or ./data",
    "out": "folder of run directories (det-<config hash>)",
    "split_seed": "seed of the train/val/test split by image (kept fixed while --seed varies)",
    "val_fraction": "fraction of the images held out for selecting the epoch",
    "test_fraction": "fraction of the images held out for the reported test mAP",
    "seed": "seed of the run (initialisation, batch order, augmentation)",
    "backbone": "trunk: tf_efficientnet_lite0 (offline), a torchvision resnet name, or timm:<name>",
    "weights": "tf_efficientnet_lite0 (the offline ImageNet file) | imagenet (library download) | none | a stage-1 "
               "run directory or checkpoint of da-run (its scene model's trunk)",
    "frozen_bn": "keep batch-norm statistics and affine from the weights (batches of 4 images are too few)",
    "anchors": f"{' | '.join(ANCHOR_CHOICES)}: torchvision's anchors, or k-means on the training boxes (IoU distance)",
    "anchor_k": "anchor shapes fitted with --anchors fitted",
    "fpn_channels": "channels of the feature pyramid (torchvision's detectors: 256)",
    "min_size": "shorter image side after resizing, in pixels (torchvision: 800)",
    "max_size": "longer image side at most, in pixels (torchvision: 1333)",
    "rpn_pre_nms_train": "RPN proposals per level before NMS, training",
    "rpn_post_nms_train": "RPN proposals kept after NMS, training",
    "rpn_pre_nms_test": "RPN proposals per level before NMS, evaluation",
    "rpn_post_nms_test": "RPN proposals kept after NMS, evaluation",
    "roi_batch_size": "RoIs sampled per image by the default sampler (25 % positive)",
    "sampler": f"RoI sampler: {' | '.join(SAMPLERS)} (OHEM: the hardest RoIs by loss, Shrivastava et al. 2016)",
    "ohem_batch_size": "RoIs kept per image by --sampler ohem",
    "ohem_nms": "IoU of the NMS among hard RoIs before keeping the hardest (1: off)",
    "box_cls_loss": f"RoI classification loss: {' | '.join(BOX_CLS_LOSSES)}",
    "focal_gamma": "gamma of --box-cls-loss focal",
    "epochs": "training epochs",
    "batch_size": "images per step",
    "lr": "learning rate (SGD)",
    "momentum": "SGD momentum",
    "weight_decay": "SGD weight decay",
    "warmup_iters": "steps of linear warmup before the cosine decay",
    "clip_grad_norm": "gradient norm clip; 0: off",
    "scale_range": "random rescaling factors (low high) of training images",
    "rot90": "random 90-degree rotations and flips of training images",
    "max_steps_per_epoch": "cap on steps per epoch (smoke tests); 0: the whole training split",
    "max_eval_images": "cap on val and test images scored (smoke tests); 0: the whole split",
    "nms_thresholds": "class-wise NMS IoU thresholds scored; the first is the headline",
    "score_thresh": "detections below this score are dropped",
    "detections_per_img": "detections kept per image after NMS",
    "raw_detections_per_img": "detections kept per image before NMS",
    "device": "auto | cpu | cuda | cuda:N",
    "num_workers": "data-loading worker processes; -1: the allotted CPUs minus one",
    "progress": "show progress bars",
}
