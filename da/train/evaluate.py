"""Evaluation passes: predictions (logits, bottleneck features, labels) of a split, and what is derived
from them (metrics, the target pass the methods and validators see, exported features)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from da.methods import TargetPass
from da.rundir import FEATURES_FILE
from da.selection import SourcePredictions
from da.train.adistance import proxy_a_distance
from da.train.metrics import classification_metrics
from da.utils.io import atomic_write


@dataclass
class Predictions:
    logits: torch.Tensor  # (N, C) float32, CPU
    features: torch.Tensor  # (N, d) bottleneck z, float32, CPU
    labels: torch.Tensor  # (N,)

    def metrics(self, classes: list[str]) -> dict:
        return classification_metrics(self.labels.numpy(), self.logits.argmax(1).numpy(), classes)

    def for_source(self) -> SourcePredictions:
        return SourcePredictions(self.logits, self.features, self.labels)

    def unlabelled(self) -> TargetPass:
        """What methods and validators may see of a target split: no labels."""
        return TargetPass(self.logits, self.features)


@torch.no_grad()
def predict(model, batches, start: int, device: torch.device, autocast) -> Predictions:
    """One pass over ``batches`` (epoch 0 of an unshuffled batch source) in evaluation mode."""
    was_training = model.training
    model.eval()
    logits, feats, labels = [], [], []
    for x, y in batches.epoch(0):
        with autocast():
            out, z = model.forward_from(x.to(device), start)
        logits.append(out.float().cpu())
        feats.append(z.float().cpu())
        labels.append(y)
    model.train(was_training)
    return Predictions(torch.cat(logits), torch.cat(feats), torch.cat(labels))


def export_features(source_val: Predictions, target_test: Predictions, run_dir: Path) -> float:
    """Save the selected model's bottleneck features of source-val and target-test (for t-SNE) and return
    their proxy A-distance."""
    zs, zt = source_val.features.numpy(), target_test.features.numpy()
    atomic_write(run_dir / FEATURES_FILE, lambda f: np.savez_compressed(
        f, source=zs.astype(np.float16), source_labels=source_val.labels.numpy(), target=zt.astype(np.float16),
        target_labels=target_test.labels.numpy()), mode="wb")
    return round(proxy_a_distance(zs, zt), 4)
