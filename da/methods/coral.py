"""Deep CORAL (Sun & Saenko, ECCV-W 2016): lambda * CORAL(z_s, z_t) on the bottleneck features; with
``--prior``, weighted source statistics (class ratio q-hat / p_train per example, as WDAN weights MMD)."""

from __future__ import annotations

from da.losses.coral import CONVENTIONS, CORAL
from da.methods.base import Method, Setting, StepOutputs, register


@register
class CoralMethod(Method):
    name = "coral"
    settings = (Setting("coral_convention", str, "deep_coral", "deep_coral (||C_s - C_t||_F^2 / 4d^2, the paper's) "
                        "or domainbed (mean and covariance differences averaged over entries, as DomainBed and tllib)", choices=CONVENTIONS, hash="always"),)

    def __init__(self, cfg, num_classes: int, feature_dim: int):
        super().__init__(cfg, num_classes, feature_dim)
        self.loss = CORAL(convention=cfg.coral_convention)

    def forward(self, out: StepOutputs) -> dict:
        return {"coral": self.align_weight(out.progress) * self.loss(out.z_s, out.z_t, out.w_s)}
