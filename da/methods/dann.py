"""DANN (Ganin et al., JMLR 2016): a domain discriminator on the bottleneck features behind gradient reversal.

The term is lambda * L_adv(D(R(z_s)), D(R(z_t))) with L_adv of :class:`~da.losses.adversarial.DomainAdversarialLoss`,
R the gradient reversal layer whose coefficient follows DANN's 2 / (1 + exp(-10 p)) - 1 over training
progress p, and lambda the config's ``align_weight``.  D is tllib's discriminator: two hidden layers of
``dann_hidden`` units with BatchNorm and ReLU, one logit out.  Its parameters are the method's own: they
join the optimizer (head learning rate) and the checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

from da.losses.adversarial import DomainAdversarialLoss, grad_reverse, grl_coefficient
from da.methods.base import Method, Setting, StepOutputs, register


def discriminator(in_dim: int, hidden: int) -> nn.Sequential:
    """Linear-BN-ReLU x 2, then Linear to one logit (source vs target)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, 1))


@register
class DANN(Method):
    name = "dann"
    settings = (Setting("dann_hidden", int, 1024, "width of the domain discriminator's two hidden layers", low=1),)

    def __init__(self, cfg, num_classes: int, feature_dim: int):
        super().__init__(cfg, num_classes, feature_dim)
        self.discriminator = discriminator(feature_dim, cfg.dann_hidden)
        self.loss = DomainAdversarialLoss()

    def forward(self, out: StepOutputs) -> dict:
        # one discriminator pass over both domains, as the model sees them in one batch
        z = grad_reverse(torch.cat([out.z_s, out.z_t]).float(), grl_coefficient(out.progress))
        d = self.discriminator(z)
        return {"dann": self.align_weight(out.progress) * self.loss(d[: len(out.z_s)], d[len(out.z_s):])}
