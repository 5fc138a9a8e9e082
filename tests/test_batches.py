"""Epoch orders of the training batches: permutations, and class-balanced draws for the source side."""

import torch

from da.config import RunConfig
from da.train.batches import CachedBatches, epoch_order
from da.train.seeding import generator


def test_class_balanced_order_draws_every_class_equally_often():
    labels = torch.tensor([0] * 900 + [1] * 90 + [2] * 9)  # 100:10:1 imbalance
    order = epoch_order(labels, generator(0, "source", 0, 0), shuffle=True, class_balanced=True)
    assert len(order) == len(labels)
    freq = torch.bincount(labels[order], minlength=3).double() / len(order)
    # expected 1/3 each; the binomial s.d. of a frequency here is 0.015
    assert torch.allclose(freq, torch.full((3,), 1 / 3, dtype=torch.double), atol=0.05), freq
    plain = torch.bincount(labels[epoch_order(labels, generator(0, "source", 0, 0), shuffle=True)], minlength=3)
    assert plain.tolist() == [900, 90, 9]  # a permutation keeps the imbalance


def test_orders_are_functions_of_the_seed():
    labels = torch.arange(50) % 5
    for balanced in (False, True):
        a = epoch_order(labels, generator(3, "source", 1, 0), True, balanced)
        b = epoch_order(labels, generator(3, "source", 1, 0), True, balanced)
        c = epoch_order(labels, generator(3, "source", 2, 0), True, balanced)
        assert torch.equal(a, b) and not torch.equal(a, c)
    assert sorted(epoch_order(labels, generator(0, "s", 0, 0), True).tolist()) == list(range(50))


def test_cached_batches_class_balanced_yield_their_own_labels():
    labels = torch.tensor([0] * 60 + [1] * 4)
    feats = labels.float().view(-1, 1, 1).expand(-1, 2, 3).contiguous()  # each image's features = its label
    batches = CachedBatches(feats, labels, seed=0, batch_size=16, shuffle=True, drop_last=True, class_balanced=True)
    seen = torch.cat([y for x, y in batches.epoch(0)])
    for x, y in batches.epoch(0):
        assert torch.equal(x[:, 0], y.float())
    assert len(seen) == 64 and 0.3 < seen.float().mean() < 0.7  # about half class 1, against 4/64 unbalanced


def test_source_sampling_hash_stays_stable_at_its_default():
    base = RunConfig()
    assert "source_sampling" not in base.hashed_dict()  # run directories of earlier records do not move
    balanced = base.replace(source_sampling="class_balanced")
    assert balanced.hashed_dict()["source_sampling"] == "class_balanced"
    assert balanced.config_hash() != base.config_hash()
    try:
        base.replace(source_sampling="oversample").validate()
    except ValueError as e:
        assert "--source-sampling" in str(e) and "class_balanced" in str(e)
    else:
        raise AssertionError("an unknown --source-sampling was accepted")
