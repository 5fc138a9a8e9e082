"""Source-validation accuracy: the classic rule (Ganin et al. 2016 and most papers since)."""

from __future__ import annotations

from da.selection.base import EpochOutputs, Validator, register


@register
class SourceAccuracy(Validator):
    r"""acc_s = 1/N sum_i [argmax_c logits_ic = y_i] on the labelled source validation split.  Blind to the
    target: it cannot see a shift that hurts the target while the source stays fine."""

    name = "source_acc"

    def score(self, out: EpochOutputs) -> float:
        sv = out.source_val
        return float((sv.logits.argmax(1) == sv.labels).double().mean())
