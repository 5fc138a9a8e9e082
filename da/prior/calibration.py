"""Bias-corrected temperature scaling (BCTS), fitted on labelled source validation predictions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class BiasCorrectedTemperature:
    r"""Calibrated logits ``logits / T + b``: one temperature T > 0 and one bias per class b (C,).

    Alexandari, Kundaje and Shrikumar, "Maximum Likelihood with Bias-Corrected Calibration is
    Hard-To-Beat at Label Shift Adaptation", ICML 2020: EM prior estimation needs calibrated posteriors,
    and the class biases correct the systematic over- or under-prediction of classes that plain
    temperature scaling (Guo et al. 2017) leaves.  The calibrated posteriors are calibrated for the class
    distribution of the data the fit saw (here the source validation split).
    """

    temperature: float
    bias: torch.Tensor  # (C,)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.double() / self.temperature + self.bias.double()

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self(logits), dim=1)


def _nll(logits: torch.Tensor, labels: torch.Tensor, log_t: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits / log_t.exp() + bias, labels)


def fit_bcts(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 200) -> BiasCorrectedTemperature:
    """BCTS minimising the negative log-likelihood of ``labels`` (N,) under ``logits`` (N, C).

    L-BFGS in float64 over (log T, b), from T = 1, b = 0 (the uncalibrated model), so the fitted NLL is
    never above the uncalibrated one.  The biases are identified up to a constant; they are centred.
    """
    if logits.dim() != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(f"fit_bcts expects logits (N, C) and labels (N,), got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    x, y = logits.detach().double().cpu(), labels.long().cpu()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t, bias], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9,
                            tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = _nll(x, y, log_t, bias)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        start = float(_nll(x, y, torch.zeros((), dtype=torch.float64), torch.zeros_like(bias)))
        if not float(_nll(x, y, log_t, bias)) <= start:  # a failed line search: keep the identity
            return BiasCorrectedTemperature(1.0, torch.zeros(x.shape[1], dtype=torch.float64))
    b = bias.detach()
    return BiasCorrectedTemperature(float(log_t.detach().exp()), b - b.mean())
