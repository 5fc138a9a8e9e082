"""One training loop for both stages.

A step takes a labelled source batch and, when the method needs one, an unlabelled target batch, and
minimises ``cls(source) + lambda * align(z_s, z_t) [+ w_im * IM(target)] [+ w_t * CE(labelled target)]``
with ``z`` the bottleneck output.  After each epoch the model is evaluated on the source validation split
and the target test split; model selection and early stopping use the source validation accuracy only.
The target-test numbers of the selected epoch are the reported result; the best target-test epoch is
kept apart as the ``oracle``.  Every epoch ends with an atomic checkpoint holding every state a resumed
run needs to continue bit-identically.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from da import records
from da.config import SCHEMA_VERSION, RunConfig
from da.data import adaptation_splits, default_data_root, eval_transform, supervised_splits, train_transform
from da.data.domains import Splits
from da.data.transforms import batch_mixer
from da.data.splits import manifest_hash
from da.losses import InformationMaximization, build_alignment_loss, build_classification_loss
from da.models import (GradualUnfreezer, apply_strategy, build_model, build_optimizer, frozen_prefix_length,
                       param_groups)
from da.train.adistance import proxy_a_distance
from da.train import checkpoint
from da.train.batches import CachedBatches, ImageBatches, cycle_batches
from da.train.cache import prefix_outputs, weights_digest
from da.train.metrics import classification_metrics
from da.train.schedule import build_scheduler, ramp_weight
from da.train.seeding import seed_everything
from da.utils.io import atomic_write, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best_model.pt"
FEATURES_FILE = "features.npz"


class NonFiniteLossError(FloatingPointError):
    pass


def run_dir_for(cfg: RunConfig, stage: int) -> Path:
    return Path(cfg.out) / f"stage{stage}-{cfg.config_hash()}"


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
    target: Any | None = None
    target_eval: Any | None = None
    target_labeled: Any | None = None
    cache_hits: dict[str, bool] = field(default_factory=dict)


def load_splits(cfg: RunConfig, stage: int) -> Splits:
    root = cfg.data_root or str(default_data_root())
    if cfg.download:
        from da.data.download import download
        from da.data.registry import get_spec
        for name in ([cfg.source] if stage == 1 else [cfg.source, cfg.target]):
            spec = get_spec(name, root)
            if not spec.folder(root).is_dir():
                download(spec, root)
    if stage == 1:
        return supervised_splits(cfg.source, root, cfg.val_fraction, cfg.split_seed)
    return adaptation_splits(cfg.source, cfg.target, root, cfg.val_fraction, cfg.target_test_fraction,
                             cfg.split_seed, cfg.target_labeled_fraction, cfg.class_map or None)


def build_data(cfg: RunConfig, stage: int, splits: Splits, model, prefix_len: int, device: torch.device) -> Data:
    train_tf = train_transform(cfg.img_size, model.mean, model.std)
    eval_tf = eval_transform(cfg.img_size, model.mean, model.std)
    names = ("train", "val") if stage == 1 else ("source_train", "source_val")
    use_cache = prefix_len > 0 and cfg.cache_views > 0
    hits: dict[str, bool] = {}

    def make(name: str, train: bool, stream: str):
        split = splits[name]
        balanced = stream == "source" and cfg.source_sampling == "class_balanced"
        if use_cache:
            feats, hit = prefix_outputs(model, prefix_len, split, train_tf if train else eval_tf,
                                        cfg.cache_views if train else 1, view_seed=cfg.split_seed,
                                        cache_dir=Path(cfg.out) / "cache", device=device,
                                        batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers,
                                        prefix_digest=digest)
            hits[name] = hit
            labels = torch.tensor([lab for _, lab in split.samples], dtype=torch.long)
            return CachedBatches(feats, labels, cfg.seed, cfg.batch_size if train else cfg.eval_batch_size,
                                 shuffle=train, drop_last=train, stream=stream, class_balanced=balanced)
        return ImageBatches(split, train_tf if train else eval_tf, cfg.seed,
                            cfg.batch_size if train else cfg.eval_batch_size, shuffle=train, drop_last=train,
                            num_workers=cfg.num_workers, stream=stream, class_balanced=balanced)

    digest = weights_digest(list(model.stages[:prefix_len])) if use_cache else None
    data = Data(splits=splits, start=prefix_len if use_cache else 0,
                source=make(names[0], True, "source"), source_eval=make(names[1], False, "source_eval"))
    if stage == 2:
        data.target_eval = make("target_test", False, "target_eval")
        if cfg.method_parts:
            data.target = make("target_train", True, "target")
        if "target_labeled" in splits.parts:
            data.target_labeled = make("target_labeled", True, "target_labeled")
    for name, split in (("source", data.source), ("target", data.target), ("target_labeled", data.target_labeled)):
        if split is not None and len(split) == 0:
            raise ValueError(f"the {name} training split is smaller than one batch ({cfg.batch_size}); "
                             f"lower --batch-size")
    data.cache_hits = hits
    return data


@torch.no_grad()
def bottleneck_features(model, batches, start: int, device: torch.device, autocast) -> tuple[np.ndarray, np.ndarray]:
    """The bottleneck output z (what alignment acts on) and the labels of a split, in split order."""
    was_training = model.training
    model.eval()
    zs, ys = [], []
    for x, y in batches.epoch(0):
        with autocast():
            zs.append(model.forward_from(x.to(device), start)[1].float().cpu().numpy())
        ys.append(y.numpy())
    model.train(was_training)
    return np.concatenate(zs), np.concatenate(ys)


def export_features(model, data: "Data", run_dir: Path, device: torch.device, autocast) -> float | None:
    """Save the selected model's bottleneck features of source-val and target-test (for t-SNE) and
    return their proxy A-distance."""
    if data.target_eval is None:
        return None
    model.load_state_dict(checkpoint.load(run_dir / BEST_FILE)["model"])
    zs, ys = bottleneck_features(model, data.source_eval, data.start, device, autocast)
    zt, yt = bottleneck_features(model, data.target_eval, data.start, device, autocast)
    path = run_dir / FEATURES_FILE
    atomic_write(path, lambda f: np.savez_compressed(f, source=zs.astype(np.float16), source_labels=ys,
                                                      target=zt.astype(np.float16), target_labels=yt), mode="wb")
    return round(proxy_a_distance(zs, zt), 4)


@torch.no_grad()
def evaluate(model, batches, start: int, classes: list[str], device: torch.device, autocast) -> dict:
    was_training = model.training
    model.eval()
    y_true, y_pred = [], []
    for x, y in batches.epoch(0):
        with autocast():
            logits, _ = model.forward_from(x.to(device), start)
        y_true.append(y.numpy())
        y_pred.append(logits.argmax(1).cpu().numpy())
    model.train(was_training)
    return classification_metrics(np.concatenate(y_true), np.concatenate(y_pred), classes)


def _summary(m: dict | None) -> dict | None:
    return None if m is None else {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}


def train_stage(cfg: RunConfig, stage: int, init_weights: str | None = None,
                on_epoch_end: Callable[[int], None] | None = None) -> Path:
    """Train one stage to completion (resuming from its checkpoint if there is one); return its record.

    ``stage`` 1 trains supervised on ``cfg.source`` with all its classes; 2 adapts ``cfg.source`` ->
    ``cfg.target`` on their shared classes, starting from ``init_weights`` (a stage-1 checkpoint) when
    given.  ``on_epoch_end(epoch)`` is called after each checkpoint (tests use it to interrupt a run).
    """
    cfg.validate()
    run_dir = run_dir_for(cfg, stage)
    if records.is_done(run_dir):
        log.info("stage %d: reusing the finished run %s", stage, run_dir)
        return run_dir / records.RECORD_FILE
    run_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    atomic_write_json(run_dir / "config.json", {"config": cfg.to_dict(), "config_hash": cfg.config_hash(),
                                                "stage": stage, "init_weights": init_weights})
    seed_everything(cfg.seed)

    # --- data and model
    splits = load_splits(cfg, stage)
    atomic_write_text(run_dir / "manifest.csv", splits.manifest())
    classes = splits.classes
    model = build_model(cfg.backbone, len(classes), weights=init_weights or cfg.weights,
                        bottleneck_dim=cfg.bottleneck_dim or None, dropout=cfg.dropout, drop_path=cfg.drop_path,
                        grad_checkpointing=cfg.grad_checkpointing)
    apply_strategy(model, cfg.strategy, freeze_bn=cfg.freeze_bn)
    model.to(device)
    channels_last = device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    prefix_len = frozen_prefix_length(model, cfg.strategy)
    t_data = time.perf_counter()
    data = build_data(cfg, stage, splits, model, prefix_len, device)
    t_data = time.perf_counter() - t_data

    # --- losses
    counts = np.bincount([lab for _, lab in data.splits["train" if stage == 1 else "source_train"].samples],
                         minlength=len(classes))
    cls_loss = build_classification_loss(cfg.cls_loss, len(classes), class_counts=counts,
                                         class_weighting=cfg.class_weighting or None,
                                         label_smoothing=cfg.label_smoothing, focal_gamma=cfg.focal_gamma,
                                         ohem_ratio=cfg.ohem_ratio).to(device)
    parts = cfg.method_parts if stage == 2 else []
    align = {p: build_alignment_loss(p, coral_convention=cfg.coral_convention, mmd_estimator=cfg.mmd_estimator,
                                     mmd_kernel_scales=tuple(cfg.mmd_kernel_scales))
             for p in parts if p in ("coral", "mmd")}
    target_pred = {p: InformationMaximization(diversity_weight=1.0 if p == "im" else 0.0)
                   for p in parts if p in ("im", "ent")}
    labeled_loss = torch.nn.CrossEntropyLoss()
    mixer = batch_mixer(len(classes), cfg.mixup_alpha, cfg.cutmix_alpha)

    # --- optimisation
    steps_per_epoch = len(data.source)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise ValueError(f"the source training split ({len(data.splits['train' if stage == 1 else 'source_train'])} "
                         f"images) is smaller than one batch ({cfg.batch_size}); lower --batch-size")
    total_steps = steps_per_epoch * cfg.epochs
    optimizer = build_optimizer(cfg.optimizer, param_groups(model, cfg.lr, cfg.backbone_lr_factor, cfg.weight_decay),
                                lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum)
    scheduler = build_scheduler(optimizer, cfg.schedule, total_steps, steps_per_epoch, cfg.warmup_epochs,
                                cfg.restart_t0, cfg.restart_t_mult)
    amp = cfg.amp if cfg.amp != "auto" else ("fp16" if device.type == "cuda" else "off")
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp)

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()

    scaler = torch.amp.GradScaler(device.type, enabled=(amp == "fp16" and device.type == "cuda"))
    unfreezer = GradualUnfreezer(model, every_epochs=cfg.gradual_every) if cfg.strategy == "gradual" else None

    # --- state, or resume
    state: dict[str, Any] = {"epoch": 0, "history": [], "best": None, "oracle": None, "bad_epochs": 0,
                             "images": 0, "train_time": 0.0, "stopped_early": False, "resumed": 0,
                             "started_at": time.time(), "git_commit": records.git_commit()}
    ckpt_path = run_dir / CHECKPOINT_FILE
    if ckpt_path.exists():
        ckpt = checkpoint.load(ckpt_path)
        if ckpt["config_hash"] != cfg.config_hash():
            raise RuntimeError(f"{ckpt_path} belongs to config {ckpt['config_hash']}, not {cfg.config_hash()}; "
                               f"remove {run_dir} to start over")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        if unfreezer is not None:
            unfreezer.load_state_dict(ckpt["unfreezer"])
        state = ckpt["state"]
        state["resumed"] += 1
        checkpoint.set_rng_state(ckpt["rng"])
        log.info("stage %d: resuming %s after epoch %d", stage, run_dir, state["epoch"])

    writer = _tensorboard(run_dir)
    t_mark = t_start
    model.train()
    while state["epoch"] < cfg.epochs and not state["stopped_early"]:
        epoch = state["epoch"]
        if unfreezer is not None:
            unfreezer.on_epoch_start(epoch)
        t_epoch = time.perf_counter()
        sums: dict[str, float] = {}
        target_iter = cycle_batches(data.target, epoch) if data.target is not None else None
        labeled_iter = cycle_batches(data.target_labeled, epoch) if data.target_labeled is not None else None
        bar = tqdm(data.source.epoch(epoch), total=steps_per_epoch, disable=not cfg.progress, leave=False,
                   desc=f"stage {stage} epoch {epoch + 1}/{cfg.epochs}")
        n_images = 0
        for step, (xs, ys) in enumerate(bar):
            if step >= steps_per_epoch:
                break
            global_step = epoch * steps_per_epoch + step
            lam = cfg.align_weight * (ramp_weight(global_step / total_steps) if cfg.align_schedule == "ramp" else 1.0)
            xs, ys = xs.to(device), ys.to(device)
            if mixer is not None:
                xs, ys = mixer(xs, ys)
            xt = next(target_iter)[0].to(device) if target_iter is not None else None
            if channels_last and xs.dim() == 4:
                xs = xs.contiguous(memory_format=torch.channels_last)
                xt = xt.contiguous(memory_format=torch.channels_last) if xt is not None else None
            with autocast():
                if xt is not None:  # one forward over both domains: BatchNorm sees the joint batch, as in DAN
                    logits, z = model.forward_from(torch.cat([xs, xt]), data.start)
                    logits_s, logits_t = logits[: len(xs)], logits[len(xs):]
                    z_s, z_t = z[: len(xs)], z[len(xs):]
                else:
                    logits_s, z_s = model.forward_from(xs, data.start)
                terms = {"cls": cls_loss(logits_s.float(), ys)}
                for name, loss_fn in align.items():
                    terms[name] = lam * loss_fn(z_s, z_t)
                for name, loss_fn in target_pred.items():
                    terms[name] = cfg.im_weight * loss_fn(logits_t.float())
                if labeled_iter is not None:
                    xl, yl = next(labeled_iter)
                    terms["target_cls"] = cfg.target_weight * labeled_loss(
                        model.forward_from(xl.to(device), data.start)[0].float(), yl.to(device))
                loss = sum(terms.values())
            if not torch.isfinite(loss):
                detail = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
                raise NonFiniteLossError(
                    f"stage {stage}: non-finite loss at epoch {epoch + 1}, step {step + 1} (global step "
                    f"{global_step + 1}): {detail}. The last good checkpoint "
                    f"{ckpt_path if ckpt_path.exists() else '(none yet)'} is intact; lower --lr or check the data")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.clip_grad_norm > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            n_images += len(xs) + (len(xt) if xt is not None else 0)
            if cfg.progress:
                bar.set_postfix({k: f"{v / (step + 1):.3f}" for k, v in sums.items()}
                                | {"img/s": f"{n_images / max(1e-9, time.perf_counter() - t_epoch):.0f}"})
        train_seconds = time.perf_counter() - t_epoch
        state["train_time"] += train_seconds
        state["images"] += n_images

        # --- evaluate, select on source validation only
        src = evaluate(model, data.source_eval, data.start, classes, device, autocast)
        tgt = (evaluate(model, data.target_eval, data.start, classes, device, autocast)
               if data.target_eval is not None else None)
        entry = {"epoch": epoch + 1, "lr": optimizer.param_groups[-1]["lr"], "train_s": round(train_seconds, 3),
                 "loss": {k: v / steps_per_epoch for k, v in sums.items()},
                 "source_val": _summary(src), "target_test": _summary(tgt)}
        state["history"].append(entry)
        if state["best"] is None or src["accuracy"] > state["best"]["source_val"]["accuracy"]:
            state["best"] = {"epoch": epoch + 1, "source_val": src, "target_test": tgt}
            state["bad_epochs"] = 0
            checkpoint.save(run_dir / BEST_FILE, {"model": model.state_dict(), "epoch": epoch + 1,
                                                  "classes": classes, "config_hash": cfg.config_hash()})
        else:
            state["bad_epochs"] += 1
        if tgt is not None and (state["oracle"] is None or tgt["accuracy"] > state["oracle"]["target_test"]["accuracy"]):
            state["oracle"] = {"epoch": epoch + 1, "target_test": tgt}
        if cfg.patience and state["bad_epochs"] >= cfg.patience:
            state["stopped_early"] = True
        state["epoch"] = epoch + 1
        now = time.perf_counter()
        state["wall_time"] = state.get("wall_time", 0.0) + (now - t_mark)  # summed over resumed segments
        t_mark = now
        _log_epoch(writer, entry)
        log.info("stage %d epoch %d/%d: %s source-val acc %.4f%s", stage, epoch + 1, cfg.epochs,
                 " ".join(f"{k}={v:.4f}" for k, v in entry["loss"].items()), src["accuracy"],
                 f", target-test acc {tgt['accuracy']:.4f}" if tgt else "")
        checkpoint.save(ckpt_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "unfreezer": unfreezer.state_dict() if unfreezer else None,
            "state": state, "rng": checkpoint.rng_state(), "config_hash": cfg.config_hash()})
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1)
    if writer is not None:
        writer.close()

    best = state["best"]
    pad = export_features(model, data, run_dir, device, autocast)
    record = {
        "schema_version": SCHEMA_VERSION,
        "config": cfg.to_dict(),
        "config_hash": cfg.config_hash(),
        "seed": cfg.seed,
        "git_commit": state["git_commit"],  # the code the run started with
        "stage": stage,
        "classes": classes,
        "init_weights": init_weights,
        "epochs": state["history"],
        "selected_epoch": best["epoch"],
        "selection": "source_val accuracy (no target labels)",
        "source_val": best["source_val"],
        "target_test": best["target_test"],
        "oracle": state["oracle"],  # best target-test epoch: uses target labels, never a result to report
        "stopped_early": state["stopped_early"],
        "started_at": state.get("started_at"),  # unix time of the first start (before any resume)
        "finished_at": time.time(),
        "wall_time_s": round(state.get("wall_time", 0.0) + time.perf_counter() - t_mark, 3),
        "data_time_s": round(t_data, 3),
        "train_time_s": round(state["train_time"], 3),
        "images_per_s": round(state["images"] / max(state["train_time"], 1e-9), 2),
        "manifest_sha256": manifest_hash(splits.manifest()),
        "split_sizes": {k: len(v) for k, v in splits.parts.items()},
        "skipped_files": {k: len(v) for k, v in splits.skipped.items()},
        "cache_hits": data.cache_hits,
        "prefix_stages_cached": data.start,
        "resumed": state["resumed"],
        "features_file": FEATURES_FILE if pad is not None else None,
        "proxy_a_distance": pad,  # source-val vs target-test bottleneck features of the selected model
        "launch": records.launch_info(),
        "device": str(device),
        "torch": torch.__version__,
    }
    return records.write_record(run_dir, record)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but a broken install must not stop training
        log.warning("tensorboard is not importable: no TensorBoard logs for %s", run_dir)
        return None
    return SummaryWriter(str(run_dir / "tb"))


def _log_epoch(writer, entry: dict) -> None:
    if writer is None:
        return
    step = entry["epoch"]
    for k, v in entry["loss"].items():
        writer.add_scalar(f"loss/{k}", v, step)
    writer.add_scalar("lr", entry["lr"], step)
    for split in ("source_val", "target_test"):
        if entry[split] is not None:
            writer.add_scalar(f"{split}/accuracy", entry[split]["accuracy"], step)
            writer.add_scalar(f"{split}/macro_f1", entry[split]["macro_f1"], step)
    writer.flush()
