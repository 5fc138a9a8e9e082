"""FixMatch consistency self-training (Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning with
Consistency and Confidence", NeurIPS 2020) for domain adaptation, with AdaMatch's relative confidence
threshold as an option (Berthelot et al., "AdaMatch: A Unified Approach to Semi-Supervised Learning and Domain
Adaptation", ICLR 2022).

The model's prediction on a weak view of a target image becomes the label of an augmented view of the same
image where it is confident.  Here the weak view is the image as the validators see it (the evaluation
transform: resize and centre crop), and the augmented view is the method's ordinary target batch (the training
transform: random resized crop, flips, 90-degree rotations, colour jitter; with a frozen prefix, one of its
cached views).  Both go through the model in the step's one forward, as in FixMatch.  With ``fixmatch_strong``
``randaugment`` or ``trivialaugment`` the augmented view is the training transform's crop, flips and rotations
followed by that torchvision policy instead of the colour jitter (``da.data.transforms.train_transform``): the
paper's strong view, without Cutout.  With a frozen prefix the strong views are cached through it like any
training view (computed once, then read: no cost per epoch), so the augmented view is one of ``cache_views``
fixed draws per image rather than a new draw each step, the one way this differs from the papers there.  In a
combination (``fixmatch+mcc``) the other parts' target batch is the same strong view.
AdaMatch's distribution alignment and its random logit interpolation are not part of this method.

With ``fixmatch_ema`` > 0 the pseudo-labels come from an EMA teacher instead of the trained model itself (Mean
Teacher, Tarvainen and Valpola, NeurIPS 2017; the exponential moving average FixMatch keeps for evaluation): a copy
of the start model whose weights follow the trained ones after every step, theta_T <- d theta_T + (1 - d) theta
(BatchNorm statistics copied), run in evaluation mode on the weak views, which then stay out of the trained
model's forward.  The teacher is part of the method's state, so a resumed run continues it exactly.

This file is the whole method: the loss, the teacher and its five settings, which the config, the flags, the checks and the
hash take from here.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from da.data.policies import STRONG_POLICIES
from da.methods.base import Method, Setting, StepOutputs, register


class ConfidentPseudoLabelLoss(nn.Module):
    r"""FixMatch's unlabelled loss (the paper's eq. 4) of a target batch of B images.

    With q_b = softmax(weak_logits_b) (B, C), detached, and p_b = softmax(strong_logits_b) (B, C):

        L = 1/B sum_b 1[max_c q_bc >= t] * CE(argmax_c q_bc, p_b)

    normalised by the whole batch B (not by the number of confident images), as in the paper.  ``threshold`` t
    is a float, or a 0-d tensor (AdaMatch's relative threshold, computed per batch).  Returns the scalar loss
    and the share of the batch above the threshold.
    """

    def forward(self, strong_logits: torch.Tensor, weak_logits: torch.Tensor,
                threshold: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = torch.softmax(weak_logits.detach().float(), dim=1)
        confidence, pseudo = q.max(dim=1)
        mask = (confidence >= threshold).float()
        ce = F.cross_entropy(strong_logits.float(), pseudo, reduction="none")
        return (mask * ce).mean(), mask.mean()


@register
class FixMatchMethod(Method):
    r"""``fixmatch_weight * L``, L the loss above on the target batch (strong) and its weak views.

    With ``fixmatch_relative`` the threshold is AdaMatch's relative one: t = ``fixmatch_threshold`` times the
    mean confidence (max softmax) of the step's source batch, detached, so that it follows the model's
    calibration on the labelled domain instead of a fixed number the target may never reach.
    """

    name = "fixmatch"
    needs_weak_target = True
    settings = (Setting("fixmatch_weight", float, 1.0, "weight of the confident pseudo-label loss (lambda_u, 1 in "
                        "FixMatch)", low=0),
                Setting("fixmatch_threshold", float, 0.95, "confidence a weak-view prediction needs to become a "
                        "label (tau: 0.95 in FixMatch; 0.9, relative, in AdaMatch)", low=0, high=1),
                Setting("fixmatch_relative", bool, False, "AdaMatch's relative threshold: tau times the mean "
                        "confidence of the source batch"),
                Setting("fixmatch_ema", float, 0.0, "decay d of an EMA teacher that labels the weak views (0: the "
                        "trained model labels them, as in FixMatch; 0.999: FixMatch's EMA and Mean Teacher's)",
                        low=0, high=0.99999, hash="unless_default"),  # added after runs existed: their hashes stay
                Setting("fixmatch_strong", str, "train", "the augmented view's policy: train (the training "
                        "transform) or a strong torchvision policy after its crop and flips (RandAugment, as in "
                        "FixMatch; TrivialAugment)", choices=("train", *STRONG_POLICIES), hash="unless_default"))

    def __init__(self, cfg, num_classes: int, feature_dim: int):
        super().__init__(cfg, num_classes, feature_dim)
        self.loss = ConfidentPseudoLabelLoss()
        self.teacher: nn.Module | None = None
        self._student: list[nn.Module] = []  # a list: the trained model is not the method's submodule

    def configure_model(self, model: nn.Module) -> None:
        if self.cfg.fixmatch_ema > 0:
            self.teacher = copy.deepcopy(model).eval()
            self.teacher.requires_grad_(False)  # never in an optimiser; saved with the method's state
            self._student = [model]

    def target_augmentation(self) -> str | None:
        return None if self.cfg.fixmatch_strong == "train" else self.cfg.fixmatch_strong

    def weak_view_logits(self, x_weak: torch.Tensor, start: int) -> torch.Tensor | None:
        if self.teacher is None:
            return None
        with torch.no_grad():
            return self.teacher.eval().forward_from(x_weak, start)[0]

    @torch.no_grad()
    def on_step_end(self) -> None:
        if self.teacher is None:
            return
        d = self.cfg.fixmatch_ema
        student = self._student[0]
        for t, p in zip(self.teacher.parameters(), student.parameters()):
            if p.requires_grad:  # frozen weights are equal already
                t.mul_(d).add_(p.detach().to(t), alpha=1.0 - d)
        for t, b in zip(self.teacher.buffers(), student.buffers()):
            t.copy_(b)

    def threshold(self, logits_s: torch.Tensor) -> float | torch.Tensor:
        tau = self.cfg.fixmatch_threshold
        if not self.cfg.fixmatch_relative:
            return tau
        return tau * torch.softmax(logits_s.detach().float(), dim=1).max(dim=1).values.mean()

    def forward(self, out: StepOutputs) -> dict[str, torch.Tensor]:
        loss, _ = self.loss(out.logits_t, out.logits_tw, self.threshold(out.logits_s))
        return {self.name: self.cfg.fixmatch_weight * loss}
