"""Entropy minimisation on the target predictions (Grandvalet & Bengio 2004): IM without its diversity term."""

from __future__ import annotations

from da.methods.base import register
from da.methods.im import InformationMaximizationMethod


@register
class EntropyMinimization(InformationMaximizationMethod):
    name = "ent"
    diversity_weight = 0.0
