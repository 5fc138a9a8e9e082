"""Datasets, class maps, splits and transforms."""

from da.data.classmaps import ClassMap, resolve_class_map
from da.data.domains import Split, Splits, adaptation_splits, supervised_splits
from da.data.folder import ImageListDataset, ScanResult, scan
from da.data.registry import DATASETS, DatasetSpec, default_data_root, get_spec, known_names
from da.data.splits import read_manifest, stratified_split, write_manifest

__all__ = [
    "ClassMap", "resolve_class_map", "Split", "Splits", "adaptation_splits", "supervised_splits",
    "ImageListDataset", "ScanResult", "scan", "DATASETS", "DatasetSpec", "default_data_root", "get_spec",
    "known_names", "read_manifest", "stratified_split", "write_manifest", "batch_mixer", "eval_transform",
    "train_transform",
]

_TRANSFORMS = ("batch_mixer", "eval_transform", "train_transform")


def __getattr__(name: str):
    # heavy: da.data.transforms imports torchvision (~1.5 s), so it is imported on first use, not with the package
    if name in _TRANSFORMS:
        from da.data import transforms

        return getattr(transforms, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
