"""SHOT-style hypothesis transfer (Liang, Hu and Feng, ICML 2020): information maximisation plus
cross-entropy on self-supervised pseudo-labels from class centroids of the target features."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from da.methods.base import Setting, StepOutputs, TargetPass, register
from da.methods.im import InformationMaximizationMethod


def centroid_pseudo_labels(logits: torch.Tensor, features: torch.Tensor, rounds: int = 2) -> torch.Tensor:
    r"""SHOT's pseudo-labels (sec. 3.2, eq. 4-6) of N unlabelled examples: (N,) class indices.

    With p_i = softmax(logits_i) and the features f_i normalised to unit length, round 1 takes the
    prediction-weighted centroids c_k = sum_i p_ik f_i / sum_i p_ik and labels each example with its
    nearest centroid by cosine distance, y_i = argmin_k (1 - cos(f_i, c_k)); each further round
    recomputes the centroids as the means of the examples so labelled and relabels.  As in SHOT, only
    classes that the model predicts for at least one example have a centroid (an empty class would
    otherwise attract examples through its meaningless centroid).  Reads predictions and features only.
    """
    p = torch.softmax(logits.double(), dim=1)
    f = F.normalize(features.double(), dim=1)
    k = p.shape[1]
    present = torch.bincount(p.argmax(1), minlength=k) > 0
    weights = p
    labels = p.argmax(1)
    for _ in range(rounds):
        centroids = F.normalize((weights.T @ f) / (weights.sum(0)[:, None] + 1e-8), dim=1)
        cosine = f @ centroids.T
        cosine[:, ~present] = -torch.inf
        labels = cosine.argmax(1)
        weights = F.one_hot(labels, k).double()
        present = weights.sum(0) > 0
    return labels


@register
class ShotMethod(InformationMaximizationMethod):
    r"""im_weight * (IM(target logits [, q-hat]) + shot_weight * CE(target logits, pseudo-labels)).

    SHOT's objective is L_ent + L_div + beta L_pseudo with beta = 0.3; here it is scaled by ``im_weight``
    like ``--method im`` (the source cross-entropy stays, as the source data is at hand), keeping
    SHOT's ratio beta = ``shot_weight``.  The pseudo-labels are recomputed before every epoch from the
    model's target pass (:func:`centroid_pseudo_labels`) and looked up by each target example's index;
    before ``adapt_from_epoch`` there are none and the term is IM alone.
    ``shot_freeze_classifier`` freezes the classifier as SHOT does (its hypothesis transfer keeps the
    source hypothesis and adapts the features to it).
    """

    name = "shot"
    settings = (Setting("shot_weight", float, 0.3, "SHOT's beta: its pseudo-label cross-entropy relative to IM "
                        "(the paper's 0.3)", low=0),
                Setting("shot_freeze_classifier", bool, False, "keep the classifier (the source hypothesis) frozen, "
                        "as SHOT does"))
    uses_target_pass = True

    def __init__(self, cfg, num_classes: int, feature_dim: int):
        super().__init__(cfg, num_classes, feature_dim)
        self.uses_target_pass = True
        self.register_buffer("pseudo_labels", torch.zeros(0, dtype=torch.long), persistent=False)

    def configure_model(self, model) -> None:
        if self.cfg.shot_freeze_classifier:
            model.head.classifier.requires_grad_(False)

    def on_epoch_start(self, epoch: int, target: TargetPass) -> None:
        super().on_epoch_start(epoch, target)
        self.pseudo_labels = centroid_pseudo_labels(target.logits, target.features).to(self.pseudo_labels.device)

    def forward(self, out: StepOutputs) -> dict:
        logits = out.logits_t.float()
        im = self.loss(logits, self.target_prior(logits))
        if not len(self.pseudo_labels):  # before --adapt-from-epoch: IM alone
            return {self.name: self.cfg.im_weight * im}
        pseudo = F.cross_entropy(logits, self.pseudo_labels[out.idx_t.to(self.pseudo_labels.device)].to(logits.device))
        return {self.name: self.cfg.im_weight * (im + self.cfg.shot_weight * pseudo)}
