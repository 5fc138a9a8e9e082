"""LoRA on the last stages of a :class:`~da.models.model.DAModel`, through the ``peft`` library.

LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022) replaces a frozen weight
``W`` (out x in, for a convolution out x in*kh*kw) by ``W + (alpha / r) * B A`` with ``A`` (r x in) drawn
at random and ``B`` (out x r) zero at the start, so that the adapted model equals the base model until ``B``
moves.  The paper sets ``alpha`` to the first rank it tries and does not tune it (scale 1), and uses no
dropout on the adapters for most of its tasks: the defaults here (``--lora-alpha 0`` means ``alpha = r``).

Adapted layers: every ``nn.Linear`` and every ungrouped ``nn.Conv2d`` (``--lora-targets all``), or only the
1x1 convolutions and linear layers (``pointwise``).  Grouped and depthwise convolutions stay frozen: peft
cannot merge a LoRA update into them (their weight has in/groups input channels), and an adapter that
cannot be merged would make the exported model another model than the trained one.

``best_model.pt`` holds the merged weights (:func:`merged_state_dict`, the base structure and key names), so
export, prediction and a stage-2 run that starts from a LoRA stage-1 model read it as any other checkpoint;
the training checkpoint keeps base and adapter weights apart, for an exact resume.
"""

from __future__ import annotations

import torch
from torch import nn

from da.config import LORA_TARGETS  # the run config declares the choices; this module implements them

ADAPTER_NAME = "default"


def target_names(model: nn.Module, stages: range, targets: str = "all") -> list[str]:
    """Qualified names of the layers of ``model.stages[i]`` (i in ``stages``) that LoRA adapts."""
    if targets not in LORA_TARGETS:
        raise ValueError(f"lora targets {targets!r}: choose from {', '.join(LORA_TARGETS)}")
    names = []
    for i in stages:
        for name, m in model.stages[i].named_modules():
            if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1
                                            and (targets == "all" or m.kernel_size == (1, 1))):
                names.append(f"stages.{i}.{name}")
    return names


def add_lora(model: nn.Module, stages: range, rank: int, alpha: float = 0.0, dropout: float = 0.0,
             targets: str = "all") -> list[str]:
    """Wrap the target layers of ``stages`` in LoRA adapters (in place; peft's ``inject_adapter_in_model``) and
    return their names.  Only the adapters' ``A`` and ``B`` are new trainable parameters: every other
    parameter keeps the ``requires_grad`` it had (peft would freeze the whole model, head included)."""
    from peft import LoraConfig, inject_adapter_in_model

    names = target_names(model, stages, targets)
    if not names:
        raise ValueError(f"LoRA: stages {list(stages)} hold no layer to adapt (--lora-targets {targets})")
    trainable = {n: p.requires_grad for n, p in model.named_parameters()}
    config = LoraConfig(r=rank, lora_alpha=alpha or rank, lora_dropout=dropout, target_modules=names, bias="none")
    inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.requires_grad_(True)
        else:
            p.requires_grad_(trainable[name.replace(".base_layer", "")])
    model.adapted_layers = names
    return names


def adapted_layers(model: nn.Module) -> list[str]:
    return list(getattr(model, "adapted_layers", []))


def is_adapter(name: str) -> bool:
    """Whether a parameter name is a LoRA adapter's (its own optimizer group, at the head's learning rate)."""
    return ".lora_A." in name or ".lora_B." in name


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with every adapter merged into its base weight, under the base model's key names
    (``W + scale * B A``); the model itself is left as it is.  Without adapters: ``model.state_dict()``."""
    state = model.state_dict()
    for name in adapted_layers(model):
        layer = model.get_submodule(name)
        with torch.no_grad():
            merged = layer.get_base_layer().weight + layer.get_delta_weight(ADAPTER_NAME)
        for key in [k for k in state if k.startswith(name + ".")]:
            value = state.pop(key)
            if key.startswith(f"{name}.base_layer."):
                state[f"{name}.{key[len(name) + len('.base_layer.'):]}"] = value
        state[f"{name}.weight"] = merged.detach().clone()
    return state


def remove_adapters(model: nn.Module) -> None:
    """Put every adapted layer's base layer back in its place (the adapters are dropped, not merged): the
    model has the base structure again, ready for :func:`merged_state_dict`'s weights."""
    for name in adapted_layers(model):
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, model.get_submodule(name).get_base_layer())
    model.adapted_layers = []


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable and total parameters, and how many of the trainable ones are adapters'."""
    params = list(model.named_parameters())
    return {"trainable": sum(p.numel() for _, p in params if p.requires_grad),
            "adapters": sum(p.numel() for n, p in params if is_adapter(n)),
            "total": sum(p.numel() for _, p in params)}
