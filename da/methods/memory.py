"""The target memory that neighbourhood methods (AaD, NRC) read: one row per target-train image, its unit-length
bottleneck feature and its softmax prediction, refilled from the model's target pass before every epoch (so a
resumed run rebuilds it exactly) and overwritten by each batch's own rows as training goes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from da.methods.base import TargetPass


class TargetMemory(nn.Module):
    def __init__(self, num_classes: int, feature_dim: int):
        super().__init__()
        self.register_buffer("features", torch.zeros(0, feature_dim), persistent=False)
        self.register_buffer("probs", torch.zeros(0, num_classes), persistent=False)

    def __len__(self) -> int:
        return len(self.probs)

    def refill(self, target: TargetPass) -> None:
        device = self.probs.device
        self.features = F.normalize(target.features.float(), dim=1).to(device)
        self.probs = torch.softmax(target.logits.float(), dim=1).to(device)

    @torch.no_grad()
    def write(self, idx: torch.Tensor, z: torch.Tensor, logits: torch.Tensor) -> None:
        """The batch's own rows (detached), before its neighbours are looked up, as in both papers' code."""
        self.features[idx] = F.normalize(z.detach().float(), dim=1).to(self.features)
        self.probs[idx] = torch.softmax(logits.detach().float(), dim=1).to(self.probs)

    @torch.no_grad()
    def nearest(self, rows: torch.Tensor, k: int) -> torch.Tensor:
        """The k nearest other rows to each of ``rows`` by cosine similarity, the row itself left out:
        indices (len(rows), k)."""
        similarity = self.features[rows] @ self.features.T
        similarity[torch.arange(len(rows)), rows] = -torch.inf  # not its own neighbour
        return similarity.topk(k, dim=1).indices
