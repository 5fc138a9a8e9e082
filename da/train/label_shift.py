"""The target class-prior estimate inside a run (``--prior``): made from each epoch's label-free outputs,
applied to the next epoch's losses, and reported with the target-test predictions it corrects.

After every stage-2 epoch the estimate q-hat is made from the source validation predictions (labels:
the BCTS fit) and the unlabelled target training pass (``da.prior.estimate_target_prior``).  The next
epoch trains with it: the source cross-entropy weights class y by q-hat_y / p_train(y) (p_train: the
class distribution of the source batches, uniform under class-balanced sampling), so the source loss is
that of a source with the target's prior; CORAL/MMD weight the source statistics the same way; IM/SHOT
pull the mean prediction towards q-hat.  The record gets, per epoch, the estimate, its L1 error
against the true prior of the target training split (labels read for that report only) and the
target-test metrics of the prior-corrected predictions.
"""

from __future__ import annotations

import numpy as np
import torch

from da.prior import PriorEstimate, estimate_target_prior
from da.selection import SourcePredictions
from da.train.metrics import classification_metrics


MIN_SHARE = 1e-4


def estimate(cfg, source_val: SourcePredictions, target_logits: torch.Tensor) -> PriorEstimate:
    return estimate_target_prior(cfg.prior, source_val.logits, source_val.labels, target_logits)


def train_class_prior(cfg, splits, name: str) -> torch.Tensor:
    """p_train (C,): the class distribution of the source batches of split ``name``."""
    k = len(splits.classes)
    if cfg.source_sampling == "class_balanced":
        return torch.full((k,), 1.0 / k, dtype=torch.float64)
    counts = np.bincount([lab for _, lab in splits[name].samples], minlength=k)
    return torch.from_numpy(counts / counts.sum())


def apply(run, prior: PriorEstimate) -> None:
    """Class-ratio weights q-hat / p_train for the source cross-entropy and the methods' source terms.  EM may
    put a class's share at exactly 0; its weight is floored at 1e-4 / p_train (the class is all but ignored)
    so that a batch of such classes still has a defined weighted mean."""
    p_train = train_class_prior(run.cfg, run.data.splits, run.data.source_train_name)
    ratio = (prior.target_prior.clamp_min(MIN_SHARE) / p_train).float()
    run.class_ratio = ratio.to(run.device)
    run.cls_loss.weight = run.class_ratio  # nn.CrossEntropyLoss: sum w_y l / sum w_y over the batch


def true_prior(splits, name: str = "target_train") -> torch.Tensor:
    """The class distribution of a target split, from its labels: for the report only."""
    counts = np.bincount([lab for _, lab in splits[name].samples], minlength=len(splits.classes))
    return torch.from_numpy(counts / counts.sum())


def report(run, prior: PriorEstimate, target_test) -> tuple[dict, dict]:
    """(the epoch's summary for the history, the full metrics of the corrected target-test predictions)."""
    corrected = prior.corrected(target_test.logits).argmax(1).numpy()
    metrics = classification_metrics(target_test.labels.numpy(), corrected, run.classes)
    summary = prior.summary(true_prior(run.data.splits))
    summary["target_test"] = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}
    return summary, metrics
