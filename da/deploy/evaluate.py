"""Score a finished run on any registered dataset (or ``folder:``): the record's metrics, written beside the run.

The dataset's classes are mapped onto the run's classes with a class map whose target is the run's target
(``{"classes": {"<run class>": ["<dataset class>", ...]}}``): given with ``class_map``, else built in
(e.g. AID -> RSSCN7 for a run adapted to RSSCN7), else by equal names.  Images of classes the map leaves
out are not scored.  ``split="test"`` on the run's own target scores exactly its target-test split (the
record's numbers); ``"all"`` scores every readable image.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from da.data.classmaps import resolve_class_map
from da.data.folder import scan
from da.data.registry import get_spec
from da.deploy.load import FinishedRun
from da.train.metrics import classification_metrics
from da.utils.io import atomic_write_json

EVALUATIONS_DIR = "evaluations"
SPLITS = ("all", "test")


def labelled_images(run: FinishedRun, dataset: str, root: str | os.PathLike, class_map: str | None = None,
                    split: str = "all") -> tuple[Path, list[tuple[str, int]], dict, dict]:
    """(image folder, [(relative path, index into run.classes)], the class map used, the data summary)."""
    if split not in SPLITS:
        raise ValueError(f"--split {split!r}: choose from {', '.join(SPLITS)}")
    cfg = run.config
    if split == "test":
        if get_spec(dataset, root).name != get_spec(cfg.target, root).name or class_map:
            raise ValueError(f"--split test scores the run's own target-test split: it needs --dataset {cfg.target} "
                             f"(the run's target) and no --class-map; use --split all for another dataset")
        splits = run.own_splits(root)  # refused unless they are the images the run saw
        part = splits["target_test"]
        name_of = {i: c for i, c in enumerate(part.classes)}
        samples = [(rel, run.classes.index(name_of[label])) for rel, label in part.samples]
        return part.folder, samples, {c: [c] for c in run.classes}, splits.data[part.dataset]
    spec = get_spec(dataset, root)
    target = get_spec(cfg.target or cfg.source, root)
    if not class_map and set(run.classes) <= set(spec.classes) and spec.map_name != target.map_name:
        mapping = {c: [c] for c in run.classes}  # the same names: no map needed
        found = scan(spec, root, classes=run.classes)
        label_of = {c: run.classes.index(c) for c in run.classes}
    else:
        cmap = resolve_class_map(spec, target, class_map)
        wanted = [c for c in cmap.shared_classes if c in run.classes]
        if not wanted:
            raise ValueError(f"the class map from {spec.name} to {target.name} reaches none of the run's classes "
                             f"({', '.join(run.classes)}); give one with --class-map FILE")
        mapping = {t: list(group) for t, group in cmap.classes if t in wanted}
        found = scan(spec, root, classes=[s for t in wanted for s in mapping[t]])
        label_of = {s: run.classes.index(t) for t in wanted for s in mapping[t]}
    samples = [(rel, label_of[cls]) for rel, cls in found.samples]
    return found.folder, samples, mapping, found.summary()


def evaluate_run(run: FinishedRun, dataset: str, root: str | os.PathLike, class_map: str | None = None,
                 split: str = "all", batch_size: int = 64, device: str = "cpu", num_workers: int = 0,
                 progress: bool = True, out: str | os.PathLike | None = None) -> tuple[dict, Path]:
    """The run's metrics on ``dataset`` (as in its record: accuracy, macro-F1, per class, confusion), written
    as JSON to ``out`` (default ``<run>/evaluations/<dataset>-<split>.json``); returns (result, path)."""
    t0 = time.perf_counter()
    folder, samples, mapping, data = labelled_images(run, dataset, root, class_map, split)
    logits = run.logits(folder, samples, batch_size, device, num_workers, progress)
    labels = np.array([label for _, label in samples])
    result = {
        "run": str(run.run_dir), "dataset": get_spec(dataset, root).name, "split": split,
        "class_map": mapping, "classes": run.classes, "selected_epoch": run.selected_epoch,
        "metrics": classification_metrics(labels, logits.argmax(1).numpy(), run.classes),
        "data": data, "seconds": round(time.perf_counter() - t0, 2),
        "trained_on": {"source": run.config.source, "target": run.config.target, "method": run.config.method},
    }
    if run.prior and "bias" in run.prior:
        result["metrics_prior_corrected"] = classification_metrics(
            labels, run.prior_corrected(logits).argmax(1).numpy(), run.classes)
    name = f"{result['dataset'].replace('/', '_').replace(':', '_')}-{split}.json"
    path = Path(out) if out else run.run_dir / EVALUATIONS_DIR / name
    return result, atomic_write_json(path, result)
