"""Minimum class confusion (MCC, Jin et al. 2020): mcc_weight * MCC(target logits)."""

from __future__ import annotations

from da.losses.mcc import MinimumClassConfusion
from da.methods.base import Method, StepOutputs, register


@register
class MinimumClassConfusionMethod(Method):
    name = "mcc"

    def __init__(self, cfg, num_classes: int, feature_dim: int):
        super().__init__(cfg, num_classes, feature_dim)
        self.loss = MinimumClassConfusion(temperature=cfg.mcc_temperature)

    def forward(self, out: StepOutputs) -> dict:
        return {self.name: self.cfg.mcc_weight * self.loss(out.logits_t.float())}
