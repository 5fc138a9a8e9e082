"""NRC, neighbourhood reciprocity clustering (Yang, Wang, van de Weijer, Herranz and Jui, "Exploiting the
Intrinsic Neighborhood Structure for Source-free Domain Adaptation", NeurIPS 2021): each target prediction is
pulled towards the stored predictions of its K nearest target neighbours, more strongly where the neighbourhood
is reciprocal, and, weakly, towards those of its neighbours' M nearest neighbours; a diversity term keeps the
batch from collapsing onto a few classes.

This file is the whole method: the loss, its use of the target memory (``da.methods.memory``, AaD's too:
refilled from the model's target pass before every epoch, so a resumed run rebuilds it exactly), and its
three settings (``nrc_k``, ``nrc_m``, ``nrc_r``), which the config, the flags, the checks and the hash take
from here.
"""

from __future__ import annotations

import torch
from torch import nn

from da.methods.base import Method, Setting, StepOutputs, TargetPass, register
from da.methods.memory import TargetMemory


class NeighbourhoodReciprocityLoss(nn.Module):
    r"""NRC's loss (the paper's eq. 7) of a target batch of B predictions p_i = softmax(logits_i) (B, C).

    The memory's stored predictions S are detached; ``neighbour_probs`` (B, K, C) are those of each
    example's K nearest neighbours N_K(i), ``affinity`` (B, K) their weights A_ik (1 where i is among k's own K
    nearest neighbours, a reciprocal pair, else r), ``expanded_probs`` (B, K, M, C) those of the M nearest
    neighbours E_M(k) of each neighbour k, ``expanded_weight`` (B, K, M) their weights (r, and 0 where m is i
    itself, as in the paper's code), ``self_probs`` (B, C) the memory's entry of i itself:

        L_N    = -1/B sum_i sum_{k in N_K(i)} A_ik S_k^T p_i
        L_E    = -1/B sum_i sum_{k in N_K(i)} sum_{m in E_M(k)} w_ikm S_m^T p_i
        L_self = -1/B sum_i S_i^T p_i
        L_div  = sum_c pbar_c log(pbar_c / q_c),   pbar = 1/B sum_i p_i

    L = L_N + L_E + L_self + L_div.  q is uniform in the paper (then L_div = -H(pbar) + log C); with a target
    prior estimate ``prior`` (``--prior``), q is that estimate, as for IM's diversity term.  Returns a scalar.
    """

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = float(eps)

    def forward(self, logits: torch.Tensor, neighbour_probs: torch.Tensor, affinity: torch.Tensor,
                expanded_probs: torch.Tensor, expanded_weight: torch.Tensor, self_probs: torch.Tensor,
                prior: torch.Tensor | None = None) -> torch.Tensor:
        p = torch.softmax(logits.float(), dim=1)
        neighbours = torch.einsum("bc,bkc->bk", p, neighbour_probs.to(p))
        l_n = -(affinity.to(p) * neighbours).sum(1).mean()
        l_e = -(expanded_weight.to(p) * torch.einsum("bc,bkmc->bkm", p, expanded_probs.to(p))).sum((1, 2)).mean()
        l_self = -(p * self_probs.to(p)).sum(1).mean()
        mean_p = p.mean(0)
        q = torch.full_like(mean_p, 1.0 / len(mean_p)) if prior is None else prior.to(mean_p)
        l_div = (mean_p * (torch.log(mean_p + self.eps) - torch.log(q + self.eps))).sum()
        return l_n + l_e + l_self + l_div


@register
class NRCMethod(Method):
    r"""NRC's loss on each target batch (unweighted, as in the paper), its neighbours found in a memory of the
    whole target training split (unit-length features and softmax predictions, one row per image).

    The memory is filled from the model's target pass before every epoch; each batch writes its own rows
    (detached) before the neighbours are looked up, as in the paper's code.  Neighbours are by cosine
    similarity, the example itself left out; a neighbourhood is reciprocal where i is also among k's K nearest.
    With ``--prior`` the diversity term pulls the batch's mean prediction towards the estimated target prior.
    Before ``adapt_from_epoch`` there is no memory and the term is 0.
    """

    name = "nrc"
    uses_target_pass = True
    settings = (Setting("nrc_k", int, 3, "nearest target neighbours of each prediction (K: 3 in the paper's "
                        "Office-31 and Office-Home runs)", low=1),
                Setting("nrc_m", int, 2, "nearest neighbours of each neighbour, the expanded neighbourhood (M: 2 in "
                        "the paper's Office-31 and Office-Home runs)", low=0),
                Setting("nrc_r", float, 0.1, "affinity of a non-reciprocal or expanded neighbour (r: 0.1 in the "
                        "paper)", low=0, high=1))

    def __init__(self, cfg, num_classes: int, feature_dim: int):
        super().__init__(cfg, num_classes, feature_dim)
        self.loss = NeighbourhoodReciprocityLoss()
        self.memory = TargetMemory(num_classes, feature_dim)
        self.prior = None

    def on_epoch_start(self, epoch: int, target: TargetPass) -> None:
        self.memory.refill(target)
        self.prior = target.prior

    def forward(self, out: StepOutputs) -> dict:
        logits = out.logits_t.float()
        if not len(self.memory):  # before --adapt-from-epoch: no memory yet
            return {self.name: logits.sum() * 0.0}
        memory = self.memory
        idx = out.idx_t.to(memory.probs.device)
        memory.write(idx, out.z_t, logits)
        k, m = (min(n, len(memory) - 1) for n in (self.cfg.nrc_k, self.cfg.nrc_m))
        neighbours = memory.nearest(idx, k)  # (B, K)
        # one search for the neighbours' own neighbours serves both the reciprocity test (K) and the expansion (M)
        second = memory.nearest(neighbours.reshape(-1), max(k, m))  # (B K, max(K, M)), nearest first
        reciprocal = (second[:, :k] == idx.repeat_interleave(k)[:, None]).any(1)
        affinity = torch.where(reciprocal.reshape(len(idx), k), 1.0, self.cfg.nrc_r)
        expanded = second[:, :m].reshape(len(idx), k, m)
        expanded_weight = torch.where(expanded == idx[:, None, None], 0.0, self.cfg.nrc_r)  # never i itself
        prior = None if self.prior is None else self.prior.to(logits)
        terms = (memory.probs[neighbours], affinity, memory.probs[expanded], expanded_weight, memory.probs[idx])
        return {self.name: self.loss(logits, *(t.to(logits.device) for t in terms), prior)}
