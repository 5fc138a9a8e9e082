"""Adaptation methods, one file each, registered by name (see ``base.py``).

Every module of this package is imported here, so a new method is one new file with a ``@register``-ed
class: ``--method``, the CLI help, config and sweep validation all read ``method_names()``.
"""

from __future__ import annotations

import importlib
import pkgutil

from da.methods.base import REGISTRY, Composite, Method, StepOutputs, TargetPass, register
from da.settings import declare_check

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

SOURCE_ONLY = "source_only"


def method_names() -> list[str]:
    """Registered names, source_only first."""
    return sorted(REGISTRY, key=lambda n: (n != SOURCE_ONLY, n))


def check_method_name(method: str) -> None:
    """Raise a ValueError naming the valid choices unless ``method`` is a registered name or a
    '+'-combination of distinct registered names (source_only only alone)."""
    parts = method.split("+")
    combinable = method_names()[1:]
    if method == SOURCE_ONLY:
        return
    if any(p not in combinable for p in parts) or len(set(parts)) != len(parts):
        raise ValueError(f"--method {method!r} is not valid; choose from {', '.join(method_names())} "
                         f"or '+'-combinations of {', '.join(combinable)} (e.g. mmd+im)")


declare_check("method", lambda cfg: check_method_name(cfg.method))


def build_method(cfg, num_classes: int, feature_dim: int) -> Method:
    """The method ``cfg.method`` names (a :class:`Composite` for 'a+b'); the stage-1 run is source_only."""
    check_method_name(cfg.method)
    parts = [REGISTRY[name](cfg, num_classes, feature_dim) for name in cfg.method_parts]
    if not parts:
        return REGISTRY[SOURCE_ONLY](cfg, num_classes, feature_dim)
    return parts[0] if len(parts) == 1 else Composite(parts)


__all__ = ["Method", "StepOutputs", "TargetPass", "Composite", "register", "method_names", "check_method_name",
           "build_method", "REGISTRY"]
