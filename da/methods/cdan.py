"""CDAN (Long et al., NeurIPS 2018): a domain discriminator conditioned on the classifier's predictions.

The discriminator sees h = T(z, g) with z the bottleneck features and g = softmax(logits) (detached, as in
the authors' code), T the multilinear map z (x) g, or its randomised version of width
``cdan_randomized_dim`` when d * C > 4096.  The term is lambda * L_adv(D(R(h_s)), D(R(h_t)), w_s, w_t), with
the gradient reversal R following 2 / (1 + exp(-10 p)) - 1.  ``cdan_entropy`` (the default) is CDAN+E:
each example is weighted by 1 + exp(-H(g)), normalised to mean 1 within its domain (eq. 10), so that
confident predictions, whose conditioning is trustworthy, weigh more.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from da.losses.adversarial import (RANDOMIZE_ABOVE, DomainAdversarialLoss, RandomizedMultilinearMap, entropy_weights,
                                   grad_reverse, grl_coefficient, multilinear_map)
from da.methods.base import Method, Setting, StepOutputs, register
from da.methods.dann import discriminator


@register
class CDAN(Method):
    name = "cdan"
    settings = (Setting("cdan_hidden", int, 1024, "width of the domain discriminator's two hidden layers", low=1),
                Setting("cdan_entropy", bool, True, "CDAN+E: weight examples by 1 + exp(-entropy) of their prediction"),
                Setting("cdan_randomized_dim", int, 1024, "width of the randomised multilinear map, used when "
                        "d x C > 4096", low=1))

    def __init__(self, cfg, num_classes: int, feature_dim: int):
        super().__init__(cfg, num_classes, feature_dim)
        self.randomized = feature_dim * num_classes > RANDOMIZE_ABOVE
        if self.randomized:
            self.map = RandomizedMultilinearMap(feature_dim, num_classes, cfg.cdan_randomized_dim, seed=cfg.seed)
            in_dim = cfg.cdan_randomized_dim
        else:
            self.map = multilinear_map
            in_dim = feature_dim * num_classes
        self.discriminator = discriminator(in_dim, cfg.cdan_hidden)
        self.loss = DomainAdversarialLoss()

    def forward(self, out: StepOutputs) -> dict:
        z = torch.cat([out.z_s, out.z_t]).float()
        g = F.softmax(torch.cat([out.logits_s, out.logits_t]).float(), dim=1).detach()
        h = grad_reverse(self.map(z, g), grl_coefficient(out.progress))
        d = self.discriminator(h)
        n = len(out.z_s)
        w_s = w_t = None
        if self.cfg.cdan_entropy:
            w_s, w_t = entropy_weights(g[:n]), entropy_weights(g[n:])
        return {"cdan": self.align_weight(out.progress) * self.loss(d[:n], d[n:], w_s, w_t)}
