"""Sweep definitions: a base config, a grid of factors and a list of seeds, expanded into run configs.

A sweep is a YAML file: one shipped with the package (``da/launch/sweeps/<name>.yaml``, given by its name)
or any path::

    base: {epochs: 4}                 # config fields shared by every run
    grid: {stages: [1, 2], method: [source_only, coral, mmd], cls_loss: [ce, focal, ohem]}
    seeds: [0, 1, 2]

Runs are the product grid x seeds, in a fixed order; each is a ``RunConfig`` whose hash names its run
directory, so expanding the same sweep twice gives the same directories.  Entries that give the same
config (a grid value or seed listed twice) are one run.  Comparisons that are no product (a method
with and without an option, a reference row) list ``variants``, each a set of fields over the base;
runs are then variants x grid x seeds, in the order written::

    variants: [{method: source_only}, {method: im, prior: em}]

A variant may list its own ``seeds`` (``{method: mcc, seeds: [3, 4]}``), run instead of the sweep's; a seed
is never a config field of the base, grid or a variant.  The same file format, loader and expansion serve
every task: detection sweeps (``da/detection/sweeps``) are read by :func:`load_sweep` with
``DetectionConfig``.

A sweep that reports label-free results says where each of its choices came from, before it runs
(``choices``): the setting, its value, the pair whose records chose it, which records and by what rule.
Only another pair's records (or a paper, or no data at all: ``pair: a priori``) may choose for a pair; a
choice that names its ``procedure`` (a function of ``da.results.protocol``) is recomputed from the records it
cites by ``tests/test_protocol.py``, which checks every shipped sweep.  A sweep that reruns one pair's
candidates to choose for the other pair names that pair in its choices' ``for``: their runs are that choice's
evidence, never a result of their own pair::

    choices:
      - {setting: selection, value: last, pair: AID -> RSSCN7, records: [results/gap/runs],
         procedure: choose_selection,
         rule: "the validator whose paired difference to the last epoch has a 95 % interval above 0; none"}
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from da.config import ConfigError, RunConfig, config_fields, stage1_config
from da.utils.safeload import load_file, plain_line

# Shipped with the package (setup.cfg package_data), so that names work in any install, not only a checkout.
SWEEPS_DIR = Path(__file__).resolve().parent / "sweeps"
STUDIES_DIR = Path(__file__).resolve().parent / "studies"  # da-hpo's, shipped beside the sweeps and profiles
# optional: records (the runs folders that chose it), procedure, and ``for``: the pair a choice serves where that
# is not the sweep's own (a sweep of one pair's candidates, rerun to choose what the other pair reports)
CHOICE_KEYS = {"setting", "value", "pair", "rule"}


def known_names(folder: Path) -> list[str]:
    """The names of the YAML files shipped in ``folder`` (sweeps or Slurm profiles)."""
    return sorted(p.stem for p in folder.glob("*.yaml"))


def named_yaml(name: str | os.PathLike, folder: Path, kind: str) -> Path:
    """The YAML file ``name`` stands for: a shipped one by its bare name (``main``), else a path (a suffix or a
    directory in it: ``my.yaml``, ``conf/my``).  An unknown name or a missing file says what there is."""
    text = os.fspath(name)
    known = ", ".join(known_names(folder)) or "none"
    if Path(text).suffix or os.sep in text or (os.altsep and os.altsep in text):
        path = Path(text).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{kind} {text}: no such file ({path.resolve()}); known {kind}s shipped with "
                                    f"da, given by name: {known}")
        return path
    path = folder / f"{text}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{kind} {text!r}: unknown name; known {kind}s: {known} (shipped in {folder}), "
                                f"or give the path of a {kind} YAML file")
    return path


def field_names(config_class: type) -> set[str]:
    """The fields a sweep may set for runs of ``config_class`` (a run config: declared settings included)."""
    if config_class is RunConfig:
        return {f.name for f in config_fields()}
    return {f.name for f in dataclasses.fields(config_class)}


@dataclass
class Sweep:
    name: str
    base: dict[str, Any]
    grid: dict[str, list[Any]]
    seeds: list[int]
    variants: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    choices: list[dict[str, Any]] = field(default_factory=list)  # where each choice came from (see above)
    config_class: type = RunConfig  # the task's config: RunConfig, DetectionConfig (from_dict, validate, hash)

    def configs(self, **overrides: Any) -> list:
        """Every run of the sweep; ``overrides`` (out, data_root, ...) apply to all of them."""
        keys = list(self.grid)
        out, seen = [], set()
        for variant, values in itertools.product(self.variants, itertools.product(*(self.grid[k] for k in keys))):
            fixed = {k: v for k, v in variant.items() if k != "seeds"}
            for seed in variant.get("seeds", self.seeds):
                fields_ = {**self.base, **fixed, **dict(zip(keys, values)), "seed": seed, **overrides}
                cfg = self.config_class.from_dict(fields_).validate()
                if cfg.config_hash() in seen:  # a repeated grid value or seed: one run directory, one run
                    continue
                seen.add(cfg.config_hash())
                out.append(cfg)
        return out

    def stage1_configs(self, **overrides: Any) -> list[RunConfig]:
        """The distinct stage-1 configs the sweep's two-stage runs need, once each."""
        seen: dict[str, RunConfig] = {}
        for cfg in self.configs(**overrides):
            if cfg.stages == 2:
                s1 = stage1_config(cfg)
                seen.setdefault(s1.config_hash(), s1)
        return list(seen.values())


def load_sweep(name: str | os.PathLike, folder: Path = SWEEPS_DIR, kind: str = "sweep",
               config_class: type = RunConfig) -> Sweep:
    """A sweep by name (shipped: ``<folder>/<name>.yaml``, by default ``da/launch/sweeps``) or by path, for
    runs of ``config_class``; every run is expanded and validated now, and errors name the file and field."""
    path = named_yaml(name, folder, kind)
    data = load_file(path, kind, yaml_only=True) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{kind} {path}: expected a mapping with base, grid, variants, seeds")
    valid = field_names(config_class)
    unknown_top = sorted(set(data) - {"base", "grid", "variants", "seeds", "description", "choices"})
    if unknown_top:
        raise ValueError(f"{kind} {path}: unknown key(s) {unknown_top}; expected base, grid, variants, seeds, "
                         f"description, choices")
    choices = data.get("choices") or []
    if not isinstance(choices, list) or not all(isinstance(c, dict) and CHOICE_KEYS <= set(c) for c in choices):
        raise ValueError(f"{kind} {path}: choices must be a list of mappings with {', '.join(sorted(CHOICE_KEYS))}")
    base, grid = data.get("base") or {}, data.get("grid") or {}
    variants = data.get("variants") or [{}]
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise ValueError(f"{kind} {path}: variants must be a list of mappings of config fields")
    clash = sorted({k for v in variants for k in v} & set(grid))
    if clash:
        raise ValueError(f"{kind} {path}: {', '.join(clash)} set both in grid and in variants; set each field in one")
    for where, mapping in [("base", base), ("grid", grid)] + [(f"variants[{i}]", v) for i, v in enumerate(variants)]:
        unknown = sorted(set(mapping) - valid - ({"seeds"} if where.startswith("variants") else set()))
        if unknown:
            raise ValueError(f"{kind} {path}: unknown config field(s) in {where}: {', '.join(unknown)}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{kind} {path}: grid.{key} must be a non-empty list")
    seeds = data.get("seeds", [0])
    if "seed" in grid or "seed" in base or "seed" in {k for v in variants for k in v}:
        raise ValueError(f"{kind} {path}: give seeds under 'seeds' (the sweep's, or a variant's own), not as a "
                         "config field")
    for i, v in enumerate(variants):
        if "seeds" in v and not (isinstance(v["seeds"], list) and v["seeds"]
                                 and all(isinstance(x, int) and not isinstance(x, bool) for x in v["seeds"])):
            raise ValueError(f"{kind} {path}: variants[{i}].seeds must be a non-empty list of integers")
    if not (isinstance(seeds, list) and seeds and all(isinstance(x, int) and not isinstance(x, bool) for x in seeds)):
        raise ValueError(f"{kind} {path}: seeds must be a non-empty list of integers")
    sweep = Sweep(name=plain_line(path.stem, f"{kind} {path}: its file name"), base=base, grid=grid, seeds=seeds,
                  variants=variants, choices=choices, config_class=config_class)
    try:
        sweep.configs()  # validate every run now, before anything is submitted
    except ConfigError as err:
        where = ("grid" if err.field in grid else "base" if err.field in base
                 else "variants" if any(err.field in v for v in variants) else "a run")
        raise ValueError(f"{kind} {path}: {where}.{err.field}: {err}") from None
    except (ValueError, TypeError) as err:
        raise ValueError(f"{kind} {path}: {err}") from None
    return sweep
