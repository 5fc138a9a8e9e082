"""The data layer on the real AID and RSSCN7 copies in ../shared/data (slow: decodes every image)."""

import pytest

from da.data import DATASETS, adaptation_splits, scan, supervised_splits

pytestmark = pytest.mark.slow


def test_registry_finds_all_real_images(real_root):
    aid = scan(DATASETS["AID"], real_root)
    rsscn7 = scan(DATASETS["RSSCN7"], real_root)
    assert len(aid.samples) == 10_000 and not aid.skipped
    assert len(rsscn7.samples) == 2_800 and not rsscn7.skipped
    assert sorted({c for _, c in aid.samples}) == sorted(DATASETS["AID"].classes)
    assert set(rsscn7.count_by_class().values()) == {400}


def test_aid_to_rsscn7_map_and_splits(real_root):
    s = adaptation_splits("AID", "RSSCN7", real_root, val_fraction=0.2, test_fraction=0.3, seed=0)
    assert len(s["source_train"]) + len(s["source_val"]) == 3_510
    assert len(s["target_train"]) + len(s["target_test"]) == 2_800
    for c in range(7):  # stratified: 30% of each RSSCN7 class
        assert sum(1 for _, lab in s["target_test"].samples if lab == c) == 120
    again = adaptation_splits("AID", "RSSCN7", real_root, val_fraction=0.2, test_fraction=0.3, seed=0)
    assert again.manifest() == s.manifest()
    # stage 2's source validation images are stage 1's validation images: no leak across stages
    s1 = supervised_splits("AID", real_root, val_fraction=0.2, seed=0)
    assert {r for r, _ in s["source_val"].samples} <= {r for r, _ in s1["val"].samples}
    assert {r for r, _ in s["source_train"].samples} <= {r for r, _ in s1["train"].samples}
