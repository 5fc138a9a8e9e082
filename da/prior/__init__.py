"""Target class-prior estimation under label shift, without target labels.

``calibration.py`` fits bias-corrected temperature scaling on the labelled source validation split;
``estimate.py`` estimates the target's class prior from the calibrated predictions on the unlabelled
target training split (EM, or BBSE) and turns it into post-hoc corrected predictions and class-ratio
weights for the source losses.  Valid estimator names are declared once, in ``ESTIMATORS``.
"""

from da.prior.calibration import BiasCorrectedTemperature, fit_bcts
from da.prior.estimate import (ESTIMATORS, PriorEstimate, bbse_prior, correct_posteriors, em_prior,
                               estimate_target_prior)
from da.settings import declare_check



def _check_prior(cfg) -> None:
    if cfg.prior not in ("",) + ESTIMATORS:
        raise ValueError(f"--prior {cfg.prior!r} is not valid; choose from "
                         f"{', '.join(repr(v) for v in ('',) + ESTIMATORS)}")


declare_check("prior", _check_prior)

__all__ = ["BiasCorrectedTemperature", "fit_bcts", "ESTIMATORS", "PriorEstimate", "bbse_prior", "em_prior",
           "correct_posteriors", "estimate_target_prior"]
