"""Command-line flags generated from a task's config dataclass, for every task (da-run, da-detect): every
field is a flag with its type, help and default; a method's or validator's setting takes its help and valid
range from its own declaration (da.settings).

Precedence: dataclass defaults < ``--preset`` < ``--config FILE`` (YAML or JSON) < explicit flags; an error
names where the bad value came from.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import yaml

from da.config import (ALIGN_SCHEDULES, AMP_MODES, CLS_LOSSES, OPTIMIZERS, PRESETS, SCHEDULES, RunConfig, config_fields,
                       read_config_file)
from da.methods import method_names
from da.selection import validator_names

HELP = {
    "method": f"adaptation method: {', '.join(method_names())}, or a '+'-combination such as mmd+im",
    "cls_loss": f"classification loss: {', '.join(CLS_LOSSES)}",
    "stages": "2: ImageNet -> --stage1 dataset -> adaptation; 1: ImageNet -> adaptation directly",
    "seed": "seed of the run (initialisation, batch order, augmentation)",
    "stage1": "intermediate dataset for stage 1, trained on all its classes",
    "source": "labelled source dataset of stage 2 (its classes shared with the target)",
    "target": "target dataset of stage 2 (train split unlabelled, test split for evaluation only)",
    "class_map": "JSON/YAML class map {classes: {target class: [source classes]}}, or a built-in map's name "
                 "(e.g. AID-RSSCN7-6class); default: the built-in map of (source, target)",
    "transductive": "the published papers' protocol: the whole target set is both the unlabelled training set "
                    "and the test set (for comparison with them only: nothing is held out)",
    "val_fraction": "fraction of the source held out for model selection",
    "target_test_fraction": "fraction of the target held out for the reported test accuracy",
    "target_labeled_fraction": "fraction of target train used with labels (semi-supervised); 0: none; 1.0 with "
                               "--method source_only: the target-supervised reference",
    "split_seed": "seed of the stratified splits (kept fixed across run seeds)",
    "images_per_class": "at most this many images of each class of each dataset, a seeded subset drawn before the "
                        "splits (smoke runs: small caches, never a result); 0: every image",
    "img_size": "input size in pixels",
    "backbone": "torchvision model name (resnet50, efficientnet_b0, ...) or timm:<name>",
    "weights": "imagenet (library download; timm's from the Hugging Face cache when there) | none | "
               "tf_efficientnet_lite0 (offline) | path to a checkpoint or state dict (.pt, .pth, .bin, .safetensors)",
    "strategy": "full | linear (frozen backbone) | partial:K (last K stages train) | gradual (ULMFiT) | lora:K:r "
                "(LoRA adapters of rank r on the last K stages, their weights frozen; Hu et al. 2022)",
    "stage1_strategy": "stage 1's strategy when it differs from --strategy ('': the same); e.g. lora:3:8 in stage 2 "
                       "from the partial:3 stage-1 model other runs share",
    "lora_alpha": "LoRA's alpha: the update is scaled by alpha / r (0: alpha = r, scale 1, the paper's choice)",
    "lora_dropout": "dropout on the LoRA adapters' input",
    "lora_targets": "layers LoRA adapts in its stages: all (linear and every ungrouped convolution) or pointwise "
                    "(linear and 1x1 convolutions); depthwise convolutions stay frozen (peft cannot merge them)",
    "gradual_every": "epochs between unfreezing steps for --strategy gradual",
    "freeze_bn": "keep every BatchNorm in eval mode (small batches)",
    "bottleneck_dim": "width of the bottleneck the alignment acts on; 0: none",
    "cache_views": "augmented views per image cached for a frozen prefix; 0: run the prefix every step",
    "epochs": "epochs of stage 2 (or of the run, with --stages 1)",
    "stage1_epochs": "epochs of stage 1",
    "stage1_seed": "seed of stage 1 (one stage-1 model serves every stage-2 seed)",
    "batch_size": "per domain: a step sees this many source and this many target images",
    "target_batch_size": "unlabelled target images a step sees, when not --batch-size (0: --batch-size); the "
                         "target batch is most of an adaptation method's cost per step",
    "optimizer": f"{', '.join(OPTIMIZERS)}",
    "lr": "learning rate of the head; the backbone gets lr * --backbone-lr-factor",
    "stage1_lr": "learning rate of stage 1 when it differs from --lr (0: the same); fixing it lets runs that "
                 "differ only in --lr share one stage-1 model",
    "schedule": f"{', '.join(SCHEDULES)} (warmup with --warmup-epochs)",
    "amp": f"{', '.join(AMP_MODES)}; auto: fp16 on CUDA, off on CPU",
    "align_weight": "lambda, the weight of the alignment loss",
    "align_schedule": f"{', '.join(ALIGN_SCHEDULES)}; ramp: lambda * (2 / (1 + exp(-10 p)) - 1)",
    "weight_ema": "stage 2: evaluate, select and save an exponential moving average of the trained weights with "
                  "this decay per step (Polyak averaging; 0.99: about the last 100 steps); 0: the trained weights",
    "class_weighting": "'' (none), inverse (frequency) or effective (Cui et al. 2019)",
    "source_sampling": "shuffle (each source image once per epoch) or class_balanced (draws with replacement, "
                       "every class equally often: class-balanced source batches for the alignment losses)",
    "patience": "early stopping after this many epochs without a better selection score; 0: off",
    "selection": f"label-free rule that picks the kept epoch: {', '.join(validator_names())}",
    "rank_validators": "validators whose per-epoch ranks --selection rank averages",
    "prior": "estimate the target class prior each epoch: '' (off), em (EM after BCTS) or bbse; used as "
             "class-ratio weights on the source losses, IM's diversity target and to correct the predictions",
    "adapt_from_epoch": "first epoch (0-based) whose losses use pseudo-labels and the prior estimate; before it "
                        "the new stage-2 classifier trains on the source (0: from the start)",
    "max_steps_per_epoch": "cap on steps per epoch (smoke tests); 0: full epochs",
    "data_root": "folder holding the datasets; default: $DA_DATA_ROOT or ./data",
    "out": "folder of run directories (named by config hash) and the feature cache",
    "device": "auto | cpu | cuda | cuda:N",
    "num_workers": "data-loading worker processes; -1 (auto): the CPUs allotted (SLURM_CPUS_PER_TASK, else this "
                   "process's CPU affinity) minus one for the main process, at most 8",
    "download": "download datasets that have a checksummed URL when they are missing",
    "progress": "show tqdm progress bars (on a terminal; a log file gets one line per epoch)",
    "deterministic": "torch's deterministic algorithms, cuDNN without autotuning (bit-exact GPU reruns, slower)",
}


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


class Parser(argparse.ArgumentParser):
    """An error is one line that names the option, not the usage of ~90 flags before it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n(--help lists every option with its default)\n")


def add_config_flags(parser: argparse.ArgumentParser, fields: Sequence[dataclasses.Field],
                     help_of: Callable[[dataclasses.Field], str], presets: dict[str, dict],
                     types: dict[str, Any] | None = None) -> None:
    """``--config``, ``--preset``, ``--print-config`` and one flag per config field (``--field-name``), whose
    argparse default is None (not given) and whose help ends with the dataclass default.  ``types``: the
    fields' resolved types where ``f.type`` is a string (``typing.get_type_hints`` of the config class)."""
    parser.add_argument("--config", type=Path, help="YAML or JSON file of config fields")
    parser.add_argument("--preset", choices=sorted(presets), nargs="+", metavar="PRESET",
                        help="named sets of fields, applied in order: "
                        + "; ".join(f"{k} = " + " ".join(f"--{f.replace('_', '-')}={_shown(v)}" for f, v in fields_.items())
                                    for k, fields_ in presets.items()))
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (defaults < presets < --config < flags) as YAML, which "
                             "--config reads back, and exit")
    for f in fields:
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kwargs: dict[str, Any] = {"dest": f.name, "default": None,
                                  # argparse formats help with %: a literal one is doubled
                                  "help": (help_of(f) + f" (default: {_shown(default)})").replace("%", "%%")}
        kind = (types or {}).get(f.name, f.type)
        if kind is bool:
            kwargs.update(type=_parse_bool, nargs="?", const=True, metavar="BOOL")
        elif typing.get_origin(kind) is tuple:
            kwargs.update(type=typing.get_args(kind)[0], nargs="+")
        else:
            kwargs.update(type=kind)
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def _shown(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(map(str, value)) or "none"
    return repr(value) if value == "" else str(value)


def resolve(parser: argparse.ArgumentParser, args: argparse.Namespace, fields: Sequence[dataclasses.Field],
            presets: dict[str, dict], make: Callable[[dict[str, Any]], Any], error_field: Callable[[Exception], str | None]):
    """The config ``make(values)`` builds from presets < --config < flags; a bad value ends the program with one
    line naming where it came from (the flag, the preset, or the --config file and key)."""
    values: dict[str, Any] = {}
    source: dict[str, str] = {}  # field -> where its value came from, for the error message
    for preset in args.preset or ():
        values.update(presets[preset])
        source.update({k: f"--preset {preset}" for k in presets[preset]})
    if args.config:
        data = load_config_file(args.config, [f.name for f in fields])
        values.update(data)
        source.update({k: f"--config {args.config}, key {k}" for k in data})
    flags = {f.name: getattr(args, f.name) for f in fields if getattr(args, f.name) is not None}
    values.update(flags)
    source.update({k: "flag" for k in flags})
    try:
        return make(values)
    except (ValueError, TypeError) as err:
        where = source.get(error_field(err) or "", "flag")
        parser.error(str(err) if where == "flag" else f"{where}: {err}")


def _run_help(f: dataclasses.Field) -> str:
    setting = f.metadata.get("setting")
    if setting is not None:
        limits = setting.range_text()
        return f"{setting.owner}: {setting.help}" + (f"; {limits}" if limits else "")
    return HELP.get(f.name, f.name.replace("_", " "))


def build_parser(description: str) -> argparse.ArgumentParser:
    parser = Parser(allow_abbrev=False, description=description)
    add_config_flags(parser, config_fields(), _run_help, PRESETS)
    return parser


def load_config_file(path: Path, valid: Iterable[str] | None = None) -> dict[str, Any]:
    try:
        return read_config_file(path, valid)
    except ValueError as err:
        raise SystemExit(str(err)) from None


def config_from_args(argv: Sequence[str] | None, description: str) -> RunConfig:
    parser = build_parser(description)
    args = parser.parse_args(argv)
    cfg = resolve(parser, args, config_fields(), PRESETS, lambda values: RunConfig.from_dict(values).validate(),
                  lambda err: getattr(err, "field", None))
    if args.print_config:
        print(f"# config hash {cfg.config_hash()}; run it with --config FILE")
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        raise SystemExit(0)
    return cfg
