"""Box-aware augmentation on ``torchvision.transforms.v2``: flips, 90-degree rotations, scale jitter.

Aerial objects have no up or down, so the eight flips and quarter turns of an image are all plausible
views; ``RandomRot90`` supplies the quarter turns.  ``v2.functional.rotate(..., expand=True)`` at 90, 180
and 270 degrees does give the same pixels and boxes on the cases we checked (torchvision 0.29), but it gets
there through an affine matrix of floating-point sines and cosines and a resampling step; ``RandomRot90``
is a pure permutation of pixels (``torch.rot90``) with the boxes' closed form, exact by construction.

Rotations are counter-clockwise, as ``v2.functional.rotate`` with a positive angle.  For an image of
height H and width W, a quarter turn maps a point ``(x, y)`` to ``(y, W - x)`` on a W x H canvas.
"""

from __future__ import annotations

import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from da.detection.data import DetectionSample


def rot90_boxes(boxes: torch.Tensor, canvas_size: tuple[int, int], k: int) -> torch.Tensor:
    """XYXY boxes on an ``(H, W)`` canvas after ``k`` counter-clockwise quarter turns (same dtype)."""
    h, w = canvas_size
    x1, y1, x2, y2 = boxes.unbind(-1)
    k %= 4
    if k == 0:
        return boxes.clone()
    if k == 1:  # (x, y) -> (y, W - x)
        out = (y1, w - x2, y2, w - x1)
    elif k == 2:  # (x, y) -> (W - x, H - y)
        out = (w - x2, h - y2, w - x1, h - y1)
    else:  # (x, y) -> (H - y, x)
        out = (h - y2, x1, h - y1, x2)
    return torch.stack(out, dim=-1)


class RandomRot90(v2.Transform):
    """Rotates images, masks and boxes together by ``k`` quarter turns counter-clockwise, ``k`` drawn
    uniformly from ``ks`` (default 0-3) per call.  Works on tensors and tv_tensors: put ``v2.ToImage()``
    before it for PIL images."""

    def __init__(self, ks: tuple[int, ...] = (0, 1, 2, 3)):
        super().__init__()
        if not ks or any(int(k) != k for k in ks):
            raise ValueError(f"RandomRot90(ks={ks}): ks must be a non-empty tuple of integers (quarter turns)")
        self.ks = tuple(int(k) % 4 for k in ks)

    def make_params(self, flat_inputs):
        return {"k": self.ks[int(torch.randint(len(self.ks), ()))]}

    def transform(self, inpt, params):
        k = params["k"]
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            fmt = inpt.format
            xyxy = F.convert_bounding_box_format(inpt, new_format=tv_tensors.BoundingBoxFormat.XYXY)
            h, w = inpt.canvas_size
            out = rot90_boxes(xyxy.as_subclass(torch.Tensor), (h, w), k)
            canvas = (w, h) if k % 2 else (h, w)
            out = tv_tensors.BoundingBoxes(out, format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=canvas)
            return F.convert_bounding_box_format(out, new_format=fmt) if fmt != out.format else out
        if isinstance(inpt, PIL.Image.Image):
            raise TypeError("RandomRot90 got a PIL image; put v2.ToImage() before it in the pipeline")
        if isinstance(inpt, torch.Tensor):  # images, videos, masks (v2 passes labels through untouched)
            out = torch.rot90(inpt.as_subclass(torch.Tensor), k, dims=(-2, -1))
            return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out
        return inpt  # labels, ids and other passengers are unchanged


def detection_transforms(train: bool, target_size: tuple[int, int] = (704, 704),
                         scale_range: tuple[float, float] = (0.8, 1.25), hflip: float = 0.5, vflip: float = 0.5,
                         rot90: bool = True) -> v2.Compose:
    """The pipeline for ``(image, {"boxes": BoundingBoxes, "labels": ...})``: to a tensor image, then for
    training the flips, quarter turns and ``v2.ScaleJitter`` (longer side fit into ``target_size`` times a
    factor from ``scale_range``, aspect kept), then boxes clamped to the image and those left without area
    dropped with their labels, and the image as float in [0, 1].  Evaluation gets only the conversion: the
    detector's own transform resizes."""
    steps: list = [v2.ToImage()]
    if train:
        if hflip:
            steps.append(v2.RandomHorizontalFlip(hflip))
        if vflip:
            steps.append(v2.RandomVerticalFlip(vflip))
        if rot90:
            steps.append(RandomRot90())
        if scale_range is not None:
            steps.append(v2.ScaleJitter(target_size=target_size, scale_range=scale_range, antialias=True))
        steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0)]
    steps.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(steps)


def sample_inputs(sample: DetectionSample):
    """(image as a uint8 tv_tensors.Image, target dict) for a sample, ready for ``detection_transforms``."""
    with PIL.Image.open(sample.image_path) as im:
        image = F.to_image(im.convert("RGB"))
    if tuple(image.shape[-2:]) != tuple(sample.image_size):
        raise ValueError(f"{sample.image_path}: the image is {tuple(image.shape[-2:])} (H, W) but its annotation "
                         f"says {sample.image_size}; the boxes belong to another copy of the image")
    target = {
        "boxes": tv_tensors.BoundingBoxes(sample.boxes, format="XYXY", canvas_size=sample.image_size),
        "labels": sample.labels.clone(),
    }
    return image, target

