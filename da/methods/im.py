"""Information maximisation on the target predictions (SHOT's IM, Liang et al. 2020): im_weight * IM.

With ``--prior`` the diversity term pulls the mean prediction towards the estimated target class prior
(KL(pbar || q-hat)) instead of towards uniform; the estimate arrives with each epoch's target pass.
"""

from __future__ import annotations

from da.losses.information import InformationMaximization
from da.methods.base import Method, Setting, StepOutputs, TargetPass, register


@register
class InformationMaximizationMethod(Method):
    name = "im"
    settings = (Setting("im_weight", float, 0.3, "weight of information maximisation (im, ent, and SHOT's IM term)",
                        low=0, hash="always"),)
    diversity_weight = 1.0

    def __init__(self, cfg, num_classes: int, feature_dim: int):
        super().__init__(cfg, num_classes, feature_dim)
        self.loss = InformationMaximization(diversity_weight=self.diversity_weight)
        self.uses_target_pass = bool(cfg.prior) and self.diversity_weight > 0
        self.prior = None

    def on_epoch_start(self, epoch: int, target: TargetPass) -> None:
        self.prior = target.prior

    def target_prior(self, like):
        return None if self.prior is None else self.prior.to(like)

    def forward(self, out: StepOutputs) -> dict:
        logits = out.logits_t.float()
        return {self.name: self.cfg.im_weight * self.loss(logits, self.target_prior(logits))}
