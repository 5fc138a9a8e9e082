"""The detector: torchvision's ``FasterRCNN`` on a backbone + FPN from the project's model factory.

The backbone is built by ``da.models.build_model`` (so it gets the same weights as classification: the
offline ImageNet Lite0 file, a library's ImageNet weights, or a stage-1 scene checkpoint of this project),
then its tensors are loaded into timm's ``features_only`` version of the same network, which returns the
stride 4, 8, 16 and 32 maps.  torchvision's ``FeaturePyramidNetwork`` with a max-pooled extra level turns them
into five maps of ``fpn_channels`` (torchvision's ResNet-50 FPN detector has this layout with 256), so its RPN
and RoI heads apply unchanged.  The box predictor is a new ``FastRCNNPredictor`` for K + 1 classes (0:
background).  torchvision's ResNets (``resnet18`` ... ``resnet101``) are accepted too: their layer1-layer4,
with the weights from the same factory (``--weights imagenet`` downloads torchvision's where there is
internet).  Batch norm is frozen by default (``frozen_bn``), as in torchvision's detectors: batches of a few
images give poor statistics.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from da.detection.anchors import TORCHVISION_RATIOS, TORCHVISION_SIZES, AnchorGeneratorArgs
from da.detection.roi_heads import make_roi_heads
from da.models.backbones import TIMM_PREFIX
from da.models.model import build_model
from da.models.weights import read_weights_file
from da.rundir import BEST_FILE

FPN_CHANNELS = 256


class BackboneFPN(nn.Module):
    """A multi-scale trunk (a list of feature maps, finest first) followed by an FPN; ``out_channels`` as
    torchvision's detectors require."""

    def __init__(self, trunk: nn.Module, in_channels: list[int], out_channels: int = FPN_CHANNELS):
        super().__init__()
        self.trunk = trunk
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.trunk(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


class _TorchvisionResNetTrunk(nn.Module):
    """layer1..layer4 of a torchvision ResNet (strides 4..32)."""

    def __init__(self, resnet: nn.Module):
        super().__init__()
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layers = nn.ModuleList([resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4])

    def forward(self, x):
        x = self.stem(x)
        out = []
        for layer in self.layers:
            x = layer(x)
            out.append(x)
        return out


@dataclass
class BackboneInit:
    """What the detector's backbone was initialised from, for the record."""

    weights: str
    loaded: int  # tensors of the multi-scale trunk that came from the weights
    total: int
    source: str  # the load report's description


def library_state_dict(da_model) -> dict[str, torch.Tensor]:
    """A DAModel's backbone tensors under the library's own names (timm's or torchvision's)."""
    own = da_model.state_dict()
    return {lib: own[mine] for lib, mine in da_model.library_keys.items()}


def build_trunk(backbone: str, weights: str) -> tuple[nn.Module, list[int], tuple, tuple, BackboneInit]:
    """The multi-scale trunk, its channels per level, the normalisation and how it was initialised."""
    if Path(weights).is_dir():  # a stage-1 run directory: its selected model
        weights = str(Path(weights) / BEST_FILE)
    da_model = build_model(backbone, num_classes=2, weights=weights, bottleneck_dim=_scene_bottleneck(weights))
    lib = library_state_dict(da_model)
    if backbone.startswith(TIMM_PREFIX):
        import timm
        trunk = timm.create_model(backbone[len(TIMM_PREFIX):], pretrained=False, features_only=True,
                                  out_indices=(1, 2, 3, 4))
        channels = list(trunk.feature_info.channels())
        wanted = trunk.state_dict()
        missing = trunk.load_state_dict({k: v for k, v in lib.items() if k in wanted}, strict=False).missing_keys
    elif backbone.startswith("resnet"):
        import torchvision
        net = getattr(torchvision.models, backbone)(weights=None)
        missing = [k for k in net.load_state_dict(lib, strict=False).missing_keys if not k.startswith("fc.")]
        trunk = _TorchvisionResNetTrunk(net)
        channels = _resnet_channels(net)
        wanted = trunk.state_dict()
    else:
        raise ValueError(f"detection backbone {backbone!r}: use a timm model (timm:<name>, features_only) or a "
                         "torchvision resnet18/34/50/101")
    report = getattr(da_model, "load_report", None)
    source = report.summary() if report is not None else f"{weights} (library weights)"
    if weights != "none" and missing:
        raise ValueError(f"detection backbone {backbone!r} with weights {weights!r}: {len(missing)} trunk tensors "
                         f"have no weights (e.g. {missing[:3]}); the weights are of another network")
    loaded = 0 if weights == "none" else len(wanted) - len(missing)  # random init: nothing came from a file
    init = BackboneInit(weights=str(weights), loaded=loaded, total=len(wanted), source=source)
    mean, std = (tuple(t.flatten().tolist()) for t in (da_model.norm_mean, da_model.norm_std))
    return trunk, channels, mean, std, init


def _scene_bottleneck(weights: str) -> int | None:
    """The bottleneck width of a scene-classification checkpoint of this project (so that it loads whole:
    only its backbone is used), or None for anything else."""
    if not Path(weights).is_file():
        return None
    state = read_weights_file(weights)
    state = state.get("model", state) if isinstance(state, dict) else state
    w = state.get("head.bottleneck.0.weight") if isinstance(state, dict) else None
    return int(w.shape[0]) if isinstance(w, torch.Tensor) else None


def _resnet_channels(net) -> list[int]:
    return [layer[-1].conv3.out_channels if hasattr(layer[-1], "conv3") else layer[-1].conv2.out_channels
            for layer in (net.layer1, net.layer2, net.layer3, net.layer4)]


def anchor_generator(args: AnchorGeneratorArgs | None) -> AnchorGenerator:
    """torchvision's FPN defaults (sizes 32..512, ratios 0.5/1/2) or the fitted ones."""
    if args is None:
        return AnchorGenerator(TORCHVISION_SIZES, (TORCHVISION_RATIOS,) * len(TORCHVISION_SIZES))
    return AnchorGenerator(tuple(args.sizes), tuple(args.aspect_ratios))


def build_detector(cfg, num_classes: int, anchors: AnchorGeneratorArgs | None = None,
                   class_counts: list[int] | None = None) -> tuple[FasterRCNN, BackboneInit]:
    """Faster R-CNN for ``num_classes`` object classes (the predictor has ``num_classes + 1`` outputs).

    ``cfg`` is a :class:`da.detection.config.DetectionConfig`; ``anchors`` None means torchvision's defaults.
    NMS is left at IoU 1 and the score threshold at 0 here: evaluation applies the configured NMS itself
    (``da.detection.evaluate``), so several NMS settings are scored from one forward pass."""
    trunk, channels, mean, std, init = build_trunk(cfg.backbone, cfg.weights)
    if cfg.frozen_bn:
        from timm.layers import freeze_batch_norm_2d
        trunk = freeze_batch_norm_2d(trunk)
    body = BackboneFPN(trunk, channels, cfg.fpn_channels)
    gen = anchor_generator(anchors)
    model = FasterRCNN(
        body, num_classes=None, min_size=cfg.min_size, max_size=cfg.max_size, image_mean=list(mean),
        image_std=list(std), rpn_anchor_generator=gen,
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_train, rpn_post_nms_top_n_train=cfg.rpn_post_nms_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_test, rpn_post_nms_top_n_test=cfg.rpn_post_nms_test,
        box_predictor=FastRCNNPredictor(1024, num_classes + 1),
        box_score_thresh=0.0, box_nms_thresh=1.0, box_detections_per_img=cfg.raw_detections_per_img,
        box_batch_size_per_image=cfg.roi_batch_size,
    )
    model.roi_heads = make_roi_heads(model.roi_heads, cfg)
    return model, init
