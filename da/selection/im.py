"""Information maximisation as a validator (Musgrave et al., ECCV 2022, "Benchmarking validation methods
for unsupervised domain adaptation"): confident and diverse target predictions."""

from __future__ import annotations

import torch

from da.selection.base import EpochOutputs, Validator, entropy, register


@register
class InformationMaximizationScore(Validator):
    r"""score = H(pbar) - 1/N sum_i H(p_i), pbar = 1/N sum_i p_i, on the unlabelled target training split
    (the negated IM loss of SHOT with diversity weight 1; higher is better, at most log C)."""

    name = "im"

    def score(self, out: EpochOutputs) -> float:
        p = torch.softmax(out.target_train.logits.double(), 1)
        return float(entropy(p.mean(0)) - entropy(p).mean())
