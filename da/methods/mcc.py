"""Minimum class confusion (MCC, Jin et al. 2020): mcc_weight * MCC(target logits)."""

from __future__ import annotations

from da.losses.mcc import MinimumClassConfusion
from da.methods.base import Method, Setting, StepOutputs, register


@register
class MinimumClassConfusionMethod(Method):
    name = "mcc"
    settings = (Setting("mcc_weight", float, 1.0, "weight of the minimum class confusion loss", low=0),
                Setting("mcc_temperature", float, 2.5, "MCC's softmax temperature (2.5 as in the "
                        "Transfer-Learning-Library)", low=0, low_open=True))

    def __init__(self, cfg, num_classes: int, feature_dim: int):
        super().__init__(cfg, num_classes, feature_dim)
        self.loss = MinimumClassConfusion(temperature=cfg.mcc_temperature)

    def forward(self, out: StepOutputs) -> dict:
        return {self.name: self.cfg.mcc_weight * self.loss(out.logits_t.float())}
