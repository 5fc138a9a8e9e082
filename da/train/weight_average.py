"""An exponential moving average of the trained weights, the model a stage-2 run evaluates (``--weight-ema d``).

After every optimiser step, for every floating-point parameter and buffer theta of the trained model

    theta_bar <- d * theta_bar + (1 - d) * theta        (theta_bar = theta at the start)

(Polyak and Juditsky, "Acceleration of Stochastic Approximation by Averaging", SIAM J. Control Optim. 1992, in
the exponential form of Tarvainen and Valpola, "Mean teachers are better role models", NeurIPS 2017).  The
BatchNorm running statistics are averaged like the weights, as timm's ``ModelEmaV3`` does by default, so that
they follow the same window of about 1 / (1 - d) steps; integer buffers (BatchNorm's step counters) are
copied.  Weights that training does not update are equal in both models and stay equal (``lerp`` of two equal
numbers is that number).

The averaged model is what the run evaluates, scores with the validators, measures drift on, hands to a
method's epoch-start hook (SHOT's and CBST's pseudo-labels come from it) and saves as its selected model; the
trained model only trains.  It is part of every checkpoint, so a resumed run continues it bit-identically.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """``d``-decayed average of ``model``'s weights, held in a copy of the model kept in evaluation mode."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"the decay of a weight average must lie in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)  # never trained, never in an optimiser

    def _pairs(self, model: nn.Module):
        mine = dict(self.module.named_parameters()) | dict(self.module.named_buffers())
        theirs = dict(model.named_parameters()) | dict(model.named_buffers())
        if mine.keys() != theirs.keys():  # a model changed after the copy (adapters added, say)
            raise RuntimeError(f"the averaged model does not fit the trained one: {sorted(mine.keys() ^ theirs.keys())[:3]}")
        return [(mine[k], theirs[k]) for k in mine]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for avg, cur in self._pairs(model):
            if avg.is_floating_point():
                avg.lerp_(cur.detach(), 1.0 - self.decay)
            else:
                avg.copy_(cur)

    def state_dict(self, leave_out: set[str] = frozenset()) -> dict[str, torch.Tensor]:
        """The averaged model's state without the keys ``leave_out`` (the frozen weights a checkpoint omits)."""
        return {k: v for k, v in self.module.state_dict().items() if k not in leave_out}

    def load_state_dict(self, state: dict[str, torch.Tensor], left_out: set[str] = frozenset()) -> None:
        """Load a :meth:`state_dict` made without the keys ``left_out``: those keep the values of the model
        this average was copied from."""
        missing, unexpected = self.module.load_state_dict(state, strict=False)
        if unexpected or set(missing) != set(left_out):
            raise RuntimeError(f"the averaged weights saved do not fit the model (unexpected {unexpected[:3]}, "
                               f"missing {sorted(set(missing) - set(left_out))[:3]})")
