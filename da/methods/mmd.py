"""DAN (Long et al., ICML 2015): lambda * MK-MMD(z_s, z_t) on the bottleneck features; with ``--prior``, the
source examples weighted by their class ratio q-hat / p_train (WDAN, Yan et al. 2017)."""

from __future__ import annotations

from da.losses.mmd import DEFAULT_SCALES, ESTIMATORS, MMD
from da.methods.base import Method, Setting, StepOutputs, register
from da.settings import declare_check


@register
class MMDMethod(Method):
    name = "mmd"
    settings = (Setting("mmd_estimator", str, "quadratic", "unbiased quadratic (DAN's reported form), linear-time, "
                        "or biased (V-statistic)", choices=ESTIMATORS, hash="always"),
                Setting("mmd_kernel_scales", tuple[float, ...], DEFAULT_SCALES, "Gaussian kernel bandwidths as "
                        "multiples of the joint batch's mean squared pairwise distance", low=0, low_open=True, hash="always"))

    def __init__(self, cfg, num_classes: int, feature_dim: int):
        super().__init__(cfg, num_classes, feature_dim)
        self.loss = MMD(estimator=cfg.mmd_estimator, kernel_scales=tuple(cfg.mmd_kernel_scales))

    def forward(self, out: StepOutputs) -> dict:
        return {"mmd": self.align_weight(out.progress) * self.loss(out.z_s, out.z_t, out.w_s)}


def _check_linear_pairs(cfg) -> None:
    if cfg.mmd_estimator == "linear" and "mmd" in cfg.method_parts and cfg.target_batch != cfg.batch_size:
        raise ValueError(f"--mmd-estimator linear pairs each source image with a target image: it needs "
                         f"--target-batch-size 0 or equal to --batch-size ({cfg.batch_size}), got "
                         f"{cfg.target_batch_size}")


declare_check("mmd_estimator", _check_linear_pairs)
