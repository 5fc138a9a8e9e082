"""A hyperparameter search space: RunConfig fields, each with a distribution, read from YAML.

    mcc_weight:      {type: loguniform, low: 0.1, high: 3.0}
    shot_weight:     {type: uniform, low: 0.0, high: 1.0}          # step: 0.1 for a grid of values
    bottleneck_dim:  {type: int, low: 128, high: 512, step: 128}
    cls_loss:        {type: categorical, choices: [ce, focal]}

Every key is a field of :class:`da.config.RunConfig` that changes a run's numbers (not out, data_root,
device, ...); the distribution must suit the field's type (a float field takes uniform, loguniform or
numeric choices, an int field int or integer choices, a text or true/false field categorical choices of
its kind).  Parameters are sampled in the order written, so the same file and seed give the same trials.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Any

from da.config import config_fields

TYPES = ("loguniform", "uniform", "int", "categorical")
_KEYS = {"loguniform": {"low", "high"}, "uniform": {"low", "high", "step"}, "int": {"low", "high", "step"},
         "categorical": {"choices"}}


class SpaceError(ValueError):
    pass


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    choices: tuple | None = None

    def suggest(self, trial) -> Any:
        """The value of this parameter for an Optuna trial (one already drawn for the trial is returned as
        it was: Optuna keeps each trial's parameters)."""
        if self.type == "loguniform":
            return trial.suggest_float(self.name, self.low, self.high, log=True)
        if self.type == "uniform":
            return trial.suggest_float(self.name, self.low, self.high, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1)
        return trial.suggest_categorical(self.name, list(self.choices))

    def contains(self, value: Any) -> bool:
        if self.type == "categorical":  # True == 1 in Python, but a true/false field is no number field
            return any(value == c and (isinstance(value, bool) == isinstance(c, bool)) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not self.low <= value <= self.high:
            return False
        if self.type == "int" and not isinstance(value, int):
            return False
        if self.step:  # on the grid low, low + step, ..., as Optuna samples it
            k = (value - self.low) / self.step
            return math.isclose(k, round(k), abs_tol=1e-9)
        return True

    def describe(self) -> str:
        if self.type == "categorical":
            return f"{self.name}: one of {list(self.choices)}"
        step = f", step {self.step}" if self.step else ""
        return f"{self.name}: {self.type} in [{self.low}, {self.high}]{step}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.type == "categorical":
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high)
            if self.step:
                out["step"] = self.step
        return out


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def sample(self, trial) -> dict[str, Any]:
        return {p.name: p.suggest(trial) for p in self.params}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {p.name: p.to_dict() for p in self.params}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _field_kinds() -> dict[str, Any]:
    return {f.name: f.type for f in config_fields() if f.metadata.get("hash", True) is not False}


def parse_param(name: Any, spec: Any, where: str) -> Param:
    """One entry of a space; ``where`` (the file, or the file and its key) starts every error message."""
    kinds = _field_kinds()
    if name not in kinds:
        every = {f.name for f in config_fields()}
        if name in every:
            raise SpaceError(f"{where}: {name}: cannot be searched: it does not change a run's numbers (where or how "
                             f"a run executes); search fields such as lr, mcc_weight, ...")
        raise SpaceError(f"{where}: {name}: unknown RunConfig field; valid fields: {', '.join(sorted(kinds))}")
    if not isinstance(spec, dict):
        raise SpaceError(f"{where}: {name}: expected a mapping such as {{type: loguniform, low: 0.1, high: 3}}, "
                         f"got {spec!r}")
    kind = spec.get("type")
    if kind not in TYPES:
        raise SpaceError(f"{where}: {name}: type {kind!r} is not valid; choose from {', '.join(TYPES)}")
    unknown = sorted(set(spec) - {"type"} - _KEYS[kind])
    if unknown:
        raise SpaceError(f"{where}: {name}: key(s) {', '.join(unknown)} do not belong to type {kind}; it takes "
                         f"{', '.join(sorted(_KEYS[kind]))}")
    field_kind = kinds[name]
    if typing.get_origin(field_kind) is tuple:
        raise SpaceError(f"{where}: {name}: a list field cannot be searched (Optuna's choices are single values); "
                         f"fix it in the base config")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{where}: {name}: choices must be a non-empty list, got {choices!r}")
        for c in choices:
            if not _fits(c, field_kind):
                raise SpaceError(f"{where}: {name}: choice {c!r} does not match the field's type "
                                 f"({_kind_text(field_kind)})")
        if len({(type(c), c) for c in choices}) != len(choices):
            raise SpaceError(f"{where}: {name}: choices repeat a value: {choices}")
        if len(choices) == 1:
            raise SpaceError(f"{where}: {name}: a single choice is no search; set {name}: {choices[0]!r} in the base "
                             f"config instead")
        return Param(name, kind, choices=tuple(choices))
    if field_kind not in (int, float):
        raise SpaceError(f"{where}: {name}: type {kind} does not match the field's type ({_kind_text(field_kind)}); "
                         f"use type: categorical with choices")
    if field_kind is int and kind != "int":
        raise SpaceError(f"{where}: {name}: type {kind} does not match the field's type (an integer); use type: int")
    low, high, step = spec.get("low"), spec.get("high"), spec.get("step")
    for key, value in (("low", low), ("high", high)):
        if value is None:
            raise SpaceError(f"{where}: {name}: type {kind} needs {key}")
        if not _number(value):
            hint = " (YAML reads 1e-3 without a dot as text; write 1.0e-3)" if isinstance(value, str) else ""
            raise SpaceError(f"{where}: {name}: {key} must be a finite number, got {value!r}{hint}")
    if kind == "int":
        for key, value in (("low", low), ("high", high), ("step", step)):
            if value is not None and not isinstance(value, int):
                raise SpaceError(f"{where}: {name}: type int needs integer bounds and step, got {key} {value!r}")
    if not low < high:
        raise SpaceError(f"{where}: {name}: low ({low}) must be below high ({high})")
    if kind == "loguniform" and low <= 0:
        raise SpaceError(f"{where}: {name}: loguniform needs low > 0, got {low}; use uniform for a range from 0")
    if step is not None and not (_number(step) and 0 < step <= high - low):
        raise SpaceError(f"{where}: {name}: step must be a number in (0, high - low], got {step!r}")
    if kind == "uniform":
        low, high = float(low), float(high)
    return Param(name, kind, low=low, high=high, step=step)


def parse_space(data: Any, where: str) -> SearchSpace:
    """A space from its YAML mapping; errors start with ``where`` and name the key and the problem."""
    if not isinstance(data, dict) or not data:
        raise SpaceError(f"{where}: the search space must be a non-empty mapping of RunConfig fields to "
                         f"distributions, e.g. {{lr: {{type: loguniform, low: 3.0e-4, high: 3.0e-3}}}}")
    return SearchSpace(tuple(parse_param(name, spec, where) for name, spec in data.items()))


def _fits(value: Any, kind: Any) -> bool:
    if kind is float:
        return _number(value)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _kind_text(kind: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "text"}.get(kind, str(kind))
