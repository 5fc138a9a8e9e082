"""One loader for every YAML or JSON file a user hands the project (configs, sweeps, studies, spaces, profiles,
class maps, model cards): a repeated key is refused (YAML and JSON otherwise keep the last one silently),
aliases may not expand a document beyond MAX_NODES nodes (a 1 KB file of nested aliases otherwise becomes
gigabytes once walked), and files beyond MAX_BYTES are refused.  Errors are ValueErrors that name the file,
the line and the key."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 4 << 20  # a config, sweep or card is kilobytes; a COCO annotation file may be megabytes
MAX_NODES = 200_000  # nodes of the document with every alias expanded


def _check_node(node: yaml.Node, where: str) -> None:
    """Refuse repeated mapping keys and documents whose alias expansion exceeds MAX_NODES."""
    sizes: dict[int, int] = {}

    def size(n: yaml.Node, depth: int = 0) -> int:
        if id(n) in sizes:  # an alias: the same node again, counted again (what a walker would copy)
            return sizes[id(n)]
        if depth > 200:
            raise ValueError(f"{where}: nested more than 200 levels deep")
        total = 1
        if isinstance(n, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key, value in n.value:
                if isinstance(key, yaml.ScalarNode):
                    line = key.start_mark.line + 1
                    if key.value in seen:
                        raise ValueError(f"{where}: key(s) {key.value} given more than once (lines {seen[key.value]} "
                                         f"and {line}; a later one would silently replace the earlier)")
                    seen[key.value] = line
                total += size(key, depth + 1) + size(value, depth + 1)
        elif isinstance(n, yaml.SequenceNode):
            total += sum(size(v, depth + 1) for v in n.value)
        if total > MAX_NODES:
            raise ValueError(f"{where}: expands to more than {MAX_NODES:,} nodes (aliases nested in aliases?); "
                             f"refused")
        sizes[id(n)] = total
        return total

    size(node)


def load_yaml_text(text: str, where: str) -> Any:
    """``yaml.safe_load(text)`` with the checks of this module; ``where`` (the file) starts every error."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_node(node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise ValueError(f"{where}: not valid YAML ({err})") from None
    finally:
        loader.dispose()


def load_json_text(text: str, where: str) -> Any:
    def no_repeats(pairs):
        keys = [k for k, _ in pairs]
        repeated = sorted({k for k in keys if keys.count(k) > 1}, key=str)
        if repeated:
            raise ValueError(f"{where}: key(s) {', '.join(map(str, repeated))} given more than once (a later one "
                             f"would silently replace the earlier)")
        return dict(pairs)

    try:
        return json.loads(text, object_pairs_hook=no_repeats)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not valid JSON ({err})") from None


def load_file(path: str | os.PathLike, what: str = "", max_bytes: int = MAX_BYTES, yaml_only: bool = False) -> Any:
    """A YAML (``.yaml``/``.yml``, or any name with ``yaml_only``: sweeps, studies and profiles are YAML files
    whatever they are called) or JSON file, checked; ``what`` (e.g. ``--config``, ``sweep``) prefixes the file in
    error messages."""
    path = Path(path)
    where = f"{what} {path}".strip()
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ValueError(f"{where}: {size:,} bytes, more than the {max_bytes:,} this file may have; refused")
        text = path.read_text()
    except OSError as err:
        raise ValueError(f"{where}: cannot read it ({err})") from None
    if yaml_only or path.suffix.lower() in (".yaml", ".yml"):
        return load_yaml_text(text, where)
    return load_json_text(text, where)


def plain_line(value: Any, where: str) -> str:
    """``value`` as text that may go into a shell or sbatch script (a job name, a profile value, a setup line):
    a control character (a newline starts a script line of its own there) is refused, naming ``where``."""
    text = str(value)
    if re.search(r"[\x00-\x1f\x7f]", text):
        raise ValueError(f"{where} holds a control character (newline, tab, ...) in {text!r}; it goes into a shell "
                         f"script, where each value must be one plain line")
    return text
