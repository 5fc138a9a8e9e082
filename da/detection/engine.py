"""Train and evaluate one detector: ``run_detection(cfg)`` -> the run directory with its record.

The run directory is ``<out>/det-<config hash>/`` (files as in ``da.rundir``): ``config.json`` first, the
split ``manifest.csv``, ``checkpoint.pt`` after every epoch (model, optimiser, scheduler, history and every
RNG state, so a killed run resumes where it stopped), ``best_model.pt`` (the epoch with the best val
mAP@[.5:.95] at the headline NMS), ``record.json`` and ``DONE``.  Selection uses the val split only; the test
split is scored once, with the selected model, at every configured NMS threshold.

SGD with momentum, a linear warmup then cosine decay per iteration (torch's schedulers), gradient clipping,
AMP on CUDA; batches of whole images, as torchvision's detection reference trains.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from da import __version__
from da.config import resolve_num_workers
from da.detection.anchors import AnchorGeneratorArgs, anchor_generator_args, boxes_wh, default_anchor_shapes, \
    fit_anchors, mean_best_iou
from da.detection.config import DetectionConfig
from da.detection.data import DetectionSample, load_detection, split_by_image
from da.detection.evaluate import coco_metrics, postprocess
from da.detection.model import build_detector
from da.detection.transforms import detection_transforms, sample_inputs
from da.records import DETECTION_SCHEMA_VERSION, environment, git_commit, is_done, launch_info, load_record, \
    peak_memory_mb, write_record
from da.runindex import refresh_index
from da.rundir import BEST_FILE, CHECKPOINT_FILE, CONFIG_FILE, FAILED_FILE, LOCK_FILE, LOG_FILE, MANIFEST_FILE, \
    RECORD_FILE, check_inputs
from da.train.checkpoint import DamagedCheckpoint, load, read_checkpoint, rng_state, save, set_aside, set_rng_state
from da.train.seeding import derive_seed, seed_everything
from da.utils.io import atomic_write_json, atomic_write_text, exclusive_lock, file_digest
from da.utils.runlog import run_log

log = logging.getLogger("da.detection")
INPUTS = {"data": "the images or their boxes and labels", "weights": "the backbone's weights file"}
LOG_EVERY = 25  # training steps between progress lines in the log


class DetectionDataset(Dataset):
    """Samples through the box-aware transforms; returns (float image in [0, 1], {"boxes", "labels"})."""

    def __init__(self, samples: list[DetectionSample], transform):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        image, target = self.transform(*sample_inputs(self.samples[i]))
        return image.as_subclass(torch.Tensor), {"boxes": target["boxes"].as_subclass(torch.Tensor).float(),
                                                 "labels": target["labels"]}


def _collate(batch):
    return tuple(zip(*batch))


def resize_factor(size: tuple[int, int], min_size: int, max_size: int) -> float:
    """The scale torchvision's ``GeneralizedRCNNTransform`` resizes an (H, W) image by."""
    short, long = min(size), max(size)
    return min(min_size / short, max_size / long)


def training_box_shapes(samples: list[DetectionSample], cfg: DetectionConfig) -> np.ndarray:
    """(w, h) of every training box at the detector's input scale (anchors live there)."""
    parts = [boxes_wh(s.boxes) * resize_factor(s.image_size, cfg.min_size, cfg.max_size) for s in samples
             if s.num_boxes]
    return np.concatenate(parts) if parts else np.zeros((0, 2))


def choose_anchors(cfg: DetectionConfig, train: list[DetectionSample]) -> tuple[AnchorGeneratorArgs | None, dict]:
    """The anchors the run uses and, for the record, both fits' mean best-anchor IoU on the training boxes."""
    wh = training_box_shapes(train, cfg)
    info: dict[str, Any] = {"choice": cfg.anchors, "train_boxes": int(len(wh)),
                            "default_mean_best_iou": round(mean_best_iou(wh, default_anchor_shapes()), 4)}
    if cfg.anchors == "default":
        return None, info
    fit = fit_anchors(wh, k=cfg.anchor_k, seed=cfg.split_seed)
    args = anchor_generator_args(fit.anchors)
    info.update({"fitted_k": cfg.anchor_k, "fitted_anchors_wh": np.round(fit.anchors, 2).tolist(),
                 "fitted_mean_best_iou": round(fit.mean_iou, 4),
                 "generator_mean_best_iou": round(mean_best_iou(wh, args.shapes()), 4),
                 "sizes": [list(s) for s in args.sizes], "aspect_ratios": list(args.aspect_ratios[0])})
    return args, info


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def predict_raw(model, samples: list[DetectionSample], device: torch.device, batch_size: int = 4,
                num_workers: int = 0) -> tuple[list[dict], float]:
    """The detector's boxes before NMS for every sample (on the CPU), and images per second."""
    model.eval()
    loader = DataLoader(DetectionDataset(samples, detection_transforms(train=False)), batch_size=batch_size,
                        shuffle=False, num_workers=num_workers, collate_fn=_collate)
    out, t0 = [], time.perf_counter()
    for images, _ in loader:
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            dets = model([im.to(device) for im in images])
        out += [{k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in d.items()} for d in dets]
    return out, len(samples) / max(time.perf_counter() - t0, 1e-9)


def score(raw: list[dict], samples: list[DetectionSample], classes, cfg: DetectionConfig,
          nms_iou: float) -> dict:
    dets = [postprocess(r, nms_iou, cfg.score_thresh, cfg.detections_per_img) for r in raw]
    gts = [{"boxes": s.boxes, "labels": s.labels, "difficult": s.difficult} for s in samples]
    return coco_metrics(gts, dets, classes)


def _limit(samples: list, n: int) -> list:
    return samples[:n] if n else samples


def run_inputs(cfg: DetectionConfig, dataset) -> dict[str, str]:
    """What a run saw besides its config (checked before a done run is reused or a checkpoint resumed): the
    images with their boxes, and the backbone's weights file (a stage-1 run directory: its selected model)."""
    inputs = {"data": dataset.fingerprint()}
    weights = Path(cfg.weights) / BEST_FILE if Path(cfg.weights).is_dir() else Path(cfg.weights)
    if weights.is_file():
        inputs["weights"] = file_digest(weights)
    return inputs


def run_detection(cfg: DetectionConfig) -> Path:
    """Train (or resume) and evaluate one detection config; returns the run directory (reuses a done run made
    from the same inputs; :class:`~da.rundir.StaleRunError` for one made from other data or weights)."""
    cfg.validate()
    run_dir = cfg.run_dir()
    dataset = load_detection(cfg.dataset, cfg.data_root)  # fails before any file is written
    inputs = run_inputs(cfg, dataset)

    def reuse() -> Path:
        saved = load_record(run_dir / RECORD_FILE, kind="detection").get("inputs")
        if saved is None:  # written before detection records kept their inputs
            log.warning("%s does not record its inputs; it cannot be checked against the current data", run_dir)
        check_inputs(run_dir, saved, inputs, INPUTS)
        log.info("%s is done; reusing it", run_dir)
        return run_dir

    if is_done(run_dir):
        return reuse()
    run_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(run_dir / LOCK_FILE), run_log(run_dir / LOG_FILE):
        if is_done(run_dir):  # finished while this process waited for the lock
            return reuse()
        (run_dir / FAILED_FILE).unlink(missing_ok=True)  # this attempt replaces an earlier failure
        refresh_index(run_dir.parent)
        try:
            return _run(cfg, run_dir, dataset, inputs)
        except Exception as err:  # as classification's runs: the sweep's state says "failed", not "partial"
            atomic_write_text(run_dir / FAILED_FILE, f"{type(err).__name__}: {err}\nlog: {run_dir / LOG_FILE}\n")
            raise
        finally:
            refresh_index(run_dir.parent)


def _run(cfg: DetectionConfig, run_dir: Path, dataset, inputs: dict[str, str]) -> Path:
    t_start = time.time()
    commits = [git_commit()]  # the code this segment runs, read before it can change under a long run
    device = pick_device(cfg.device)
    ckpt_path = run_dir / CHECKPOINT_FILE
    if (run_dir / CONFIG_FILE).exists() and ckpt_path.exists():  # resuming: from the same inputs?
        check_inputs(run_dir, json.loads((run_dir / CONFIG_FILE).read_text()).get("inputs"), inputs, INPUTS)
    splits = split_by_image(dataset, cfg.val_fraction, cfg.test_fraction, seed=cfg.split_seed)
    splits.write_manifest(run_dir / MANIFEST_FILE)
    atomic_write_json(run_dir / CONFIG_FILE, {"config": cfg.to_dict(), "config_hash": cfg.config_hash(),
                                              "kind": "detection", "inputs": inputs})
    classes = dataset.classes
    seed_everything(cfg.seed)
    anchors, anchor_info = choose_anchors(cfg, splits.train)
    model, init = build_detector(cfg, len(classes), anchors)
    log.info("%s: %s split (seed %d) %d / %d / %d images, %s anchors (mean best IoU on the training boxes: default "
             "%.3f%s), backbone from %s", run_dir.name, cfg.dataset, cfg.split_seed, len(splits.train),
             len(splits.val), len(splits.test), cfg.anchors, anchor_info["default_mean_best_iou"],
             f", fitted {anchor_info['fitted_mean_best_iou']:.3f}" if "fitted_mean_best_iou" in anchor_info else "",
             init.source)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(splits.train) / cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total = cfg.epochs * steps_per_epoch
    warmup = min(cfg.warmup_iters, max(total - 1, 1))
    scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [
        torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1e-3, total_iters=warmup),
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total - warmup, 1))], milestones=[warmup])
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    history: list[dict] = []
    start_epoch, best, elapsed_before = 0, None, 0.0
    state = None
    if ckpt_path.exists():
        try:
            state = read_checkpoint(ckpt_path, cfg.config_hash())
        except DamagedCheckpoint as err:  # start over, keeping the damaged file for a look
            set_aside(ckpt_path, err, "detection")
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        history, best, start_epoch = state["history"], state["best"], state["epoch"] + 1
        elapsed_before = state["elapsed_s"]
        commits = list(dict.fromkeys(state["git_commits"] + commits))  # every segment's code, in order
        set_rng_state(state["rng"])
        log.info("resuming %s after epoch %d", run_dir.name, state["epoch"])
    workers = resolve_num_workers(cfg.num_workers)
    train_set = DetectionDataset(splits.train, detection_transforms(
        train=True, target_size=(cfg.max_size, cfg.max_size), scale_range=tuple(cfg.scale_range), rot90=cfg.rot90))
    val = _limit(splits.val, cfg.max_eval_images)
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, num_workers=workers,
                            collate_fn=_collate, drop_last=False,
                            generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "det-epoch", epoch)))
        sums: dict[str, float] = {}
        t0, n_images, n_steps = time.perf_counter(), 0, 0
        for step, (images, targets) in enumerate(loader):
            if step >= steps_per_epoch:
                break
            n_steps += 1
            images = [im.to(device) for im in images]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                losses = model(images, targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{run_dir}: loss is {loss.item()} at epoch {epoch} step {step} "
                                         f"({ {k: round(v.item(), 4) for k, v in losses.items()} }); lower lr")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.clip_grad_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            n_images += len(images)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            sums["loss"] = sums.get("loss", 0.0) + loss.item()
            if (step + 1) % LOG_EVERY == 0:  # an epoch is minutes on a CPU: say that it moves
                log.info("epoch %d step %d/%d: loss %.4f, %.2f images/s", epoch, step + 1, steps_per_epoch,
                         sums["loss"] / (step + 1), n_images / (time.perf_counter() - t0))
        train_s = time.perf_counter() - t0
        raw, _ = predict_raw(model, val, device, num_workers=workers)
        val_all = {f"nms_{t:g}": score(raw, val, classes, cfg, t) for t in cfg.nms_thresholds}
        val_metrics = val_all[f"nms_{cfg.nms_thresholds[0]:g}"]
        entry = {"epoch": epoch, "train": {k: round(v / max(n_steps, 1), 5) for k, v in sums.items()},
                 "train_images_per_s": round(n_images / max(train_s, 1e-9), 3), "train_s": round(train_s, 1),
                 "lr": scheduler.get_last_lr()[0], "val_map": round(val_metrics["map"], 5),
                 "val_map_50": round(val_metrics["map_50"], 5)}
        history.append(entry)
        log.info("epoch %d: loss %.4f, val mAP %.4f, mAP@0.5 %.4f, %.2f images/s", epoch, entry["train"]["loss"],
                 entry["val_map"], entry["val_map_50"], entry["train_images_per_s"])
        if best is None or val_metrics["map"] > best["val_map"]:
            best = {"epoch": epoch, "val_map": val_metrics["map"], "val_map_50": val_metrics["map_50"],
                    "val": val_all}
            save(run_dir / BEST_FILE, {"model": model.state_dict(), "epoch": epoch, "config_hash": cfg.config_hash(),
                                       "classes": list(classes)})
        save(ckpt_path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch,
                         "history": history, "best": best, "rng": rng_state(), "config_hash": cfg.config_hash(),
                         "elapsed_s": elapsed_before + time.time() - t_start, "git_commits": commits})

    model.load_state_dict(load(run_dir / BEST_FILE)["model"])
    test = _limit(splits.test, cfg.max_eval_images)
    raw, infer_ips = predict_raw(model, test, device, num_workers=0)
    test_metrics = {f"nms_{t:g}": score(raw, test, classes, cfg, t) for t in cfg.nms_thresholds}
    val_metrics = best["val"]  # scored when the epoch was selected
    record = {
        "schema_version": DETECTION_SCHEMA_VERSION, "kind": "detection", "config": cfg.to_dict(),
        "config_hash": cfg.config_hash(), "seed": cfg.seed, "git_commit": commits[-1], "git_commits": commits,
        "da_version": __version__,
        "classes": list(classes), "init": vars(init), "anchors": anchor_info,
        "split": {"seed": cfg.split_seed, "train": len(splits.train), "val": len(splits.val),
                  "test": len(splits.test), "train_boxes": int(sum(s.num_boxes for s in splits.train)),
                  "test_boxes": int(sum(s.num_boxes for s in test))},
        "history": history, "selected_epoch": best["epoch"], "selection": "val_map",
        "headline_nms": cfg.nms_thresholds[0], "val": val_metrics, "test": test_metrics,
        "wall_time_s": round(elapsed_before + time.time() - t_start, 1),
        "train_images_per_s": round(float(np.mean([h["train_images_per_s"] for h in history])), 3),
        "inference_images_per_s": round(infer_ips, 3), "peak_memory_mb": peak_memory_mb(device.type),
        "environment": environment(device.type), "launch": launch_info(),
        "inputs": inputs,  # checked before the run is reused
    }
    write_record(run_dir, record, kind="detection")
    h = test_metrics[f"nms_{cfg.nms_thresholds[0]:g}"]
    log.info("%s done: test mAP %.4f, mAP@0.5 %.4f (epoch %d)", run_dir.name, h["map"], h["map_50"], best["epoch"])
    return run_dir
