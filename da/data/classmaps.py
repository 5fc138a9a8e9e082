"""Shared label spaces between a source and a target dataset.

A class map names, for each shared (target) class, the source classes that fall into it; many-to-one
is allowed (AID ``River`` and ``Pond`` -> RSSCN7 ``dRiverLake``).  The shared label space is the
target's classes in the target's official order.  Built-in maps live as JSON files beside this module;
a user gives their own as JSON or YAML:

    {"source": "AID", "target": "RSSCN7", "classes": {"dRiverLake": ["River", "Pond"], ...}}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from da.data.registry import DatasetSpec

BUILTIN_DIR = Path(__file__).with_name("maps")


@dataclass(frozen=True)
class ClassMap:
    source: str
    target: str
    classes: tuple[tuple[str, tuple[str, ...]], ...]  # (shared/target class, its source classes), target order

    @property
    def shared_classes(self) -> list[str]:
        return [t for t, _ in self.classes]

    @property
    def source_classes(self) -> list[str]:
        return [s for _, group in self.classes for s in group]

    def source_label(self) -> dict[str, int]:
        """Source class name -> shared label index."""
        return {s: i for i, (_, group) in enumerate(self.classes) for s in group}

    def target_label(self) -> dict[str, int]:
        return {t: i for i, (t, _) in enumerate(self.classes)}

    def to_dict(self) -> dict:
        return {"source": self.source, "target": self.target, "classes": {t: list(g) for t, g in self.classes}}


def identity_map(spec: DatasetSpec) -> ClassMap:
    return ClassMap(spec.name, spec.name, tuple((c, (c,)) for c in spec.classes))


def builtin_maps() -> dict[tuple[str, str], Path]:
    out = {}
    for path in sorted(BUILTIN_DIR.glob("*.json")):
        data = json.loads(path.read_text())
        out[(data["source"], data["target"])] = path
    return out


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple]) -> dict:
    keys = [k for k, _ in pairs]
    dup = sorted({k for k in keys if keys.count(k) > 1}, key=str)
    if dup:
        raise _DuplicateKey(f"key(s) {', '.join(map(str, dup))} given more than once (a later one would silently "
                            f"replace the earlier)")
    return dict(pairs)


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a mapping that repeats a key is an error, not a silent overwrite."""

    def construct_mapping(self, node, deep=False):
        self.flatten_mapping(node)
        return _no_duplicates([(self.construct_object(k, deep=deep), self.construct_object(v, deep=deep))
                               for k, v in node.value])


def _read(path: Path) -> dict:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise FileNotFoundError(f"class map {path}: cannot read it ({err})") from err
    try:
        data = (yaml.load(text, Loader=_StrictLoader) if path.suffix.lower() in (".yaml", ".yml")
                else json.loads(text, object_pairs_hook=_no_duplicates))
    except _DuplicateKey as err:
        raise ValueError(f"class map {path}: {err}") from None
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"class map {path}: not valid {'YAML' if path.suffix.lower() in ('.yaml', '.yml') else 'JSON'}: {err}") from err
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
        data = _read(Path(path))
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
    unknown_t = [t for t in mapping if t not in target.classes]
    if unknown_t:
        raise ValueError(f"class map {where}: {unknown_t} not classes of target {target.name}; "
                         f"valid: {', '.join(target.classes)}")
    groups = []
    seen: dict[str, str] = {}
    for t in target.classes:  # shared label order = target order
        if t not in mapping:
            continue
        group = mapping[t]
        group = [group] if isinstance(group, str) else list(group or [])
        if not group:  # silently dropping the class would change the label space without a word
            raise ValueError(f"class map {where}: target class {t} has no source class; list its source classes "
                             f"or leave {t} out of the map")
        unknown_s = [s for s in group if s not in source.classes]
        if unknown_s:
            raise ValueError(f"class map {where}: {unknown_s} (for {t}) not classes of source {source.name}; "
                             f"valid: {', '.join(source.classes)}")
        for s in group:
            if s in seen:
                raise ValueError(f"class map {where}: source class {s} maps to both {seen[s]} and {t}")
            seen[s] = t
        groups.append((t, tuple(group)))
    if not groups:
        raise ValueError(f"class map {where}: source {source.name} and target {target.name} share no class")
    return ClassMap(source.name, target.name, tuple(groups))
