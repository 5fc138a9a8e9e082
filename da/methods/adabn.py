"""AdaBN (Li, Wang, Shi, Liu and Hou, "Revisiting Batch Normalization For Practical Domain Adaptation", ICLR
2017 workshop): the model is evaluated with BatchNorm statistics re-estimated on the unlabelled target, no loss.

Alone (``--method adabn``) it is source-only training evaluated with the target's statistics, the field's
cheapest baseline; under another method (``mcc+adabn``) it adds the re-estimation to that method's training.
The re-estimation itself is ``da.train.adabn`` (the engine runs it before stage 2 and after every epoch).
"""

from __future__ import annotations

from da.methods.base import Method, StepOutputs, register


@register
class AdaBN(Method):
    name = "adabn"
    needs_target = False  # no target batch in the step: the statistics come from the target pass
    adapts_batchnorm = True

    def forward(self, out: StepOutputs) -> dict:
        return {}
