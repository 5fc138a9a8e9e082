"""RunConfig: rebuilding from dicts, checks that name the flag, and the MixUp/CutMix rule."""

import pytest

from da.config import RunConfig


def test_from_dict_round_trips_tuples_and_defaults_missing_fields():
    cfg = RunConfig(mmd_kernel_scales=(1.0, 2.0), rank_validators=("snd", "dev"), method="dann")
    back = RunConfig.from_dict(cfg.to_dict())  # JSON turns tuples into lists
    assert back == cfg and back.config_hash() == cfg.config_hash()
    assert isinstance(back.mmd_kernel_scales, tuple) and isinstance(back.rank_validators, tuple)
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("selection", "rank_validators")}
    assert RunConfig.from_dict(old).selection == "source_acc"


@pytest.mark.parametrize("strategy,cache_views,ok", [
    ("linear", 0, True), ("partial:2", 0, True), ("full", 2, True), ("gradual", 2, True),
    ("linear", 2, False), ("partial:2", 1, False)])
def test_mixup_is_refused_only_with_a_cached_prefix(strategy, cache_views, ok):
    cfg = RunConfig(strategy=strategy, cache_views=cache_views, mixup_alpha=0.2)
    if ok:
        cfg.validate()
    else:
        with pytest.raises(ValueError, match="set --cache-views 0"):
            cfg.validate()


def test_method_widths_must_be_positive():
    with pytest.raises(ValueError, match="--dann-hidden must be >= 1"):
        RunConfig(method="dann", dann_hidden=0).validate()
