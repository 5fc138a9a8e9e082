"""Source only: the classification loss alone (the engine adds it); no target data."""

from __future__ import annotations

from da.methods.base import Method, StepOutputs, register


@register
class SourceOnly(Method):
    name = "source_only"
    needs_target = False

    def forward(self, out: StepOutputs) -> dict:
        return {}
