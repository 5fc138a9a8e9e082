"""Information maximisation on the target predictions (SHOT's IM, Liang et al. 2020): im_weight * IM."""

from __future__ import annotations

from da.losses.information import InformationMaximization
from da.methods.base import Method, StepOutputs, register


@register
class InformationMaximizationMethod(Method):
    name = "im"
    diversity_weight = 1.0

    def __init__(self, cfg, num_classes: int, feature_dim: int):
        super().__init__(cfg, num_classes, feature_dim)
        self.loss = InformationMaximization(diversity_weight=self.diversity_weight)

    def forward(self, out: StepOutputs) -> dict:
        return {self.name: self.cfg.im_weight * self.loss(out.logits_t.float())}
