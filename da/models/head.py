"""The head: an optional bottleneck, whose output the alignment losses act on, then the classifier."""

from __future__ import annotations

import torch
from torch import nn


class Head(nn.Module):
    """``bottleneck`` (Linear -> BatchNorm1d -> ReLU -> Dropout, DAN's 256-d layer; Identity when
    ``bottleneck_dim`` is None) followed by ``classifier`` (Linear).  ``forward`` returns ``(logits, z)``
    with ``z`` the bottleneck output.  Without a bottleneck, ``dropout`` acts just before the classifier.
    """

    def __init__(self, in_dim: int, num_classes: int, bottleneck_dim: int | None = 256, dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if bottleneck_dim:
            self.bottleneck = nn.Sequential(nn.Linear(in_dim, bottleneck_dim), nn.BatchNorm1d(bottleneck_dim),
                                            nn.ReLU(inplace=True), nn.Dropout(dropout))
            self.drop = nn.Identity()
            self.out_dim = int(bottleneck_dim)
        else:
            self.bottleneck = nn.Identity()
            self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
            self.out_dim = int(in_dim)
        self.classifier = self._new_classifier(num_classes)

    def _new_classifier(self, num_classes: int) -> nn.Linear:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        layer = nn.Linear(self.out_dim, num_classes)
        # small initial logits: a fresh classifier on top of trained features starts near uniform predictions
        nn.init.normal_(layer.weight, std=0.01)
        nn.init.zeros_(layer.bias)
        return layer

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh classifier for ``num_classes``, on the same device and dtype; the bottleneck is kept."""
        old = self.classifier.weight
        self.classifier = self._new_classifier(num_classes).to(device=old.device, dtype=old.dtype)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.bottleneck(features)
        return self.classifier(self.drop(z)), z
