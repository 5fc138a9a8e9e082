"""Settings that a method or validator declares next to its own code.

A :class:`Setting` says a name, a type, a default, a valid range or choice list, a help line and how it
enters a run's hash.  A method lists its settings in its class (``settings = (Setting(...), ...)``);
registering the class (``da.methods.register``, ``da.selection.register``) declares them here, and from
this table the run config takes its fields, the command line its flags and help, validation its checks and
the hash its policy, so a new method's settings are written once, in its own file.

This module is the bottom layer: it imports nothing of ``da``.  The config layer reads the table; the
registries fill it when they are imported (``da/__init__.py`` imports them, so every user of ``da`` sees
the complete table).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any

# How a setting enters the config hash (RunConfig.hashed_dict):
OWNER = "owner"  # only in runs that use its owner (a method of the run's '+'-combination), default included
# in every run (the runs made before it was declared hashed it so), but at its default in runs that do not
# use its owner, so that it no longer tells apart runs it cannot change
ALWAYS = "always"
UNLESS_DEFAULT = "unless_default"  # only where it differs from its default (added after records existed)
HASH_POLICIES = (OWNER, ALWAYS, UNLESS_DEFAULT)


@dataclass(frozen=True)
class Setting:
    """One setting of a method or validator.  ``type`` is bool, int, float, str or tuple[float, ...];
    ``low``/``high`` bound it (inclusive unless ``low_open``/``high_open``; for a tuple, every element);
    ``choices`` lists its valid values."""

    name: str
    type: Any
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    hash: str = OWNER
    owner: str = field(default="", compare=False)  # the method or validator that declares it, set on declaration
    kind: str = field(default="", compare=False)  # "method" or "validator"

    def __post_init__(self):
        if self.hash not in HASH_POLICIES:
            raise ValueError(f"setting {self.name}: hash {self.hash!r} is not one of {HASH_POLICIES}")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def range_text(self) -> str:
        parts = []
        if self.choices is not None:
            parts.append("one of " + ", ".join(repr(c) for c in self.choices))
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return " and ".join(parts)

    def check(self, value: Any) -> None:
        """Raise a ValueError that names the flag and the valid range unless ``value`` is valid (the type is
        checked with every other field's, by RunConfig.check_types)."""
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            bad = self.choices is not None and v not in self.choices
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                bad = bad or (self.low is not None and (v <= self.low if self.low_open else v < self.low))
                bad = bad or (self.high is not None and (v >= self.high if self.high_open else v > self.high))
                bad = bad or (isinstance(v, float) and not math.isfinite(v))
            if bad:
                every = "all " if isinstance(value, tuple) else ""
                raise ValueError(f"{self.flag} must {every}be {self.range_text()} ({self.owner}'s setting), got {value!r}")


SETTINGS: dict[str, Setting] = {}
USED_BY: dict[str, set[str]] = {}  # method setting -> the methods whose code reads it (a subclass reads its base's)


def declare(owner: str, kind: str, settings: typing.Iterable[Setting], inherited: typing.Iterable[Setting] = ()) -> None:
    """Record the settings ``owner`` declares, and those it inherits from a base class (used, not declared)."""
    for s in settings:
        if kind == "validator" and s.hash != UNLESS_DEFAULT:
            # every run scores every validator: its settings change every record's scores, so a setting hashed
            # by owner would split nothing and one always hashed would move every committed run directory
            raise ValueError(f"setting {s.name!r} of validator {owner}: validators' settings are hashed "
                             f"'{UNLESS_DEFAULT}'")
        if s.name in SETTINGS:
            raise ValueError(f"setting {s.name!r} of {owner} is declared already by {SETTINGS[s.name].owner}")
        if not isinstance(s.default, s.type if typing.get_origin(s.type) is None else tuple):
            raise ValueError(f"setting {s.name!r} of {owner}: default {s.default!r} is not a {s.type}")
        s = dataclasses.replace(s, owner=owner, kind=kind)
        s.check(s.default)
        SETTINGS[s.name] = s
        if kind == "method":
            USED_BY.setdefault(s.name, set()).add(owner)
    for s in inherited:
        if kind == "method":
            USED_BY.setdefault(s.name, set()).add(owner)


# core config field -> checks that a registry declares for it (the method names, the validator names, the
# dataset names, the prior estimators): each takes the config and raises a ValueError that names the flag
FIELD_CHECKS: dict[str, list[typing.Callable[[Any], None]]] = {}


# core config field -> the function that spells a value as its registry does (rsscn7 -> RSSCN7)
FIELD_CANONICAL: dict[str, typing.Callable[[Any], Any]] = {}


def declare_canonical(field_name: str, canonical: typing.Callable[[Any], Any]) -> None:
    """Let RunConfig.validate() rewrite ``field_name`` to its canonical spelling, so that one dataset (or any
    registered name) is one hash, one run directory and one row of a table however it was typed."""
    FIELD_CANONICAL[field_name] = canonical


def declare_check(field_name: str, check: typing.Callable[[Any], None]) -> None:
    """Let RunConfig.validate() check ``field_name`` with ``check`` (a registry's list of names) without the
    config layer importing the registry."""
    FIELD_CHECKS.setdefault(field_name, []).append(check)


def used_by(name: str, methods: typing.Iterable[str]) -> bool:
    """Whether any of ``methods`` reads the setting ``name``."""
    return bool(USED_BY.get(name, set()) & set(methods))
