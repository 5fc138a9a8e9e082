"""Soft neighbourhood density (Saito et al., ICCV 2021, "Tune it the right way")."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from da.selection.base import EpochOutputs, Setting, Validator, entropy, register


@register
class SoftNeighborhoodDensity(Validator):
    r"""score = 1/N sum_i H(s_i), s_ij = softmax_{j != i}(<q_i, q_j> / tau), q_i = p_i / ||p_i|| the
    L2-normalised softmax prediction of target image i (the paper's default, the classifier output) and
    tau = ``snd_temperature`` (the paper's 0.05).  High when each target point has many soft neighbours: predictions that form dense
    clusters rather than scattered or collapsed ones."""

    name = "snd"
    settings = (Setting("snd_temperature", float, 0.05, "temperature tau of the neighbours' softmax (the paper's "
                        "0.05)", low=0, low_open=True, hash="unless_default"),)

    def score(self, out: EpochOutputs) -> float:
        q = F.normalize(torch.softmax(out.target_train.logits.double(), 1), dim=1)
        sim = q @ q.T / self.cfg.snd_temperature
        sim.fill_diagonal_(float("-inf"))  # a point is not its own neighbour
        return float(entropy(torch.softmax(sim, 1)).mean())
