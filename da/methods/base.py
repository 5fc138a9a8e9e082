"""What an adaptation method is, and the registry that holds every method by name.

A method is an ``nn.Module`` that turns one training step's outputs into named loss terms.  It says
whether it needs a target batch (``needs_target``), owns its parameters (a domain discriminator: they
join the optimizer in a parameter group of their own and the checkpoint), and may look at the model's
predictions on the whole unlabelled target training split at the start of each epoch
(``on_epoch_start``, when ``uses_target_pass``).  Its own settings are declared in its class
(``settings = (Setting(...), ...)``, :mod:`da.settings`): they become config fields, flags and checks, and
enter the hash of the runs that use the method; a subclass reads its base's settings too.  Methods wire the pure losses of ``da.losses`` into the
step; ``a+b`` composes registered methods.  Registering a class (``@register``) in a module of this
package is all it takes for ``--method``, the CLI help and sweep validation to know its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from da.losses.adversarial import grl_coefficient
from da.settings import USED_BY, Setting, declare

REGISTRY: dict[str, type["Method"]] = {}


@dataclass
class StepOutputs:
    """One step's outputs: source/target logits (N, C) and bottleneck features z (N, d), source labels,
    and the training progress in [0, 1] (global step / total steps).  Target entries are None for methods
    that need no target batch.  ``idx_t`` holds each target example's index in the target training split
    (the row of the :class:`TargetPass`; target batches carry no labels); ``w_s`` (N,) are the source
    examples' class-ratio weights q-hat / p_train when the run estimates the target prior, else None.
    ``logits_tw`` (N, C) are the logits of the same target images' weak views (the evaluation transform),
    from the same forward, for methods that declare ``needs_weak_target``; else None."""

    logits_s: torch.Tensor
    z_s: torch.Tensor
    y_s: torch.Tensor
    logits_t: torch.Tensor | None
    z_t: torch.Tensor | None
    progress: float
    idx_t: torch.Tensor | None = None
    w_s: torch.Tensor | None = None
    logits_tw: torch.Tensor | None = None


@dataclass
class TargetPass:
    """The model's outputs on the unlabelled target training split (evaluation mode, split order): logits
    (N, C) and bottleneck features (N, d), float32 on the CPU.  It has no labels, by construction.
    ``prior`` is the label-free estimate of the target class prior (C,) when the run makes one (``--prior``)."""

    logits: torch.Tensor
    features: torch.Tensor
    prior: torch.Tensor | None = None


class Method(nn.Module):
    name: ClassVar[str]
    settings: ClassVar[tuple[Setting, ...]] = ()
    needs_target: ClassVar[bool] = True
    uses_target_pass: ClassVar[bool] = False
    # the engine re-estimates the BatchNorm statistics on the target before stage 2 and each evaluation (AdaBN)
    adapts_batchnorm: ClassVar[bool] = False
    # each target batch also goes through the model as weak views (StepOutputs.logits_tw): consistency methods
    needs_weak_target: ClassVar[bool] = False

    def __init__(self, cfg, num_classes: int, feature_dim: int):
        super().__init__()
        self.cfg, self.num_classes, self.feature_dim = cfg, num_classes, feature_dim

    def forward(self, out: StepOutputs) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def on_epoch_start(self, epoch: int, target: TargetPass) -> None:
        """Called before epoch ``epoch`` (0-based) when ``uses_target_pass``; pseudo-labellers relabel here."""

    def configure_model(self, model: nn.Module) -> None:
        """Called once on the model before its optimiser is built (SHOT freezes the classifier here)."""

    def target_augmentation(self) -> str | None:
        """The strong augmentation (a name of ``da.data.policies.STRONG_POLICIES``) the method's target
        batches are drawn with, or None for the training transform."""
        return None

    def weak_view_logits(self, x_weak: torch.Tensor, start: int) -> torch.Tensor | None:
        """Logits of the target batch's weak views from a model of the method's own (an EMA teacher), or None:
        then the weak views join the step's forward through the trained model (``needs_weak_target``)."""
        return None

    def on_step_end(self) -> None:
        """Called after every optimiser step (an EMA teacher follows the trained model here)."""

    def align_weight(self, progress: float) -> float:
        """lambda of the config: ``align_weight``, ramped by 2 / (1 + exp(-10 p)) - 1 with ``align_schedule: ramp``."""
        cfg = self.cfg
        return cfg.align_weight * (grl_coefficient(progress) if cfg.align_schedule == "ramp" else 1.0)

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """The method's own trainable parameters at the head's learning rate (no decay on biases and norms)."""
        decay = [p for p in self.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.ndim < 2]
        groups = [{"name": "method_decay", "params": decay, "lr": lr, "weight_decay": weight_decay,
                   "lars_exclude": False},
                  {"name": "method_no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0,
                   "lars_exclude": True}]
        return [g for g in groups if g["params"]]


def register(cls: type[Method]) -> type[Method]:
    if "+" in cls.name or cls.name in REGISTRY:
        raise ValueError(f"method name {cls.name!r} is taken or contains '+'")
    inherited = [s for base in cls.__mro__[1:] for s in vars(base).get("settings", ())]
    declare(cls.name, "method", vars(cls).get("settings", ()), inherited)
    if cls.needs_target:  # the engine draws its target batches at --target-batch-size: a setting it reads
        USED_BY.setdefault("target_batch_size", set()).add(cls.name)
    REGISTRY[cls.name] = cls
    return cls


class Composite(Method):
    """``a+b+...``: the terms of each part, in the order named; needs a target batch if any part does."""

    name = "+"

    def __init__(self, parts: list[Method]):
        nn.Module.__init__(self)
        self.parts = nn.ModuleList(parts)
        self.needs_target = any(p.needs_target for p in parts)
        self.uses_target_pass = any(p.uses_target_pass for p in parts)
        self.adapts_batchnorm = any(p.adapts_batchnorm for p in parts)
        self.needs_weak_target = any(p.needs_weak_target for p in parts)

    def target_augmentation(self) -> str | None:
        """One target batch serves every part: all parts see the strong views if one part asks for them."""
        kinds = {k for k in (p.target_augmentation() for p in self.parts) if k is not None}
        if len(kinds) > 1:
            raise ValueError(f"the parts of {'+'.join(p.name for p in self.parts)} ask for different target "
                             f"augmentations ({', '.join(sorted(kinds))}); give them one")
        return kinds.pop() if kinds else None

    def forward(self, out: StepOutputs) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        for part in self.parts:
            terms.update(part(out))
        return terms

    def on_epoch_start(self, epoch: int, target: TargetPass) -> None:
        for part in self.parts:
            if part.uses_target_pass:
                part.on_epoch_start(epoch, target)

    def configure_model(self, model: nn.Module) -> None:
        for part in self.parts:
            part.configure_model(model)

    def weak_view_logits(self, x_weak: torch.Tensor, start: int) -> torch.Tensor | None:
        for part in self.parts:
            logits = part.weak_view_logits(x_weak, start)
            if logits is not None:
                return logits
        return None

    def on_step_end(self) -> None:
        for part in self.parts:
            part.on_step_end()
