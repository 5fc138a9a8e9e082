"""Run configuration: one typed dataclass with defaults, its validation and its hash.

The defaults are a benchmark that runs anywhere (AID -> RSSCN7 on a 2-core CPU in minutes): offline
ImageNet EfficientNet-Lite0 weights, 128 px, the last stages fine-tuned on a cached frozen prefix.
``PRESETS["paper"]`` is the full-scale GPU protocol.  Fields marked ``hash=False`` in their metadata
(paths, devices, worker counts) do not change the numbers a run produces and are left out of its hash,
so the same experiment has the same run directory on every machine.  Fields added after the first
records were written are hashed only when they differ from their default, so adding a field does not
move the run directories of earlier experiments.

A method's or validator's own settings (``mcc_weight``, ``dann_hidden``, ...) are not written here: each
declares them next to its code (:mod:`da.settings`), and they are fields of every config under the same
flat names, typed, checked, hashed (by the setting's policy) and given flags from that declaration.
``config_fields()`` lists the core fields and the declared settings together.  Which fields shape stage 1
is metadata on the field (``stage1``), read by :func:`stage1_config`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import functools
import math
import os
import re
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

from da import settings as declared
from da.utils.safeload import load_file

# The core fields' choice lists, declared once: the modules that implement them (losses/factory.py,
# models/optim.py) import them from here.  A method's or validator's choices live with it (da.settings).
CLS_LOSSES = ("ce", "focal", "ohem")
SCHEDULES = ("cosine", "restarts", "constant")
OPTIMIZERS = ("adamw", "sgd", "lars")
# --strategy: what da.models.strategies implements; LoRA's adapted layers (da.models.lora)
STRATEGY_PATTERN = r"full|linear|gradual|partial:[1-9]\d*|lora:[1-9]\d*:[1-9]\d*"
LORA_TARGETS = ("all", "pointwise")
AMP_MODES = ("auto", "off", "fp16", "bf16")
ALIGN_SCHEDULES = ("constant", "ramp")
CLASS_WEIGHTINGS = ("", "inverse", "effective")
SOURCE_SAMPLINGS = ("shuffle", "class_balanced")
AUTO_WORKERS = -1  # num_workers: follow the allocation
MAX_AUTO_WORKERS = 8  # more rarely helps one GPU's input pipeline, and each worker holds its own memory


def allotted_cpus() -> int:
    """CPUs this process may use: Slurm's SLURM_CPUS_PER_TASK inside a job, else the CPU affinity (which
    taskset, cgroups and other schedulers narrow), else the machine's count where affinity is unknown."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no sched_getaffinity
        return os.cpu_count() or 1


def resolve_num_workers(requested: int) -> int:
    """Data-loading workers for ``num_workers``: a count >= 0 as given; -1 (auto): the allotted CPUs minus one
    for the main process, at most MAX_AUTO_WORKERS (0, loading in the main process, on a single CPU)."""
    if requested != AUTO_WORKERS:
        return requested
    return max(0, min(MAX_AUTO_WORKERS, allotted_cpus() - 1))


def _plain(default: Any, stage1: bool = False) -> Any:
    return field(default=default, metadata={"stage1": True} if stage1 else {})


def _s1(default: Any) -> Any:
    """A field that shapes stage 1: stage_1_config keeps it."""
    return _plain(default, stage1=True)


def _nohash(default: Any, stage1: bool = False) -> Any:
    return field(default=default, metadata={"hash": False, "stage1": stage1})


def _added(default: Any, stage1: bool = False) -> Any:
    """A field added after records existed: part of the hash only when it is not the default."""
    return field(default=default, metadata={"hash": "unless_default", "stage1": stage1})


def _revised(default: Any, legacy: Any, stage1: bool = False) -> Any:
    """A field whose behaviour existed before the field: records and run directories made before it hold
    ``legacy``.  Hashed unless it holds ``legacy`` (earlier run directories keep their names), and read as
    ``legacy`` from a record that lacks it (:meth:`RunConfig.from_record`)."""
    return field(default=default, metadata={"hash": "unless_legacy", "legacy": legacy, "stage1": stage1})


@dataclass(init=False, eq=False, repr=False)
class RunConfig:
    """Every setting of a run: the core fields below and each registered method's and validator's declared
    settings (:func:`config_fields`), all under flat names: ``RunConfig(method="mcc", mcc_weight=2.0)``."""

    # --- what is compared
    method: str = "coral"  # a name of da.methods (source_only, coral, mmd, dann, cdan, ...), or a '+'-combination
    cls_loss: str = "ce"  # ce | focal | ohem
    stages: int = 2  # 2: ImageNet -> stage1 dataset -> adaptation; 1: ImageNet -> adaptation
    seed: int = 0
    # --- data
    stage1: str = _s1("AID")  # intermediate dataset, all its classes (NWPU-RESISC45 where you have it)
    source: str = "AID"
    target: str = "RSSCN7"
    class_map: str = ""  # JSON/YAML file, or a built-in map's name; empty: the built-in map for (source, target)
    val_fraction: float = _s1(0.2)  # of the source, for model selection (no target labels are ever used)
    target_test_fraction: float = 0.3
    target_labeled_fraction: float = 0.0  # of target train, labelled, for semi-supervised fine-tuning
    # the published papers' protocol: the whole target set is the unlabelled training set *and* the test
    # set (target_test_fraction unused); only for comparison with them, since nothing is held out
    transductive: bool = _added(False)
    split_seed: int = _s1(0)
    # at most this many images of each class of each dataset, a seeded subset drawn before the splits (0: all):
    # the smoke preset's small caches; never a result
    images_per_class: int = _added(0, stage1=True)
    img_size: int = _s1(128)
    # --- model and fine-tuning strategy
    backbone: str = _s1("timm:tf_efficientnet_lite0")
    weights: str = _s1("tf_efficientnet_lite0")  # imagenet | none | tf_efficientnet_lite0 | path to a checkpoint
    strategy: str = _s1("partial:3")  # full | linear | partial:K | gradual | lora:K:r
    stage1_strategy: str = _added("")  # stage 1's, when it differs from strategy ("": the same)
    # LoRA's settings (strategy lora:K:r, da.models.lora): alpha (0: the rank), adapter dropout, adapted layers
    lora_alpha: float = _added(0.0, stage1=True)
    lora_dropout: float = _added(0.0, stage1=True)
    lora_targets: str = _added("all", stage1=True)
    gradual_every: int = _s1(1)  # epochs between unfreezing steps (strategy gradual)
    freeze_bn: bool = _s1(False)
    bottleneck_dim: int = _s1(256)  # 0: no bottleneck
    dropout: float = _s1(0.0)
    drop_path: float = _s1(0.0)
    grad_checkpointing: bool = _s1(False)
    cache_views: int = _s1(2)  # augmented views per image cached for a frozen prefix; 0: no cache
    # Speed levers that move float rounding (last-bit differences, no change of the maths), so they are
    # part of the hash: the activations' memory format (auto: channels_last on CUDA only, the behaviour
    # before this field), and the frozen prefix compiled by torch.compile (inductor, weights frozen:
    # BatchNorm folded into the convolutions) when its outputs are cached.  Measured in
    # results/benchmarks/ and, on the main comparison, in results/speed/.
    memory_format: str = _revised("channels_last", legacy="auto", stage1=True)  # channels_last | contiguous | auto
    compile_prefix: bool = _revised(True, legacy=False, stage1=True)
    # --- optimisation
    epochs: int = 4
    stage1_epochs: int = 3
    stage1_seed: int = 0  # one stage-1 model serves every stage-2 seed
    batch_size: int = _s1(32)  # per domain: a step sees batch_size source + batch_size target images
    # the unlabelled target batch of a step when it differs from the source's (0: batch_size); target images
    # are most of what an adaptation method adds to a step's cost
    target_batch_size: int = _added(0)
    optimizer: str = _s1("adamw")
    lr: float = _s1(1e-3)  # head; the backbone gets lr * backbone_lr_factor
    # stage 1's learning rate when it differs from stage 2's (0: the same, lr); a search over stage 2's lr
    # then shares one stage-1 model. Equal to lr it is the same run as 0, and hashed as such.
    stage1_lr: float = _added(0.0)
    backbone_lr_factor: float = _s1(0.1)
    weight_decay: float = _s1(0.01)
    momentum: float = _s1(0.9)
    schedule: str = _s1("cosine")
    warmup_epochs: float = _s1(0.0)
    restart_t0: int = _s1(1)  # epochs, for schedule=restarts
    restart_t_mult: int = _s1(2)
    clip_grad_norm: float = _s1(5.0)  # 0: off
    amp: str = _s1("auto")  # auto: fp16 + GradScaler on CUDA, off on CPU
    label_smoothing: float = 0.0
    # stage 2: d > 0 evaluates, selects and saves an exponential moving average of the trained weights,
    # updated after every step with decay d (da.train.weight_average); 0: the trained weights themselves
    weight_ema: float = _added(0.0)
    class_weighting: str = ""  # '' | inverse | effective
    focal_gamma: float = 2.0
    ohem_ratio: float = 0.25
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    # shuffle: each source image once per epoch; class_balanced: source images drawn with replacement,
    # each class equally often, so the alignment losses see class-balanced source batches
    source_sampling: str = _added("shuffle")
    # --- adaptation
    align_weight: float = 1.0  # lambda
    align_schedule: str = "constant"  # constant | ramp: lambda * (2 / (1 + exp(-10 p)) - 1)
    # (each method's own settings follow here in config_fields(): declared in its file, da/methods/)
    # target class-prior estimation ('' off; em: EM after BCTS, bbse), re-estimated from each epoch's
    # target pass: prior-corrected target predictions in the record, KL(pbar || q) as IM's diversity
    # target, and class-ratio weights q / p_train on the source cross-entropy and CORAL/MMD statistics
    prior: str = _added("")
    # the first epoch from which pseudo-labels (SHOT, CBST) and the prior estimate are used; before it the
    # new stage-2 classifier trains on the source (0: from the start, when they come from an untrained head)
    adapt_from_epoch: int = _added(0)
    # 1.0 with method source_only: the target-supervised reference (source + all target-train labels)
    target_weight: float = 1.0  # cross-entropy on labelled target images
    # --- selection (label-free validators of da.selection, scored after every stage-2 epoch)
    selection: str = _added("source_acc")  # the validator whose best epoch is kept as the selected model
    rank_validators: tuple[str, ...] = _added(("source_acc", "im", "snd"))  # averaged by selection=rank
    patience: int = 0  # early stopping on the selection score; 0: off
    max_steps_per_epoch: int = _s1(0)  # 0: full epochs (tests use a few steps)
    # --- where and how (not part of the hash)
    data_root: str = _nohash("", stage1=True)  # empty: DA_DATA_ROOT or ./data
    out: str = _nohash("runs", stage1=True)
    device: str = _nohash("auto", stage1=True)
    num_workers: int = _nohash(-1, stage1=True)  # -1: from the CPUs allotted (resolve_num_workers); batches never depend on it
    eval_batch_size: int = _nohash(128, stage1=True)
    download: bool = _nohash(False, stage1=True)
    progress: bool = _nohash(True, stage1=True)  # progress bars, on a terminal only (a log file gets one line per epoch)
    # torch's deterministic algorithms and cuDNN without autotuning: bit-exact GPU reruns, at some speed;
    # the CPU path is deterministic already. Recorded in the record's environment.
    deterministic: bool = _nohash(False, stage1=True)

    # ------------------------------------------------------------------ helpers
    def __init__(self, **values: Any):
        specs = _field_map()
        unknown = sorted(set(values) - set(specs))
        if unknown:
            raise TypeError(f"unknown config field(s) {', '.join(unknown)}; valid fields: {', '.join(specs)}")
        for name, f in specs.items():
            object.__setattr__(self, name, values[name] if name in values else f.default)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunConfig) and self.to_dict() == other.to_dict()

    __hash__ = None  # mutable, like any dataclass with eq

    def __repr__(self) -> str:
        return "RunConfig(" + ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items()) + ")"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        """A config from a dict of fields (a record's, config.json's, a sweep's): JSON lists become the
        tuples the fields hold; fields the dict lacks keep their defaults."""
        tuples = {f.name for f in config_fields() if typing.get_origin(f.type) is tuple}
        return cls(**{k: (tuple(v) if k in tuples and isinstance(v, list) else v) for k, v in data.items()})

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> "RunConfig":
        """The config of a run record: like :meth:`from_dict`, but a revised field the record lacks holds
        the behaviour the run had, its legacy value, not today's default."""
        legacy = {f.name: f.metadata["legacy"] for f in config_fields()
                  if f.metadata.get("hash") == "unless_legacy" and f.name not in data}
        return cls.from_dict({**legacy, **data})

    @property
    def method_parts(self) -> list[str]:
        return [] if self.method == "source_only" else self.method.split("+")

    @property
    def target_batch(self) -> int:
        """The unlabelled target batch of a step: ``target_batch_size``, or ``batch_size`` where it is 0."""
        return self.target_batch_size or self.batch_size

    def hashed_dict(self) -> dict[str, Any]:
        out = {}
        for f in config_fields():
            mode, value = f.metadata.get("hash", True), getattr(self, f.name)
            if (mode is False or (mode == "unless_default" and value == f.default)
                    or (mode == "unless_legacy" and value == f.metadata["legacy"])):
                continue
            if mode == declared.OWNER and not declared.used_by(f.name, self.method_parts):
                continue
            if mode == declared.ALWAYS and not declared.used_by(f.name, self.method_parts):
                value = f.default  # a setting this run's methods never read cannot tell two runs apart
            if f.name == "stage1_lr" and value == self.lr:  # the same run as 0 (stage 1 at lr)
                continue
            if f.name == "stage1_strategy" and value == self.strategy:  # the same run as "" (stage 1 likewise)
                continue
            if f.name == "target_batch_size" and (value == self.batch_size or not self.method_parts):
                continue  # the same run as 0; source-only draws no target batch
            out[f.name] = _jsonable(value)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in config_fields()}

    def config_hash(self) -> str:
        text = json.dumps(self.hashed_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def replace(self, **changes: Any) -> "RunConfig":
        return RunConfig(**{**{f.name: getattr(self, f.name) for f in config_fields()}, **changes})

    def check_types(self) -> "RunConfig":
        """Every field holds a value of its declared type (a bool is no int, a string no number) and every
        float is finite; a :class:`ConfigError` names the field otherwise."""
        for f in config_fields():
            problem = type_problem(_flag(f.name), getattr(self, f.name), f.type)
            if problem:
                raise ConfigError(f.name, problem)
        return self

    def validate(self) -> "RunConfig":
        """Fail at once, naming the field and the valid values, on a config that cannot run; registered names are
        rewritten as their registry spells them (``--target rsscn7`` is RSSCN7)."""
        self.check_types()
        for name, canonical in declared.FIELD_CANONICAL.items():  # rsscn7 -> RSSCN7: one dataset, one hash
            setattr(self, name, canonical(getattr(self, name)))

        def one_of(name: str, valid) -> None:
            if getattr(self, name) not in valid:
                raise ConfigError(name, f"--{name.replace('_', '-')} {getattr(self, name)!r} is not valid; choose from "
                                 f"{', '.join(repr(v) for v in valid)}")

        def registered(*names: str) -> None:  # the registries' own checks of their names (da.settings.declare_check)
            for name in names:
                for check in declared.FIELD_CHECKS.get(name, ()):
                    try:
                        check(self)
                    except ValueError as err:
                        raise ConfigError(name, str(err)) from None

        registered("method", "selection", "rank_validators")
        one_of("cls_loss", CLS_LOSSES)
        one_of("stages", (1, 2))
        one_of("schedule", SCHEDULES)
        one_of("optimizer", OPTIMIZERS)
        one_of("amp", AMP_MODES)
        one_of("align_schedule", ALIGN_SCHEDULES)
        one_of("class_weighting", CLASS_WEIGHTINGS)
        one_of("source_sampling", SOURCE_SAMPLINGS)
        one_of("memory_format", ("channels_last", "contiguous", "auto"))
        registered("stage1", "source", "target")  # dataset names fail here, before anything runs
        for name in ("strategy", "stage1_strategy"):
            value = getattr(self, name)
            if not (re.fullmatch(STRATEGY_PATTERN, value) or (name == "stage1_strategy" and value == "")):
                raise ConfigError(name, f"--{name.replace('_', '-')} {value!r} is not valid; choose from full, linear, "
                                        f"gradual, partial:K (K >= 1 trainable stages), lora:K:r (LoRA of rank r >= 1 "
                                        f"on the last K stages)")
        one_of("lora_targets", LORA_TARGETS)
        if not (self.lora_alpha >= 0 and 0 <= self.lora_dropout < 1):
            raise ConfigError("lora_alpha" if self.lora_alpha < 0 else "lora_dropout",
                              "--lora-alpha must be >= 0 (0: the rank) and --lora-dropout in [0, 1)")
        uses_lora = any(s.startswith("lora:") for s in (self.strategy, self.stage1_strategy))
        changed = [f.name for f in config_fields() if f.name.startswith("lora_") and getattr(self, f.name) != f.default]
        if changed and not uses_lora:
            raise ConfigError(changed[0], f"--{changed[0].replace('_', '-')} is a setting of --strategy lora:K:r, "
                                          f"which neither --strategy nor --stage1-strategy is")
        for name in ("epochs", "batch_size", "img_size", "gradual_every", "restart_t0", "restart_t_mult"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.stages == 2 and self.stage1_epochs < 1:
            raise ConfigError("stage1_epochs", "--stage1-epochs must be >= 1 with --stages 2")
        for name in ("val_fraction", "target_test_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(name, f"{_flag(name)} must lie strictly between 0 and 1, got {getattr(self, name)}")
        if not 0 <= self.target_labeled_fraction <= 1:
            raise ConfigError("target_labeled_fraction", "--target-labeled-fraction must lie in [0, 1] (1: the "
                                                         "target-supervised reference)")
        if self.transductive and self.target_labeled_fraction > 0:
            raise ConfigError("transductive", "--transductive tests on the target training images: it cannot be "
                                              "combined with --target-labeled-fraction (their labels would be trained on)")
        registered("prior")
        if self.prior and (self.cls_loss != "ce" or self.class_weighting):
            raise ConfigError("prior", "--prior sets the source classes' weights to q-hat / p_train: use it with "
                                       "--cls-loss ce and no --class-weighting")
        if self.lr <= 0:
            raise ConfigError("lr", f"--lr must be > 0, got {self.lr}")
        if self.stage1_lr < 0:
            raise ConfigError("stage1_lr", f"--stage1-lr must be >= 0 (0: the same as --lr), got {self.stage1_lr}")
        if (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.cls_loss != "ce":
            raise ConfigError("cls_loss", "MixUp/CutMix give soft labels: use them with --cls-loss ce")
        frozen_prefix = self.strategy == "linear" or self.strategy.startswith(("partial", "lora"))
        if (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and frozen_prefix and self.cache_views > 0:
            raise ConfigError("cache_views", "MixUp/CutMix mix images: set --cache-views 0 to use them with a frozen prefix")
        if not 0 <= self.ohem_ratio <= 1:
            raise ConfigError("ohem_ratio", "--ohem-ratio must lie in [0, 1]")
        if self.num_workers < AUTO_WORKERS:
            raise ConfigError("num_workers", f"--num-workers must be >= 0, or {AUTO_WORKERS} for one per allotted CPU "
                                             f"but the main process's, got {self.num_workers}")
        for name, low in (("max_steps_per_epoch", 0), ("patience", 0), ("eval_batch_size", 1), ("target_batch_size", 0),
                          ("cache_views", 0), ("bottleneck_dim", 0), ("stage1_epochs", 0), ("seed", 0),
                          ("split_seed", 0), ("stage1_seed", 0), ("images_per_class", 0), ("img_size", 32), ("clip_grad_norm", 0),
                          ("weight_decay", 0), ("warmup_epochs", 0), ("focal_gamma", 0), ("align_weight", 0),
                          ("target_weight", 0), ("adapt_from_epoch", 0), ("backbone_lr_factor", 0), ("mixup_alpha", 0),
                          ("cutmix_alpha", 0)):
            if getattr(self, name) < low:
                raise ConfigError(name, f"{_flag(name)} must be >= {low}, got {getattr(self, name)}")
        for name in ("momentum", "label_smoothing", "dropout", "drop_path", "weight_ema"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(name, f"{_flag(name)} must lie in [0, 1), got {getattr(self, name)}")
        for f in config_fields():  # each method's and validator's settings, by their own declaration
            if "setting" in f.metadata:
                try:
                    f.metadata["setting"].check(getattr(self, f.name))
                except ValueError as err:
                    raise ConfigError(f.name, str(err)) from None
        # a setting's checks that read other fields, declared with it (da.settings.declare_check)
        registered(*(f.name for f in config_fields() if "setting" in f.metadata))
        return self


class ConfigError(ValueError):
    """A config value that cannot run; ``field`` names the config field, so callers can say where the value
    came from (a flag, a key of a --config file, a sweep file)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def type_problem(name: str, value: Any, kind: Any) -> str | None:
    """What is wrong with ``value`` as a value of the field ``name`` of type ``kind`` (bool, int, float, str or a
    tuple of one of them): a bool is no int, a string no number, a float must be finite; None when it fits.
    Shared by every task's config (classification's RunConfig, detection's DetectionConfig)."""
    if typing.get_origin(kind) is tuple:
        elem = typing.get_args(kind)[0]
        if not isinstance(value, tuple) or not value or not all(_is(v, elem) for v in value):
            return f"{name} expects a non-empty list of {_kind_name(elem)}s, got {value!r}"
        if elem is float and not all(math.isfinite(v) for v in value):
            return f"{name} must hold finite numbers, got {value!r}"
        return None
    if not _is(value, kind):
        hint = ""
        if kind in (int, float) and isinstance(value, str):
            hint = (" (a string: YAML 1.1 reads a number like 1e-3 without a dot as text; write 1.0e-3)"
                    if re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value.strip()) else " (a string)")
        return f"{name} expects {_kind_name(kind)}, got {value!r}{hint}"
    if kind is float and not math.isfinite(value):
        return f"{name} must be a finite number, got {value!r}"
    return None


def _is(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def _kind_name(kind: type) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "text"}.get(kind, kind.__name__)


@functools.cache
def _core_fields() -> tuple[dataclasses.Field, ...]:
    hints = typing.get_type_hints(RunConfig)
    out = []
    for f in fields(RunConfig):
        f.type = hints[f.name]  # the resolved type, not its string annotation
        out.append(f)
    return tuple(out)


def _setting_field(s: declared.Setting) -> dataclasses.Field:
    f = field(default=s.default, metadata={"hash": s.hash, "setting": s, "stage1": False})
    f.name, f.type = s.name, s.type
    return f


_SETTINGS_AFTER = "align_schedule"  # where the declared settings sit among the core fields (tables' column order)


@functools.cache
def _fields_for(declared_names: tuple[str, ...]) -> tuple[dataclasses.Field, ...]:
    core = _core_fields()
    at = next(i for i, f in enumerate(core) if f.name == _SETTINGS_AFTER) + 1
    extra = [_setting_field(declared.SETTINGS[n]) for n in declared_names]
    clash = {f.name for f in core} & set(declared_names)
    if clash:
        raise ValueError(f"declared setting(s) {', '.join(sorted(clash))} are also core fields of RunConfig")
    return core[:at] + tuple(extra) + core[at:]


def config_fields() -> tuple[dataclasses.Field, ...]:
    """The fields of a run config: the core fields of :class:`RunConfig` and every declared method and validator
    setting (``da.settings``), each with ``name``, ``type`` (resolved), ``default`` and ``metadata`` (``hash``,
    ``stage1``, ``legacy``; a declared setting's :class:`~da.settings.Setting` under ``setting``)."""
    return _fields_for(tuple(declared.SETTINGS))


def _field_map() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in config_fields()}


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


PRESETS: dict[str, dict[str, Any]] = {
    # The full-scale protocol for a GPU: resnet50 at 224 px, everything fine-tuned, more epochs.
    "paper": dict(backbone="resnet50", weights="imagenet", img_size=224, strategy="full", cache_views=0,
                  epochs=30, stage1_epochs=30, batch_size=64, lr=1e-3, warmup_epochs=1.0, patience=8),
    # The protocol the project is named for: stage 1 on all 45 NWPU-RESISC45 classes, then NWPU-RESISC45 ->
    # UC Merced on their 20 shared classes (built-in map); both download with --download.
    "resisc45-ucm": dict(stage1="NWPU-RESISC45", source="NWPU-RESISC45", target="UCMerced"),
    # A few steps on small images: the smoke test of the whole pipeline.
    "smoke": dict(img_size=64, epochs=2, stage1_epochs=1, batch_size=16, max_steps_per_epoch=3, images_per_class=20),
}


def read_config_file(path: Path, valid: Iterable[str] | None = None) -> dict[str, Any]:
    """The config fields of a YAML or JSON file (a record's or config.json's ``config`` mapping too); a
    ValueError names the file and what is wrong.  ``valid``: the field names (default: a run config's)."""
    data = load_file(path, "--config")
    data = data.get("config", data) if isinstance(data, dict) else data
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a mapping of config fields")
    valid = list(valid) if valid is not None else [f.name for f in config_fields()]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ValueError(f"--config {path}: unknown field(s) {', '.join(unknown)}; valid fields: "
                         f"{', '.join(sorted(valid))}")
    return data


def stage1_config(cfg: RunConfig) -> RunConfig:
    """The supervised stage-1 config a stage-2 config depends on.

    Only what shapes stage 1 (the fields marked ``stage1``) is kept; the rest is set to fixed values so that
    every stage-2 run with the same stage-1 settings gets the same hash, hence the same stage-1 directory and
    checkpoint.  A new field that shapes stage 1 says so in its declaration (``_s1``), not in a list here.
    """
    base = RunConfig()
    changes = {f.name: getattr(cfg, f.name) for f in config_fields() if f.metadata.get("stage1")}
    changes["lr"] = cfg.stage1_lr or cfg.lr
    changes["strategy"] = cfg.stage1_strategy or cfg.strategy
    if not changes["strategy"].startswith("lora:"):  # LoRA's settings do not shape a stage 1 without it
        changes.update({f.name: f.default for f in config_fields() if f.name.startswith("lora_")})
    changes.update(method="source_only", cls_loss="ce", stages=1, seed=cfg.stage1_seed, source=cfg.stage1,
                   target="", class_map="", epochs=cfg.stage1_epochs, stage1_epochs=0, stage1_seed=0,
                   target_test_fraction=base.target_test_fraction, target_labeled_fraction=0.0)
    return base.replace(**changes)
