"""Fine-tuning strategies: which stages train, and which BatchNorm layers keep their statistics.

- ``full``: everything trains.
- ``linear`` (feature extraction): every backbone stage is frozen, BatchNorm statistics included; the head trains.
- ``partial:K``: the last K stages and the head train; the stages before them are frozen as in ``linear``.
- ``gradual`` (ULMFiT, Howard & Ruder 2018): starts like ``linear``; :class:`GradualUnfreezer` unfreezes one
  stage every E epochs, top-down.
- ``lora:K:r``: the last K stages are frozen as in ``linear`` but their layers get LoRA adapters of rank r
  (``da.models.lora``, through peft), which train with the head; the stages before them are a frozen,
  cacheable prefix as in ``partial:K``.

A frozen stage has ``requires_grad=False`` and runs in eval mode (BatchNorm statistics, dropout and drop path
fixed), so it is a fixed function of its input.  ``freeze_bn`` additionally keeps every backbone BatchNorm in
eval mode (running statistics fixed, affine parameters still training where their stage trains), which matters
at small batch sizes; the head's bottleneck BatchNorm is new and always trains.  Frozen parameters stay in
the optimizer: without gradients AdamW and SGD skip them, and unfreezing needs no new parameter group.
"""

from __future__ import annotations

import re

from da.models.model import DAModel

STRATEGY_FORMS = "full | linear | partial:K (1 <= K <= number of stages) | gradual | lora:K:r (rank r >= 1)"


def parse_strategy(strategy: str, num_stages: int) -> tuple[str, int]:
    """``(kind, K)`` with K the number of trainable stages at the start (before any gradual unfreezing)."""
    if strategy == "full":
        return "full", num_stages
    if strategy in ("linear", "gradual"):
        return strategy, 0
    m = re.fullmatch(r"(partial):(\d+)|(lora):(\d+):(\d+)", strategy or "")
    if m:
        kind, k = (m.group(1), int(m.group(2))) if m.group(1) else (m.group(3), int(m.group(4)))
        if not 1 <= k <= num_stages:
            raise ValueError(f"strategy {strategy!r}: K must be in [1, {num_stages}] (this model has {num_stages} "
                             f"stages; use linear for K = 0, full for all)")
        if kind == "lora" and int(m.group(5)) < 1:
            raise ValueError(f"strategy {strategy!r}: the rank r must be >= 1")
        return kind, k
    raise ValueError(f"unknown strategy {strategy!r}; valid forms: {STRATEGY_FORMS}")


def lora_rank(strategy: str) -> int:
    """r of ``lora:K:r``."""
    return int(strategy.split(":")[2])


def apply_strategy(model: DAModel, strategy: str, freeze_bn: bool = False, lora_alpha: float = 0.0,
                   lora_dropout: float = 0.0, lora_targets: str = "all") -> None:
    """Set which parameters train and which BatchNorm layers stay in eval mode (see the module docstring);
    ``lora:K:r`` also adds the adapters, with ``lora_*`` their settings (``da.models.lora``)."""
    n = len(model.stages)
    kind, trainable = parse_strategy(strategy, n)
    for p in model.parameters():
        p.requires_grad_(True)
    model._frozen.clear()
    model.freeze_bn = bool(freeze_bn)
    model.strategy = strategy
    for i in range(n if kind == "lora" else n - trainable):
        model.set_stage_trainable(i, False)
    if kind == "lora":
        from da.models.lora import add_lora

        add_lora(model, range(n - trainable, n), lora_rank(strategy), lora_alpha, lora_dropout, lora_targets)
    model.train(model.training)


def frozen_prefix_length(model: DAModel, strategy: str) -> int:
    """How many leading stages stay frozen for the whole run (their outputs can be cached)."""
    n = len(model.stages)
    kind, trainable = parse_strategy(strategy, n)
    return 0 if kind in ("full", "gradual") else n - trainable  # lora: its adapted stages are not cacheable


class GradualUnfreezer:
    """Unfreezes stages top-down: the last stage at epoch ``every_epochs``, the next at ``2 * every_epochs``, ...

    ``on_epoch_start(epoch)`` (0-based) unfreezes every stage due by that epoch and returns the indices it
    unfroze.  Only ``requires_grad`` and train/eval modes change: the parameters are in the optimizer from
    the start, with the learning rate of their group.  ``state_dict``/``load_state_dict`` restore the state
    on resume.
    """

    def __init__(self, model: DAModel, every_epochs: int = 1):
        if every_epochs < 1:
            raise ValueError(f"every_epochs must be >= 1, got {every_epochs}")
        self.model = model
        self.every_epochs = int(every_epochs)
        self.unfrozen: list[int] = []

    def due(self, epoch: int) -> list[int]:
        """Stage indices that should be trainable at ``epoch``, in unfreezing order."""
        n = len(self.model.stages)
        count = min(n, max(0, epoch) // self.every_epochs)
        return list(range(n - 1, n - 1 - count, -1))

    def on_epoch_start(self, epoch: int) -> list[int]:
        """Unfreeze the stages due at ``epoch``; return those newly unfrozen (top-down order)."""
        new = [i for i in self.due(epoch) if i in self.model._frozen]
        for i in new:
            self.model.set_stage_trainable(i, True)
            self.unfrozen.append(i)
        return new

    def state_dict(self) -> dict:
        return {"every_epochs": self.every_epochs, "unfrozen": list(self.unfrozen)}

    def load_state_dict(self, state: dict) -> None:
        if state["every_epochs"] != self.every_epochs:
            raise ValueError(f"the saved unfreezer ran every {state['every_epochs']} epochs, this one every "
                             f"{self.every_epochs}")
        for i in state["unfrozen"]:
            if i in self.model._frozen:
                self.model.set_stage_trainable(i, True)
        self.unfrozen = list(state["unfrozen"])
