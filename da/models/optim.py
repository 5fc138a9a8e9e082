"""Parameter groups (differential learning rates, no decay on norms and biases) and optimisers, LARS included."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

OPTIMIZERS = ("adamw", "sgd", "lars")
# position embeddings and class tokens are not weights to shrink (as in ViT training recipes)
_NO_DECAY_NAMES = ("class_token", "cls_token", "reg_token", "pos_embedding", "pos_embed")


def _no_decay(name: str, p: torch.Tensor) -> bool:
    return p.ndim <= 1 or name.rsplit(".", 1)[-1] in _NO_DECAY_NAMES


def param_groups(model: nn.Module, lr: float, backbone_lr_factor: float = 0.1, weight_decay: float = 0.01
                 ) -> list[dict]:
    """At most four groups, named ``backbone_decay``, ``backbone_no_decay``, ``head_decay``, ``head_no_decay``.

    Backbone (``stages``) parameters learn at ``lr * backbone_lr_factor``, head parameters at ``lr``.
    Biases and normalisation parameters (every tensor of fewer than 2 dimensions) and position/class
    tokens get no weight decay, and are flagged ``lars_exclude`` (no LARS trust ratio).  Frozen parameters
    are included, so gradual unfreezing needs no new group; the head groups come last.
    """
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():
        part = "head" if name.startswith("head.") else "backbone"
        decay = not _no_decay(name, p)
        key = f"{part}_{'decay' if decay else 'no_decay'}"
        if key not in groups:
            groups[key] = {"name": key, "params": [], "lr": lr * (backbone_lr_factor if part == "backbone" else 1.0),
                           "weight_decay": weight_decay if decay else 0.0, "lars_exclude": not decay}
        groups[key]["params"].append(p)
    order = ("backbone_decay", "backbone_no_decay", "head_decay", "head_no_decay")
    return [groups[k] for k in order if k in groups]


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You, Gitman & Ginsburg, 2017).

    For each parameter tensor ``w`` with gradient ``g``::

        d = g + weight_decay * w
        trust = trust_coefficient * ||w|| / (||d|| + eps)   (1 where ||w|| or ||d|| is 0)
        v = momentum * v + trust * d
        w = w - lr * v

    so every layer moves by about ``lr * trust_coefficient`` of its own norm, whatever its gradient scale.
    Groups with ``lars_exclude=True`` (biases and norms, as ``param_groups`` marks them) skip the trust
    ratio and take plain momentum SGD steps.  Since the step is relative, ``lr`` is typically far larger
    than for SGD (e.g. 0.1-1 x batch / 256 with ``trust_coefficient=0.001``).
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, eps: float = 1e-8):
        if lr <= 0 or momentum < 0 or weight_decay < 0 or trust_coefficient <= 0:
            raise ValueError("LARS needs lr > 0, momentum >= 0, weight_decay >= 0, trust_coefficient > 0")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
                        eps=eps, lars_exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:  # frozen or unused: no step, no momentum
                    continue
                d = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad.clone()
                if not group["lars_exclude"]:
                    w_norm, d_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d)
                    trust = torch.where((w_norm > 0) & (d_norm > 0),
                                        group["trust_coefficient"] * w_norm / (d_norm + group["eps"]),
                                        torch.ones_like(w_norm))
                    d.mul_(trust)
                state = self.state[p]
                if group["momentum"]:
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = d.clone()
                    else:
                        state["momentum_buffer"].mul_(group["momentum"]).add_(d)
                    d = state["momentum_buffer"]
                p.add_(d, alpha=-group["lr"])
        return loss


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
