"""Batches of a split, either images decoded and augmented on the fly or a cached frozen-prefix output.

Both are pure functions of (seed, epoch, cycle): each epoch's order comes from a generator seeded by
them, and each image's augmentation from a seed of (seed, epoch, cycle, image path), so a resumed run
sees exactly the batches an uninterrupted one sees, whatever the number of loader workers.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from da.data.domains import Split
from da.data.folder import load_rgb
from da.train.seeding import derive_seed, generator


def epoch_order(labels: torch.Tensor, gen: torch.Generator, shuffle: bool, class_balanced: bool = False) -> torch.Tensor:
    """The indices one epoch visits: in order, a permutation, or ``len(labels)`` draws with replacement in
    which every class is equally likely (each image weighted by 1 / its class's count)."""
    n = len(labels)
    if class_balanced:
        counts = torch.bincount(labels)
        return torch.multinomial(1.0 / counts[labels].double(), n, replacement=True, generator=gen)
    return torch.randperm(n, generator=gen) if shuffle else torch.arange(n)


class SeededImages(Dataset):
    """The images of a split, each transformed under its own seed; yields (image tensor, label), or (image
    tensor, index in the split) with ``yield_index`` (the unlabelled target stream)."""

    def __init__(self, split: Split, transform, seed: int, yield_index: bool = False):
        self.split, self.transform, self.seed, self.yield_index = split, transform, seed, yield_index
        self.epoch_key: tuple = (0,)

    def __len__(self) -> int:
        return len(self.split.samples)

    def __getitem__(self, index: int):
        rel, label = self.split.samples[index]
        img = load_rgb(self.split.folder / rel)
        # fork_rng keeps the global stream untouched: augmentation depends on the image, not on history
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, *self.epoch_key, rel))
            x = self.transform(img)
        return x, (index if self.yield_index else label)


class ImageBatches:
    """Batches of (images, labels), or (images, indices in the split) with ``yield_index``."""

    def __init__(self, split: Split, transform, seed: int, batch_size: int, shuffle: bool, drop_last: bool,
                 num_workers: int = 0, stream: str = "images", class_balanced: bool = False,
                 yield_index: bool = False):
        self.data = SeededImages(split, transform, seed, yield_index)
        self.seed, self.batch_size, self.shuffle, self.drop_last = seed, batch_size, shuffle, drop_last
        self.class_balanced = class_balanced
        self.num_workers, self.stream = num_workers, stream
        self.labels = torch.tensor([lab for _, lab in split.samples], dtype=torch.long)

    def inputs_at(self, idx: torch.Tensor) -> torch.Tensor:
        """The inputs of the split's examples ``idx`` under this source's transform, as a batch: on an
        evaluation source (no random draws), a consistency method's weak views of a target batch."""
        return torch.stack([self.data[int(i)][0] for i in idx])

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, epoch: int, cycle: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = epoch_order(self.labels, generator(self.seed, self.stream, epoch, cycle), self.shuffle,
                            self.class_balanced)
        self.data.epoch_key = (self.stream, epoch, cycle)
        loader = DataLoader(self.data, batch_size=self.batch_size, sampler=order.tolist(), drop_last=self.drop_last,
                            num_workers=self.num_workers, generator=generator(self.seed, "loader", epoch, cycle),
                            persistent_workers=False)
        yield from loader


class CachedBatches:
    """Batches of cached prefix outputs (N, V, ...) in float16; each epoch draws one view per image.  Yields
    (inputs, labels), or (inputs, indices in the split) with ``yield_index``."""

    def __init__(self, feats: torch.Tensor, labels: torch.Tensor, seed: int, batch_size: int, shuffle: bool,
                 drop_last: bool, stream: str = "cached", class_balanced: bool = False, channels_last: bool = False,
                 yield_index: bool = False):
        self.feats, self.labels, self.class_balanced, self.yield_index = feats, labels, class_balanced, yield_index
        # float32 and the model's memory format in one copy, not two
        self.memory_format = torch.channels_last if channels_last and feats.dim() == 5 else torch.contiguous_format
        self.seed, self.batch_size, self.shuffle, self.drop_last, self.stream = seed, batch_size, shuffle, drop_last, stream

    def inputs_at(self, idx: torch.Tensor) -> torch.Tensor:
        """The first view of the examples ``idx`` (the only one of an evaluation cache), as a batch."""
        return self.feats[idx, 0].to(torch.float32, memory_format=self.memory_format)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, epoch: int, cycle: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, views = self.feats.shape[:2]
        gen = generator(self.seed, self.stream, epoch, cycle)
        order = epoch_order(self.labels, gen, self.shuffle, self.class_balanced)
        view = torch.randint(views, (n,), generator=gen) if self.shuffle else torch.zeros(n, dtype=torch.long)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.feats[idx, view[idx]].to(torch.float32, memory_format=self.memory_format)
            yield x, (idx if self.yield_index else self.labels[idx])


def cycle_batches(batches, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches for the target side: re-shuffled passes (cycles) within one source epoch."""
    cycle = 0
    while True:
        empty = True
        for item in batches.epoch(epoch, cycle):
            empty = False
            yield item
        if empty:
            raise ValueError("a split is smaller than one batch; lower --batch-size")
        cycle += 1
