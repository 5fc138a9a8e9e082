"""AaD, attracting and dispersing (Yang, Wang, Wang, Jui and van de Weijer, "Attracting and Dispersing: A
Simple Approach for Source-free Domain Adaptation", NeurIPS 2022): each target prediction is pulled
towards the predictions of its K nearest target neighbours in feature space and pushed away from the other
predictions of its batch.

This file is the whole method: the loss, its use of the target memory (``da.methods.memory``, shared with
NRC), and its two settings
(``aad_k``, ``aad_beta``), which the config, the flags, the checks and the hash take from here.
"""

from __future__ import annotations

import torch
from torch import nn

from da.methods.base import Method, Setting, StepOutputs, TargetPass, register
from da.methods.memory import TargetMemory


class AttractDisperseLoss(nn.Module):
    r"""AaD's loss (the paper's eq. 6) of a target batch of B predictions.

    With p_i = softmax(logits_i) (B, C), s_j the stored predictions of the batch's K nearest neighbours
    ``neighbour_probs`` (B, K, C), detached, and alpha the dispersion weight:

        L = -1/B sum_i sum_{j in N_K(i)} p_i^T s_j  +  alpha * 1/B sum_i sum_{m != i} p_i^T p_m

    The first term (attracting) makes a prediction agree with its neighbours', the second (dispersing) keeps
    the batch's predictions apart so that they do not all collapse into one class.  Returns a scalar; the
    paper decays alpha over training as (1 + 10 p)^(-beta) (:meth:`AaDMethod.alpha`).
    """

    def forward(self, logits: torch.Tensor, neighbour_probs: torch.Tensor, alpha: float) -> torch.Tensor:
        p = torch.softmax(logits.float(), dim=1)
        attract = torch.einsum("bc,bkc->b", p, neighbour_probs.to(p)).mean()
        gram = p @ p.T
        disperse = (gram.sum(1) - gram.diagonal()).mean()
        return -attract + alpha * disperse


@register
class AaDMethod(Method):
    r"""AaD's loss on each target batch, its neighbours found in a memory of the whole target training split.

    The memory (features normalised to unit length, and softmax predictions, one row per target-train image)
    is filled from the model's target pass before every epoch and, as in the paper, each batch writes its own
    rows (detached) before the neighbours are looked up; the K nearest neighbours are by cosine similarity, the
    example itself left out.  Before ``adapt_from_epoch`` there is no memory and the term is 0.
    """

    name = "aad"
    uses_target_pass = True
    settings = (Setting("aad_k", int, 5, "nearest target neighbours each prediction is attracted to", low=1),
                Setting("aad_beta", float, 5.0, "decay of the dispersion weight alpha = (1 + 10 p)^(-beta) over "
                        "training progress p (0: constant alpha = 1)", low=0))

    def __init__(self, cfg, num_classes: int, feature_dim: int):
        super().__init__(cfg, num_classes, feature_dim)
        self.loss = AttractDisperseLoss()
        self.memory = TargetMemory(num_classes, feature_dim)

    def alpha(self, progress: float) -> float:
        return (1.0 + 10.0 * progress) ** (-self.cfg.aad_beta)

    def on_epoch_start(self, epoch: int, target: TargetPass) -> None:
        self.memory.refill(target)

    def forward(self, out: StepOutputs) -> dict:
        logits = out.logits_t.float()
        if not len(self.memory):  # before --adapt-from-epoch: no memory yet
            return {self.name: logits.sum() * 0.0}
        idx = out.idx_t.to(self.memory.probs.device)
        self.memory.write(idx, out.z_t, logits)
        neighbours = self.memory.nearest(idx, min(self.cfg.aad_k, len(self.memory) - 1))
        neighbour_probs = self.memory.probs[neighbours].to(logits.device)
        return {self.name: self.loss(logits, neighbour_probs, self.alpha(out.progress))}
