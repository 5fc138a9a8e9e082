"""Shared label spaces between a source and a target dataset.

A class map names, for each shared (target) class, the source classes that fall into it; many-to-one
is allowed (AID ``River`` and ``Pond`` -> RSSCN7 ``dRiverLake``).  The shared label space is the
target's classes in the target's official order.  Built-in maps live as JSON files beside this module;
a user gives their own as JSON or YAML:

    {"source": "AID", "target": "RSSCN7", "classes": {"dRiverLake": ["River", "Pond"], ...}}

The same map read the other way round (RSSCN7 -> AID) groups *target* classes: a shared class is then a
mapping of its source and its target classes, and the shared label space is the map's classes in the
order written::

    {"source": "RSSCN7", "target": "AID", "classes": {"dRiverLake": {"source": ["dRiverLake"],
                                                                     "target": ["River", "Pond"]}, ...}}

The built-in map of a pair is ``<source>-<target>.json``; other built-in maps (a subset of classes, as
the literature's 6-class benchmark) are chosen by their file name without ``.json`` (``--class-map
AID-RSSCN7-6class``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


from da.data.registry import DatasetSpec
from da.utils.safeload import load_file

BUILTIN_DIR = Path(__file__).with_name("maps")


@dataclass(frozen=True)
class ClassMap:
    source: str
    target: str
    classes: tuple[tuple[str, tuple[str, ...]], ...]  # (shared/target class, its source classes), target order
    # (shared class, its target classes) when target classes are grouped; empty: each shared class is the
    # target class of its name
    target_groups: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def shared_classes(self) -> list[str]:
        return [t for t, _ in self.classes]

    @property
    def target_classes(self) -> list[str]:
        """The target dataset's classes that the map uses (the folders read from the target)."""
        return [t for _, group in self.target_groups for t in group] if self.target_groups else self.shared_classes

    @property
    def source_classes(self) -> list[str]:
        return [s for _, group in self.classes for s in group]

    def source_label(self) -> dict[str, int]:
        """Source class name -> shared label index."""
        return {s: i for i, (_, group) in enumerate(self.classes) for s in group}

    def target_label(self) -> dict[str, int]:
        """Target class name -> shared label index."""
        if self.target_groups:
            return {t: i for i, (_, group) in enumerate(self.target_groups) for t in group}
        return {t: i for i, (t, _) in enumerate(self.classes)}

    def to_dict(self) -> dict:
        if self.target_groups:
            targets = dict(self.target_groups)
            return {"source": self.source, "target": self.target,
                    "classes": {c: {"source": list(g), "target": list(targets[c])} for c, g in self.classes}}
        return {"source": self.source, "target": self.target, "classes": {t: list(g) for t, g in self.classes}}


def identity_map(spec: DatasetSpec) -> ClassMap:
    return ClassMap(spec.name, spec.name, tuple((c, (c,)) for c in spec.classes))


def builtin_maps() -> dict[tuple[str, str], Path]:
    """The default map of each pair: the built-in file named ``<source>-<target>.json``."""
    out = {}
    for path in sorted(BUILTIN_DIR.glob("*.json")):
        data = json.loads(path.read_text())
        if path.stem == f"{data['source']}-{data['target']}":
            out[(data["source"], data["target"])] = path
    return out


def builtin_map_names() -> list[str]:
    """Every built-in map, by the name ``--class-map`` takes (its file name without ``.json``)."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.json"))


def map_file(name: str | os.PathLike) -> Path:
    """The file a ``--class-map`` value stands for: a built-in map by name, else a path."""
    text = os.fspath(name)
    if text in builtin_map_names():
        return BUILTIN_DIR / f"{text}.json"
    return Path(text)


def _read(path: Path) -> dict:
    try:
        path.stat()
    except OSError as err:
        raise FileNotFoundError(f"class map {path}: cannot read it ({err})") from err
    try:
        data = load_file(path, "class map")
    except UnicodeDecodeError as err:
        raise ValueError(f"class map {path}: not text ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("classes"), dict):
        raise ValueError(f"class map {path}: expected a mapping with a 'classes' mapping "
                         f"{{target class: [source classes]}}")
    return data


def resolve_class_map(source: DatasetSpec, target: DatasetSpec, path: str | os.PathLike | None = None) -> ClassMap:
    """The class map between ``source`` and ``target``: from ``path`` if given, else built in.

    Checks every name against the datasets' official classes; the errors list the valid names.
    """
    if path:
        where = str(path)
        data = _read(map_file(path))
    elif source.map_name == target.map_name:
        return identity_map(source)
    else:
        found = builtin_maps().get((source.map_name, target.map_name))
        if found is None:
            pairs = ", ".join(f"{s} -> {t}" for s, t in builtin_maps())
            raise ValueError(f"no built-in class map from {source.name} to {target.name} (built in: {pairs}); "
                             f"give one with --class-map FILE (JSON or YAML: "
                             f"{{\"classes\": {{\"<target class>\": [\"<source class>\", ...]}}}})")
        where = str(found)
        data = _read(found)
    mapping: dict = data["classes"]
    if any(isinstance(v, dict) for v in mapping.values()):
        return _grouped_map(source, target, mapping, where)
    unknown_t = [t for t in mapping if t not in target.classes]
    if unknown_t:
        raise ValueError(f"class map {where}: {unknown_t} not classes of target {target.name}; "
                         f"valid: {', '.join(target.classes)}")
    groups = []
    seen: dict[str, str] = {}
    for t in target.classes:  # shared label order = target order
        if t not in mapping:
            continue
        groups.append((t, _group(mapping[t], t, source, "source", seen, where, noun="target class")))
    if not groups:
        raise ValueError(f"class map {where}: source {source.name} and target {target.name} share no class")
    return ClassMap(source.name, target.name, tuple(groups))


def _group(value, shared: str, spec: DatasetSpec, side: str, seen: dict[str, str], where: str,
           noun: str = "shared class") -> tuple[str, ...]:
    """The ``side`` (source or target) classes of one shared class, checked against ``spec`` and against
    the classes already placed in another shared class (``seen``)."""
    group = [value] if isinstance(value, str) else list(value or [])
    if not group:  # silently dropping the class would change the label space without a word
        raise ValueError(f"class map {where}: {noun} {shared} has no {side} class; list its {side} classes "
                         f"or leave {shared} out of the map")
    unknown = [c for c in group if c not in spec.classes]
    if unknown:
        raise ValueError(f"class map {where}: {unknown} (for {shared}) not classes of {side} {spec.name}; "
                         f"valid: {', '.join(spec.classes)}")
    for c in group:
        if c in seen:
            raise ValueError(f"class map {where}: {side} class {c} maps to both {seen[c]} and {shared}")
        seen[c] = shared
    return tuple(group)


def _grouped_map(source: DatasetSpec, target: DatasetSpec, mapping: dict, where: str) -> ClassMap:
    """A map whose shared classes each name their source and target classes, in the order written."""
    groups, targets = [], []
    seen_source: dict[str, str] = {}
    seen_target: dict[str, str] = {}
    for shared, value in mapping.items():
        if not isinstance(value, dict) or set(value) != {"source", "target"}:
            raise ValueError(f"class map {where}: shared class {shared} must be a mapping with 'source' and "
                             f"'target' lists when any class is (got {value!r})")
        groups.append((shared, _group(value["source"], shared, source, "source", seen_source, where)))
        targets.append((shared, _group(value["target"], shared, target, "target", seen_target, where)))
    if not groups:
        raise ValueError(f"class map {where}: source {source.name} and target {target.name} share no class")
    return ClassMap(source.name, target.name, tuple(groups), tuple(targets))
