"""Image transforms (torchvision.transforms.v2) for aerial scenes.

Aerial images have no "up": training adds vertical flips and 90-degree rotations to the usual
RandomResizedCrop, horizontal flip and colour jitter.  Normalisation constants come from the backbone's
weights (ImageNet mean/std, or 0.5 for the TF EfficientNet-Lite weights).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from da.data.policies import STRONG_POLICIES


class RandomRot90(v2.Transform):
    """Rotate by k * 90 degrees, k uniform in {0, 1, 2, 3}: exact, no interpolation."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"k": int(torch.randint(4, ()).item())}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, torch.Tensor):
            return inpt
        out = torch.rot90(inpt, params["k"], dims=(-2, -1))
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


def train_transform(img_size: int, mean: Sequence[float], std: Sequence[float],
                    scale: tuple[float, float] = (0.35, 1.0), jitter: float = 0.2, strong: str | None = None) -> v2.Compose:
    """Crop, flips, 90-degree rotations, then colour jitter; with ``strong`` (a name of STRONG_POLICIES) that
    policy replaces the colour jitter: FixMatch's strong view adds RandAugment to its weak view's flip and crop.
    The policies work on uint8 images, so they run before the conversion."""
    if strong is not None and strong not in STRONG_POLICIES:
        raise ValueError(f"unknown strong augmentation {strong!r}: one of {', '.join(STRONG_POLICIES)}")
    photometric = (getattr(v2, STRONG_POLICIES[strong][0])(**STRONG_POLICIES[strong][1]) if strong else
                   v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=jitter / 10))
    # Scenes are recognised from layout over the whole tile: crops much below a third lose the class.
    return v2.Compose([
        v2.ToImage(),
        v2.RandomResizedCrop(img_size, scale=scale, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        RandomRot90(),
        photometric,
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ])


def eval_transform(img_size: int, mean: Sequence[float], std: Sequence[float], crop_ratio: float = 0.875) -> v2.Compose:
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(int(round(img_size / crop_ratio)), antialias=True),
        v2.CenterCrop(img_size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ])


def batch_mixer(num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> v2.Transform | None:
    """MixUp and/or CutMix on a batch (images, integer labels) -> (images, soft labels), or None if off."""
    choices = []
    if mixup_alpha > 0:
        choices.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
    if cutmix_alpha > 0:
        choices.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
    if not choices:
        return None
    return choices[0] if len(choices) == 1 else v2.RandomChoice(choices)
