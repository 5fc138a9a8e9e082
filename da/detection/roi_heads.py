"""The RoI head's training loss: torchvision's sampler, or OHEM, with cross-entropy or focal classification.

torchvision's Faster R-CNN samples ``roi_batch_size`` proposals per image, at most a quarter of them
foreground, and averages the classifier's cross-entropy over them; the box loss is smooth-L1 (beta 1/9) over
the foreground ones, summed and divided by the number sampled.  Here that formula is kept and only the set
it runs over changes:

- ``sampler: default``: torchvision's balanced random sample (the formula is then exactly ``fastrcnn_loss``);
- ``sampler: ohem`` (Shrivastava, Gupta, Girshick, "Training Region-based Object Detectors with Online Hard
  Example Mining", CVPR 2016, sec. 4): every proposal of the image (the RPN's post-NMS set plus the ground
  truth boxes) is scored by the head; each RoI's loss is l_i = cls_i + box_i (box_i = 0 for background);
  the hardest ``ohem_batch_size`` per image are kept after NMS at ``ohem_nms`` IoU over the RoIs ranked by
  loss (the paper's 0.7, so that one object's overlapping RoIs do not fill the batch).  As in the paper the
  losses are computed by a read-only pass without gradients and only the kept RoIs go through the head
  again and are back-propagated, so the rest get zero gradient and the backward costs what B RoIs cost.
- ``box_cls_loss: focal`` replaces cross-entropy by the softmax focal loss (``da.losses.FocalLoss``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import nms

from da.losses.focal import FocalLoss

SAMPLERS = ("default", "ohem")
BOX_CLS_LOSSES = ("ce", "focal")
SMOOTH_L1_BETA = 1 / 9  # torchvision's fastrcnn_loss


class _KeepAll:
    """A stand-in for torchvision's fg/bg sampler that keeps every proposal (OHEM chooses later)."""

    def __call__(self, matched_idxs: list[torch.Tensor]):
        pos = [(m >= 1).to(torch.uint8) for m in matched_idxs]
        neg = [(m == 0).to(torch.uint8) for m in matched_idxs]
        return pos, neg


def per_roi_losses(class_logits: torch.Tensor, box_regression: torch.Tensor, labels: torch.Tensor,
                   regression_targets: torch.Tensor, cls_loss) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-RoI classification loss (R,) and smooth-L1 box loss (R,), summed over the 4 coordinates of the
    ground-truth class's regression and 0 for background RoIs."""
    cls = cls_loss(class_logits, labels)
    n = class_logits.shape[0]
    box = torch.zeros(n, dtype=cls.dtype, device=cls.device)
    pos = torch.where(labels > 0)[0]
    if pos.numel():
        reg = box_regression.reshape(n, -1, 4)[pos, labels[pos]]
        box = box.index_put((pos,), F.smooth_l1_loss(reg, regression_targets[pos], beta=SMOOTH_L1_BETA,
                                                     reduction="none").sum(dim=1).to(cls.dtype))
    return cls, box


def hardest(losses: torch.Tensor, boxes: torch.Tensor, k: int, nms_iou: float) -> torch.Tensor:
    """Indices of the ``k`` largest losses, after NMS at ``nms_iou`` among the boxes ranked by loss
    (``nms_iou >= 1`` turns the NMS off).  The losses are detached."""
    losses = losses.detach()
    if nms_iou < 1:
        keep = nms(boxes.detach().float(), losses.float(), nms_iou)  # sorted by decreasing loss
        return keep[:k]
    return torch.topk(losses, min(k, losses.numel())).indices


class DetectionRoIHeads(RoIHeads):
    """torchvision's ``RoIHeads`` with the training loss chosen by ``sampler`` and ``box_cls_loss``."""

    def configure(self, sampler: str, box_cls_loss: str, focal_gamma: float, ohem_batch_size: int,
                  ohem_nms: float) -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler {sampler!r}: choose from {', '.join(SAMPLERS)}")
        if box_cls_loss not in BOX_CLS_LOSSES:
            raise ValueError(f"box_cls_loss {box_cls_loss!r}: choose from {', '.join(BOX_CLS_LOSSES)}")
        self.sampler, self.ohem_batch_size, self.ohem_nms = sampler, int(ohem_batch_size), float(ohem_nms)
        self.cls_loss = (FocalLoss(gamma=focal_gamma, reduction="none") if box_cls_loss == "focal"
                         else _CrossEntropy())
        if sampler == "ohem":
            self.fg_bg_sampler = _KeepAll()

    def forward(self, features, proposals, image_shapes, targets=None):
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
        if self.sampler == "ohem":
            proposals, labels, regression_targets = self._hardest(features, proposals, image_shapes, labels,
                                                                  regression_targets)
        class_logits, box_regression = self._head(features, proposals, image_shapes)
        cls, box = per_roi_losses(class_logits, box_regression, torch.cat(labels), torch.cat(regression_targets),
                                  self.cls_loss)
        n = max(cls.numel(), 1)
        return [], {"loss_classifier": cls.sum() / n, "loss_box_reg": box.sum() / n}

    def _head(self, features, proposals, image_shapes):
        return self.box_predictor(self.box_head(self.box_roi_pool(features, proposals, image_shapes)))

    @torch.no_grad()
    def _hardest(self, features, proposals, image_shapes, labels, regression_targets):
        """The paper's read-only pass: every RoI's loss without gradients, then the hardest per image; only
        those go through the head again with gradients (so the others get exactly zero)."""
        features = {k: v.detach() for k, v in features.items()}
        logits, regression = self._head(features, proposals, image_shapes)
        cls, box = per_roi_losses(logits, regression, torch.cat(labels), torch.cat(regression_targets),
                                  self.cls_loss)
        out_p, out_l, out_t, start = [], [], [], 0
        for p, lab, tgt in zip(proposals, labels, regression_targets):
            n = p.shape[0]
            idx = hardest(cls[start:start + n] + box[start:start + n], p, self.ohem_batch_size, self.ohem_nms)
            out_p.append(p[idx])
            out_l.append(lab[idx])
            out_t.append(tgt[idx])
            start += n
        return out_p, out_l, out_t


class _CrossEntropy(torch.nn.Module):
    def forward(self, logits, targets):
        return F.cross_entropy(logits, targets, reduction="none")


def make_roi_heads(heads: RoIHeads, cfg) -> DetectionRoIHeads:
    """Re-class torchvision's built heads (same modules and settings) and set the configured loss."""
    heads.__class__ = DetectionRoIHeads
    heads.configure(cfg.sampler, cfg.box_cls_loss, cfg.focal_gamma, cfg.ohem_batch_size, cfg.ohem_nms)
    return heads
