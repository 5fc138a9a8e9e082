"""Class-balanced self-training (CBST, Zou, Yu, Kumar and Wang, ECCV 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from da.methods.base import Method, Setting, StepOutputs, TargetPass, register


def class_balanced_pseudo_labels(logits: torch.Tensor, portion: float) -> tuple[torch.Tensor, torch.Tensor]:
    r"""CBST's pseudo-labels of N unlabelled examples: (labels (N,), selected (N,) bool).

    Zou et al. 2018, sec. 3.3 and Algorithm 1: for each class k, the confidences p_ik of the examples
    predicted k are sorted in decreasing order and lambda_k is the one at position round(portion * n_k)
    (at least the first), so each class keeps the same fraction of its own predictions however many the
    model makes of it.  An example is labelled y_i = argmax_k p_ik / lambda_k and selected when
    max_k p_ik / lambda_k >= 1.  A class nothing is predicted as has lambda_k = 1 (it selects only
    certain examples).  Reads predictions only.
    """
    if not 0 < portion <= 1:
        raise ValueError(f"portion must lie in (0, 1], got {portion}")
    p = torch.softmax(logits.double(), dim=1)
    conf, pred = p.max(1)
    k = p.shape[1]
    thresholds = torch.ones(k, dtype=torch.float64)
    for c in range(k):
        mine = conf[pred == c].sort(descending=True).values
        if len(mine):
            thresholds[c] = mine[max(1, round(portion * len(mine))) - 1]
    ratio = p / thresholds
    score, labels = ratio.max(1)
    return labels, score >= 1


@register
class ClassBalancedSelfTraining(Method):
    r"""cbst_weight * 1/B sum_{i selected} CE(target logits_i, y_i) over each target batch of B.

    The pseudo-labels come from the model's target pass before every epoch
    (:func:`class_balanced_pseudo_labels`), with the portion growing as in CBST: p = min(p0 + epoch * dp,
    p_max), p0 = 0.2, dp = 0.05, p_max = 0.5 (the paper's schedule, one round per epoch).  Examples are
    looked up by their index in the target training split; before ``adapt_from_epoch`` the term is 0.
    """

    name = "cbst"
    settings = (Setting("cbst_weight", float, 1.0, "weight of CBST's pseudo-label cross-entropy", low=0),)
    uses_target_pass = True
    portion_start, portion_step, portion_max = 0.2, 0.05, 0.5

    def __init__(self, cfg, num_classes: int, feature_dim: int):
        super().__init__(cfg, num_classes, feature_dim)
        self.register_buffer("pseudo_labels", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("selected", torch.zeros(0, dtype=torch.bool), persistent=False)

    def portion(self, epoch: int) -> float:
        return min(self.portion_start + epoch * self.portion_step, self.portion_max)

    def on_epoch_start(self, epoch: int, target: TargetPass) -> None:
        # the schedule counts rounds of self-training, from the first epoch that has pseudo-labels
        labels, selected = class_balanced_pseudo_labels(target.logits, self.portion(epoch - self.cfg.adapt_from_epoch))
        self.pseudo_labels, self.selected = labels.to(self.selected.device), selected.to(self.selected.device)

    def forward(self, out: StepOutputs) -> dict:
        logits = out.logits_t.float()
        if not len(self.selected):  # before --adapt-from-epoch: no pseudo-labels yet
            return {self.name: logits.sum() * 0.0}
        idx = out.idx_t.to(self.selected.device)
        mask = self.selected[idx].to(logits.device, logits.dtype)
        ce = F.cross_entropy(logits, self.pseudo_labels[idx].to(logits.device), reduction="none")
        return {self.name: self.cfg.cbst_weight * (ce * mask).sum() / len(logits)}
