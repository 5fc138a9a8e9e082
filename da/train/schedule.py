"""Learning-rate schedules: torch's own schedulers, stepped once per optimisation step."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (CosineAnnealingLR, CosineAnnealingWarmRestarts, LambdaLR, LinearLR,
                                      LRScheduler, SequentialLR)


def build_scheduler(optimizer: Optimizer, name: str, total_steps: int, steps_per_epoch: int,
                    warmup_epochs: float = 0.0, restart_t0: int = 1, restart_t_mult: int = 2) -> LRScheduler:
    """Linear warmup, then cosine decay to zero (``cosine``), cosine with warm restarts every
    ``restart_t0 * restart_t_mult^i`` epochs (``restarts``), or a constant rate."""
    warmup = int(round(warmup_epochs * steps_per_epoch))
    if name == "cosine":
        main = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup))
    elif name == "restarts":
        main = CosineAnnealingWarmRestarts(optimizer, T_0=max(1, restart_t0 * steps_per_epoch), T_mult=restart_t_mult)
    elif name == "constant":
        main = LambdaLR(optimizer, lambda step: 1.0)
    else:
        raise ValueError(f"unknown schedule {name!r}; choose from cosine, restarts, constant")
    if warmup <= 0:
        return main
    ramp = LinearLR(optimizer, start_factor=1.0 / (warmup + 1), end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [ramp, main], milestones=[warmup])

