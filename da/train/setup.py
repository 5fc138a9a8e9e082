"""Building a run: its splits, model, method, batch sources, losses and optimiser, in one typed object."""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from da.config import RunConfig, resolve_num_workers
from da.data import adaptation_splits, default_data_root, eval_transform, supervised_splits, train_transform
from da.data.domains import Splits
from da.data.transforms import batch_mixer
from da.losses import build_classification_loss
from da.methods import Method, build_method
from da.models import (GradualUnfreezer, apply_strategy, build_model, build_optimizer, frozen_prefix_length,
                       param_groups)
from da.models.lora import count_parameters
from da.train.batches import CachedBatches, ImageBatches
from da.train.cache import PrefixRuntime, prefix_outputs, weights_digest
from da.train.schedule import build_scheduler
from da.train.weight_average import WeightAverage

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class Data:
    """What one stage trains and evaluates on, as batch sources for the model input at ``start``."""

    splits: Splits
    start: int  # index of the first stage the batches enter (0: images; k: cached prefix output)
    source: Any
    source_eval: Any
    target: Any | None = None  # shuffled, augmented: the method's target batches
    target_pass: Any | None = None  # the target training split in order, evaluation transform: validators
    target_eval: Any | None = None
    target_labeled: Any | None = None
    cache_hits: dict[str, bool] = field(default_factory=dict)

    @property
    def source_train_name(self) -> str:
        return "train" if "train" in self.splits.parts else "source_train"


def load_splits(cfg: RunConfig, stage: int) -> Splits:
    root = cfg.data_root or str(default_data_root())
    if cfg.download:
        from da.data.download import ensure_datasets
        ensure_datasets([cfg.source] if stage == 1 else [cfg.source, cfg.target], root, progress=cfg.progress)
    if stage == 1:
        return supervised_splits(cfg.source, root, cfg.val_fraction, cfg.split_seed, per_class=cfg.images_per_class)
    return adaptation_splits(cfg.source, cfg.target, root, cfg.val_fraction, cfg.target_test_fraction,
                             cfg.split_seed, cfg.target_labeled_fraction, cfg.class_map or None,
                             transductive=cfg.transductive, per_class=cfg.images_per_class)


def build_data(cfg: RunConfig, stage: int, splits: Splits, model, prefix_len: int, device: torch.device,
               target_batches: bool, channels_last: bool = False, target_augmentation: str | None = None) -> Data:
    """The batches of every split; the method's target batches drawn with ``target_augmentation`` (a strong
    view, see ``train_transform``) where the method asks for one, else with the training transform."""
    train_tf = train_transform(cfg.img_size, model.mean, model.std)
    strong_tf = (train_transform(cfg.img_size, model.mean, model.std, strong=target_augmentation)
                 if target_augmentation else train_tf)
    eval_tf = eval_transform(cfg.img_size, model.mean, model.std)
    names = ("train", "val") if stage == 1 else ("source_train", "source_val")
    use_cache = prefix_len > 0 and cfg.cache_views > 0
    hits: dict[str, bool] = {}
    digest = weights_digest(list(model.stages[:prefix_len])) if use_cache else None
    workers = resolve_num_workers(cfg.num_workers)  # -1: from this job's CPUs, resolved where it runs
    if cfg.num_workers != workers:
        log.info("data loading: %d worker process(es) (--num-workers %d: the allotted CPUs minus one)", workers,
                 cfg.num_workers)

    def make(name: str, train: bool, stream: str):
        split = splits[name]
        tf = (strong_tf if stream == "target" else train_tf) if train else eval_tf
        balanced = stream == "source" and cfg.source_sampling == "class_balanced"
        unlabelled = stream == "target"  # the method's target batches carry indices, never labels
        batch_size = (cfg.target_batch if unlabelled else cfg.batch_size) if train else cfg.eval_batch_size
        if use_cache:
            feats, hit = prefix_outputs(model, prefix_len, split, tf,
                                        cfg.cache_views if train else 1, view_seed=cfg.split_seed,
                                        cache_dir=Path(cfg.out) / "cache", device=device,
                                        batch_size=cfg.eval_batch_size, num_workers=workers,
                                        prefix_digest=digest, runtime=PrefixRuntime(
                                            channels_last, cfg.compile_prefix,
                                            legacy=cfg.memory_format == "auto" and not cfg.compile_prefix))
            hits[name if train or name != "target_train" else "target_train_eval"] = hit
            labels = torch.tensor([lab for _, lab in split.samples], dtype=torch.long)
            return CachedBatches(feats, labels, cfg.seed, batch_size,
                                 shuffle=train, drop_last=train, stream=stream, class_balanced=balanced,
                                 channels_last=channels_last, yield_index=unlabelled)
        return ImageBatches(split, tf, cfg.seed, batch_size, shuffle=train, drop_last=train,
                            num_workers=workers, stream=stream, class_balanced=balanced,
                            yield_index=unlabelled)

    data = Data(splits=splits, start=prefix_len if use_cache else 0,
                source=make(names[0], True, "source"), source_eval=make(names[1], False, "source_eval"))
    if stage == 2:
        data.target_eval = make("target_test", False, "target_eval")
        if target_batches:
            data.target = make("target_train", True, "target")
        data.target_pass = make("target_train", False, "target_pass")
        if "target_labeled" in splits.parts:
            data.target_labeled = make("target_labeled", True, "target_labeled")
    for name, batches in (("source", data.source), ("target", data.target), ("target_labeled", data.target_labeled)):
        if batches is not None and len(batches) == 0:
            flag = "--target-batch-size" if name == "target" and cfg.target_batch_size else "--batch-size"
            raise ValueError(f"the {name} training split is smaller than one batch ({batches.batch_size}); "
                             f"lower {flag}")
    data.cache_hits = hits
    return data


@dataclass
class Run:
    """Everything one stage trains with; built by :func:`build_run`."""

    cfg: RunConfig
    stage: int
    device: torch.device
    classes: list[str]
    model: torch.nn.Module
    method: Method
    data: Data
    cls_loss: torch.nn.Module
    labeled_loss: torch.nn.Module
    mixer: Callable | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    unfreezer: GradualUnfreezer | None
    amp_dtype: torch.dtype | None
    channels_last: bool
    steps_per_epoch: int
    data_seconds: float = 0.0
    last_target_pass: Any = None  # the newest TargetPass, computed after the previous epoch
    prior: Any = None  # the newest PriorEstimate (--prior), made from the same outputs
    # stage 2: the class the start model predicted for each target-train image (N,), what drift is measured from
    reference: torch.Tensor | None = None
    class_ratio: torch.Tensor | None = None  # q-hat / p_train (C,), on the device, while --prior is on
    parameters: dict = field(default_factory=dict)  # trainable / adapters / total at the start (da.models.lora)
    weight_average: WeightAverage | None = None  # --weight-ema: the model evaluated instead of the trained one

    @property
    def evaluated(self) -> torch.nn.Module:
        """The model the run evaluates, scores, relabels from and saves: the weight average (``--weight-ema``)
        where there is one, else the trained model."""
        return self.weight_average.module if self.weight_average is not None else self.model

    @property
    def needs_target_pass(self) -> bool:
        """Whether each epoch starts from the model's pass over the unlabelled target training split."""
        return self.method.uses_target_pass or bool(self.cfg.prior and self.stage == 2)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.cfg.epochs

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None else nullcontext()

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for m in (self.model, self.method) for p in m.parameters() if p.requires_grad]


def build_run(cfg: RunConfig, stage: int, splits: Splits, init_weights: str | None) -> Run:
    device = resolve_device(cfg.device)
    classes = splits.classes
    model = build_model(cfg.backbone, len(classes), weights=init_weights or cfg.weights,
                        bottleneck_dim=cfg.bottleneck_dim or None, dropout=cfg.dropout, drop_path=cfg.drop_path,
                        grad_checkpointing=cfg.grad_checkpointing)
    apply_strategy(model, cfg.strategy, freeze_bn=cfg.freeze_bn, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                   lora_targets=cfg.lora_targets)
    # the method's parameters are drawn right after the model's, before anything whose random draws depend
    # on the state of the disk (a cache computed or read)
    method = build_method(cfg if stage == 2 else cfg.replace(method="source_only"), len(classes), model.z_dim)
    method.configure_model(model)
    parameters = count_parameters(model)
    model.to(device)
    method.to(device)
    channels_last = cfg.memory_format == "channels_last" or (cfg.memory_format == "auto" and device.type == "cuda")
    if channels_last:
        model.to(memory_format=torch.channels_last)
    prefix_len = frozen_prefix_length(model, cfg.strategy)
    t_data = time.perf_counter()
    data = build_data(cfg, stage, splits, model, prefix_len, device, target_batches=method.needs_target,
                      channels_last=channels_last, target_augmentation=method.target_augmentation())
    t_data = time.perf_counter() - t_data

    counts = np.bincount([lab for _, lab in splits[data.source_train_name].samples], minlength=len(classes))
    cls_loss = build_classification_loss(cfg.cls_loss, len(classes), class_counts=counts,
                                         class_weighting=cfg.class_weighting or None,
                                         label_smoothing=cfg.label_smoothing, focal_gamma=cfg.focal_gamma,
                                         ohem_ratio=cfg.ohem_ratio).to(device)
    steps_per_epoch = len(data.source)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise ValueError(f"the source training split ({len(splits[data.source_train_name])} images) is smaller "
                         f"than one batch ({cfg.batch_size}); lower --batch-size")
    groups = param_groups(model, cfg.lr, cfg.backbone_lr_factor, cfg.weight_decay)
    groups += method.param_groups(cfg.lr, cfg.weight_decay)  # after the model's: their order is unchanged
    optimizer = build_optimizer(cfg.optimizer, groups, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                momentum=cfg.momentum)
    scheduler = build_scheduler(optimizer, cfg.schedule, steps_per_epoch * cfg.epochs, steps_per_epoch,
                                cfg.warmup_epochs, cfg.restart_t0, cfg.restart_t_mult)
    amp = cfg.amp if cfg.amp != "auto" else ("fp16" if device.type == "cuda" else "off")
    return Run(cfg=cfg, stage=stage, device=device, classes=classes, model=model, method=method, data=data,
               cls_loss=cls_loss, labeled_loss=torch.nn.CrossEntropyLoss(),
               mixer=batch_mixer(len(classes), cfg.mixup_alpha, cfg.cutmix_alpha), optimizer=optimizer,
               scheduler=scheduler,
               scaler=torch.amp.GradScaler(device.type, enabled=(amp == "fp16" and device.type == "cuda")),
               unfreezer=GradualUnfreezer(model, every_epochs=cfg.gradual_every) if cfg.strategy == "gradual" else None,
               amp_dtype={"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp), channels_last=channels_last,
               steps_per_epoch=steps_per_epoch, data_seconds=t_data, parameters=parameters,
               weight_average=WeightAverage(model, cfg.weight_ema) if stage == 2 and cfg.weight_ema > 0 else None)
