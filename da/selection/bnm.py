"""Batch nuclear norm (Cui et al., CVPR 2020, "Towards discriminability and diversity"; a validator in
Musgrave et al. 2022)."""

from __future__ import annotations

import torch

from da.selection.base import EpochOutputs, Validator, register


@register
class BatchNuclearNorm(Validator):
    r"""score = ||P||_* / N, P (N, C) the target prediction matrix (softmax rows), ||.||_* the nuclear norm
    (sum of singular values).  Large when predictions are both confident (rows near one-hot) and diverse
    (columns spread over classes); at most sqrt(N min(N, C)) / N."""

    name = "bnm"

    def score(self, out: EpochOutputs) -> float:
        p = torch.softmax(out.target_train.logits.double(), 1)
        return float(torch.linalg.svdvals(p).sum() / len(p))
