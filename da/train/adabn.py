"""AdaBN (Li, Wang, Shi, Liu and Hou, "Revisiting Batch Normalization For Practical Domain Adaptation",
ICLR workshop 2017, arXiv:1603.04779): the BatchNorm statistics a model evaluates the target with are the
target's own, re-estimated from the unlabelled target training split; no weight changes.

For every BatchNorm layer whose statistics training updates (those in training mode under ``model.train()``:
not the frozen stages, whose outputs may be cached, nor any with ``--freeze-bn``) and that the forward from
the cached prefix reaches, the running mean and variance are replaced by the target split's: the cumulative
average over one pass of the batch means and (unbiased) variances, each layer seeing inputs normalised by the
layers before it with the target batch's own statistics, as the paper's layer-wise procedure does.  Dropout
and drop path stay off.  The method ``adabn`` (``da/methods/adabn.py``: alone, or under any method as
``mcc+adabn``) has the engine apply it before the first stage-2 epoch and after every epoch, before the model
is evaluated, scored and saved: the kept model carries the target statistics, and source validation is
measured with them too (the model as it is deployed).
"""

from __future__ import annotations

import torch
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def adapt_batchnorm(model: torch.nn.Module, batches, start: int, device: torch.device, autocast) -> int:
    """Re-estimate, from one pass over ``batches`` (epoch 0: unshuffled) through ``model.forward_from(x,
    start)``, the running statistics of every BatchNorm layer that training updates and that pass reaches;
    return how many it re-estimated.  The others keep theirs; the model's train/eval modes are restored."""
    was_training = model.training
    model.train()  # which layers training updates: the model decides (frozen stages, --freeze-bn)
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats and m.training]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum)
             for m in layers]
    model.eval()  # dropout, drop path and every other layer as in evaluation
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch counts the same
        m.train()
    for x, _ in batches.epoch(0):
        with autocast():
            model.forward_from(x.to(device), start)
    reached = 0
    for m, (mean, var, count, momentum) in zip(layers, saved):
        if int(m.num_batches_tracked) == 0:  # not run by this forward: its statistics are untouched
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
        else:
            reached += 1
        m.num_batches_tracked.copy_(count)  # the count only drives momentum=None averaging: keep the model's
        m.momentum = momentum
    model.train(was_training)
    return reached
