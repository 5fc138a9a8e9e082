"""Target entropy (Morerio et al., ICLR 2018, used as a validator): confident target predictions."""

from __future__ import annotations

import torch

from da.selection.base import EpochOutputs, Validator, entropy, register


@register
class NegativeEntropy(Validator):
    r"""score = -1/N sum_i H(p_i), p_i = softmax(logits_i) on the unlabelled target training split
    (higher is better: lower mean entropy).  Rewards confidence, also a confidently wrong collapse."""

    name = "entropy"

    def score(self, out: EpochOutputs) -> float:
        p = torch.softmax(out.target_train.logits.double(), 1)
        return float(-entropy(p).mean())
