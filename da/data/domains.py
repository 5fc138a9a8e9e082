"""The labelled and unlabelled splits each stage trains and evaluates on.

Stage 1 (supervised): one dataset, all its classes, split into ``train`` / ``val``.
Stage 2 (adaptation): the source's shared classes split into ``source_train`` / ``source_val`` (the same
per-class split as stage 1 when the source is the stage-1 dataset), and the target split into
``target_train`` (used without labels) / ``target_test`` (labels used only for evaluation), plus an
optional ``target_labeled`` part of ``target_train`` for semi-supervised fine-tuning.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from da.data.classmaps import ClassMap, resolve_class_map
from da.data.folder import scan
from da.data.registry import get_spec
from da.data.splits import (_stable_int, long_tailed_subset, manifest_hash, manifest_text, per_class_subset,
                            stratified_split)


@dataclass
class Split:
    """One split: images under ``folder`` as (relative path, label index into ``classes``)."""

    dataset: str
    folder: Path
    samples: list[tuple[str, int]]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.samples)


@dataclass
class Splits:
    classes: list[str]
    parts: dict[str, Split]
    class_map: ClassMap | None = None
    skipped: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    data: dict[str, dict] = field(default_factory=dict)  # per dataset: what was found on disk (ScanResult.summary)

    def __getitem__(self, name: str) -> Split:
        return self.parts[name]

    def manifest(self) -> str:
        rows = [(name, f"{s.dataset}/{rel}", s.classes[label])
                for name, s in self.parts.items() for rel, label in s.samples]
        return manifest_text(rows)

    def manifest_hash(self) -> str:
        return manifest_hash(self.manifest())

    def fingerprint(self) -> str:
        """``content-sha256:`` + sha256 of every (split, image, class, sha256 of the file's bytes): changes when
        the class map relabels an image, or an image is added, removed or replaced, and not when the same files
        are copied to another disk or machine (file times are not part of it). Reading every file costs about
        0.5 s for AID's 10,000 images."""
        h = hashlib.sha256()
        for name, s in sorted(self.parts.items()):
            for rel, label in s.samples:
                digest = hashlib.sha256((s.folder / rel).read_bytes()).hexdigest()
                h.update(f"{name},{s.dataset}/{rel},{s.classes[label]},{digest}\n".encode())
        return CONTENT_FINGERPRINT + h.hexdigest()


# Marks a data fingerprint made from file contents; fingerprints without it (written before 2026-12-06)
# hashed file sizes and modification times, which no copy of the data keeps.
CONTENT_FINGERPRINT = "content-sha256:"


def _labelled(samples, label_of: dict[str, int]) -> list[tuple[str, int]]:
    return [(rel, label_of[cls]) for rel, cls in samples]


def supervised_splits(dataset: str, root: str | os.PathLike, val_fraction: float, seed: int,
                      per_class: int = 0) -> Splits:
    """``per_class``: at most this many images of each class (a seeded subset, before the split); 0: all."""
    spec = get_spec(dataset, root)
    found = scan(spec, root)
    samples = per_class_subset(found.samples, per_class, seed, spec.name)  # the summary stays the folder's
    parts = stratified_split(samples, {"train": 1 - val_fraction, "val": val_fraction}, seed, key=spec.name)
    label_of = {c: i for i, c in enumerate(spec.classes)}
    classes = list(spec.classes)
    return Splits(classes=classes,
                  parts={n: Split(spec.name, found.folder, _labelled(p, label_of), classes) for n, p in parts.items()},
                  skipped={spec.name: found.skipped}, data={spec.name: found.summary()})


def long_tail_order(spec, classes: list[str]) -> list[str]:
    """The order of ``classes`` from most to least frequent in a long-tailed view ``spec`` (seeded)."""
    rng = np.random.default_rng([spec.long_tail_seed, _stable_int(spec.name)])
    return [classes[i] for i in rng.permutation(len(classes))]


def adaptation_splits(source: str, target: str, root: str | os.PathLike, val_fraction: float,
                      test_fraction: float, seed: int, labeled_fraction: float = 0.0,
                      class_map: str | os.PathLike | None = None, transductive: bool = False,
                      per_class: int = 0) -> Splits:
    """``transductive``: the protocol of most adaptation papers, in which the whole target set is both the
    unlabelled training set and the test set (``test_fraction`` is then unused).  ``per_class``: at most this
    many images of each class of each dataset (a seeded subset, before the splits); 0: all."""
    src_spec, tgt_spec = get_spec(source, root), get_spec(target, root)
    cmap = resolve_class_map(src_spec, tgt_spec, class_map)
    src = scan(src_spec, root, classes=cmap.source_classes)
    tgt = scan(tgt_spec, root, classes=cmap.target_classes)
    src_samples = per_class_subset(src.samples, per_class, seed, src_spec.name)  # the summaries stay the folders'
    tgt_samples = per_class_subset(tgt.samples, per_class, seed, tgt_spec.name)
    src_parts = stratified_split(src_samples, {"train": 1 - val_fraction, "val": val_fraction}, seed, key=src_spec.name)
    if transductive:
        tgt_parts = {"train": sorted(tgt_samples), "test": sorted(tgt_samples)}
    else:
        tgt_parts = stratified_split(tgt_samples, {"train": 1 - test_fraction, "test": test_fraction}, seed,
                                     key=f"{tgt_spec.map_name}:target")
    if tgt_spec.long_tail_imbalance:  # label shift: the same long-tailed prior in target train and test
        order = long_tail_order(tgt_spec, cmap.target_classes)
        tgt_parts = {name: long_tailed_subset(part, order, tgt_spec.long_tail_imbalance, seed,
                                              key=f"{tgt_spec.name}:{name}") for name, part in tgt_parts.items()}
    classes = cmap.shared_classes
    s_label, t_label = cmap.source_label(), cmap.target_label()
    parts = {
        "source_train": Split(src_spec.name, src.folder, _labelled(src_parts["train"], s_label), classes),
        "source_val": Split(src_spec.name, src.folder, _labelled(src_parts["val"], s_label), classes),
        "target_train": Split(tgt_spec.name, tgt.folder, _labelled(tgt_parts["train"], t_label), classes),
        "target_test": Split(tgt_spec.name, tgt.folder, _labelled(tgt_parts["test"], t_label), classes),
    }
    if labeled_fraction > 0:
        lab = tgt_parts["train"] if labeled_fraction >= 1 else stratified_split(  # 1: the target-supervised reference
            tgt_parts["train"], {"labeled": labeled_fraction, "rest": 1 - labeled_fraction}, seed,
            key=f"{tgt_spec.name}:labeled")["labeled"]
        parts["target_labeled"] = Split(tgt_spec.name, tgt.folder, _labelled(lab, t_label), classes)
    skipped = {src_spec.name: src.skipped, tgt_spec.name: tgt.skipped}
    return Splits(classes=classes, parts=parts, class_map=cmap, skipped=skipped,
                  data={src_spec.name: src.summary(), tgt_spec.name: tgt.summary()})
