"""Parameter groups (differential learning rates, no decay on norms and biases) and optimisers, LARS included
(timm's ``timm.optim.Lars``, see :class:`LARS`)."""

from __future__ import annotations

from typing import Iterable

import torch
from timm.optim import Lars
from torch import nn

from da.config import OPTIMIZERS  # the run config declares the choices; this module implements them
from da.models.lora import is_adapter
# position embeddings and class tokens are not weights to shrink (as in ViT training recipes)
_NO_DECAY_NAMES = ("class_token", "cls_token", "reg_token", "pos_embedding", "pos_embed")


def _no_decay(name: str, p: torch.Tensor) -> bool:
    return p.ndim <= 1 or name.rsplit(".", 1)[-1] in _NO_DECAY_NAMES


def param_groups(model: nn.Module, lr: float, backbone_lr_factor: float = 0.1, weight_decay: float = 0.01
                 ) -> list[dict]:
    """At most six groups, named ``backbone_decay``, ``backbone_no_decay``, ``adapter_decay``, ``adapter_no_decay``,
    ``head_decay``, ``head_no_decay``.

    Backbone (``stages``) parameters learn at ``lr * backbone_lr_factor``, head parameters and LoRA adapters
    (new parameters, as the head's, from zero: ``da.models.lora``) at ``lr``.
    Biases and normalisation parameters (every tensor of fewer than 2 dimensions) and position/class
    tokens get no weight decay, and are flagged ``lars_exclude`` (no LARS trust ratio).  Frozen parameters
    are included, so gradual unfreezing needs no new group; the head groups come last.
    """
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():
        part = "head" if name.startswith("head.") else "adapter" if is_adapter(name) else "backbone"
        decay = not _no_decay(name, p)
        key = f"{part}_{'decay' if decay else 'no_decay'}"
        if key not in groups:
            groups[key] = {"name": key, "params": [], "lr": lr * (backbone_lr_factor if part == "backbone" else 1.0),
                           "weight_decay": weight_decay if decay else 0.0, "lars_exclude": not decay}
        groups[key]["params"].append(p)
    order = ("backbone_decay", "backbone_no_decay", "adapter_decay", "adapter_no_decay", "head_decay", "head_no_decay")
    return [groups[k] for k in order if k in groups]


class LARS(Lars):
    """LARS (You, Gitman & Ginsburg, 2017, arXiv:1708.03888): timm's ``timm.optim.Lars``, with our conventions.

    The update is timm's, unchanged.  For each adapted tensor ``w`` with gradient ``g``::

        trust = trust_coefficient * ||w|| / (||g|| + weight_decay * ||w|| + eps)   (1 where ||w|| or ||g|| is 0)
        v = momentum * v + trust * (g + weight_decay * w)      (v starts as the first step's value)
        w = w - lr * v

    which is the paper's local learning rate eta * ||w|| / (||g|| + beta * ||w||).  How ours map to timm's:
    ``trust_coefficient`` is its ``trust_coeff`` (eta); ``momentum`` and ``weight_decay`` are its own (no
    dampening, no Nesterov, no LARC clipping); a group's ``lars_exclude=True`` (biases and norms, as
    :func:`param_groups` marks them) is its ``always_adapt=False`` together with weight decay 0, so those
    tensors take plain momentum SGD steps, and every other group gets ``always_adapt=True``, so it is
    adapted even with ``--weight-decay 0`` (timm alone adapts only groups with weight decay).  Parameters
    without a gradient (frozen) take no step and keep no momentum.  Since the step is relative, ``lr``
    is typically far larger than for SGD (e.g. 0.1-1 x batch / 256 with ``trust_coefficient=0.001``).

    The hand-written LARS this replaces divided by ``||g + weight_decay * w||`` instead; both agree when
    ``g`` and ``w`` are parallel, otherwise timm's trust ratio is smaller (measured on resnet18, weight
    decay 0.01: 0.75-1.0 times the old one per tensor).
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, eps: float = 1e-8):
        if lr <= 0 or momentum < 0 or weight_decay < 0 or trust_coefficient <= 0:
            raise ValueError("LARS needs lr > 0, momentum >= 0, weight_decay >= 0, trust_coefficient > 0")
        groups = list(params)
        if groups and not isinstance(groups[0], dict):  # a plain list of tensors: one adapted group
            groups = [{"params": groups}]
        groups = [_timm_group(g, weight_decay) for g in groups]
        super().__init__(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coeff=trust_coefficient,
                         eps=eps, always_adapt=True)

    def __setstate__(self, state):
        # a checkpoint of the hand-written LARS names its options otherwise; without this, resuming it
        # would fail on a missing key at the first step
        for group in state.get("param_groups", []):
            if "trust_coeff" not in group and "trust_coefficient" in group:
                group["trust_coeff"] = group["trust_coefficient"]
            if "always_adapt" not in group:
                group["always_adapt"] = not group.get("lars_exclude", False)
            for key, value in self.defaults.items():
                group.setdefault(key, value)
        super().__setstate__(state)


def _timm_group(group: dict, default_weight_decay: float) -> dict:
    group = dict(group)
    exclude = bool(group.get("lars_exclude", False))
    if exclude and group.get("weight_decay", default_weight_decay) != 0:
        # timm adapts every group with weight decay: an excluded group must have none
        raise ValueError(f"LARS: parameter group {group.get('name', '?')!r} is excluded from the trust ratio "
                         f"(lars_exclude) but has weight decay; give it weight_decay 0 (param_groups does)")
    group["always_adapt"] = not exclude
    return group


def build_optimizer(name: str, groups: Iterable, lr: float, weight_decay: float = 0.01, momentum: float = 0.9
                    ) -> torch.optim.Optimizer:
    """``adamw``, ``sgd`` (momentum) or ``lars`` over ``groups`` (as from :func:`param_groups`; a group's own
    ``lr``/``weight_decay`` override the defaults given here)."""
    key = name.lower()
    if key == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    if key == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if key == "lars":
        return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; valid choices: {', '.join(OPTIMIZERS)}")
