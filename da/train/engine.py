"""One training loop for both stages, in named parts: build the run (``setup.py``), resume it, train an
epoch (``epoch.py``), evaluate and score it, select and stop early, checkpoint, write the record.

After each epoch the model is evaluated on the source validation split and the target test split, and
(stage 2) every label-free validator of ``da.selection`` scores it from source validation and one pass
over the unlabelled target training split.  The selection rule (``--selection``, default source-val
accuracy) picks the epoch whose model is kept; early stopping follows the same rule.  The target-test
numbers of the selected epoch are the reported result; the best target-test epoch is kept apart as the
``oracle``.  Every epoch ends with an atomic checkpoint holding every state a resumed run needs to
continue bit-identically.  Each epoch starts from the model's pass over the unlabelled target training
split when the method relabels from it (SHOT, CBST) or the run estimates the target class prior
(``--prior``, ``label_shift.py``): both are recomputed from the checkpointed model after a resume.  With
``--weight-ema`` the model evaluated, scored, passed over the target and kept is an average of the trained
weights (``weight_average.py``); the trained model only trains.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Callable

import torch

from da import records
from da.config import RunConfig
from da.data.domains import CONTENT_FINGERPRINT
from da.data.splits import manifest_hash
from da.rundir import (BEST_FILE, CHECKPOINT_FILE, CONFIG_FILE, EPOCHS_DIR, FAILED_FILE, FEATURES_FILE, LOCK_FILE, LOG_FILE,
                       MANIFEST_FILE, TENSORBOARD_DIR, StaleRunError, check_inputs, epoch_model_file, run_dir_for)
from da.selection import RANK, EpochOutputs, best_epoch, score_epoch, validator_versions
from da.selection.drift import prediction_drift, source_predictions
from da.models.lora import merged_state_dict, remove_adapters
from da.train import checkpoint, label_shift
from da.train.adabn import adapt_batchnorm
from da.train.epoch import NonFiniteLossError, train_epoch
from da.train.evaluate import Predictions, export_features, predict
from da.train.seeding import seed_everything, set_deterministic
from da.train.setup import Run, build_run, load_splits, resolve_device
from da.train.state import RunState
from da.runindex import refresh_index
from da.utils.io import atomic_write_json, atomic_write_text, exclusive_lock, file_digest
from da.utils.runlog import file_only, run_log

log = logging.getLogger(__name__)

__all__ = ["train_stage", "run_dir_for", "NonFiniteLossError", "StaleRunError"]


def _summary(m: dict | None) -> dict | None:
    return None if m is None else {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}


def target_pass(run: Run):
    """The model's logits and features on the unlabelled target training split (no labels kept)."""
    return predict(run.evaluated, run.data.target_pass, run.data.start, run.device, run.autocast).unlabelled()


def evaluate_epoch(run: Run) -> tuple[Predictions, Predictions | None, dict, dict]:
    """Source-val and target-test predictions, and (stage 2) every validator's score and cost in seconds."""
    data = run.data
    src = predict(run.evaluated, data.source_eval, data.start, run.device, run.autocast)
    tgt = predict(run.evaluated, data.target_eval, data.start, run.device, run.autocast) if data.target_eval else None
    if data.target_pass is None:  # stage 1: source-val accuracy is the only rule
        return src, tgt, {"source_acc": src.metrics(run.classes)["accuracy"]}, {}
    t = time.perf_counter()
    target = target_pass(run)
    cost = {"target_pass": time.perf_counter() - t}
    scores, seconds = score_epoch(EpochOutputs(src.for_source(), target, run.reference), run.cfg)
    run.last_target_pass = target  # the next epoch's start hook sees the same model
    if run.cfg.prior:
        t = time.perf_counter()
        run.prior = label_shift.estimate(run.cfg, src.for_source(), target.logits)
        cost["prior"] = time.perf_counter() - t
    return src, tgt, scores, cost | seconds


def start_epoch(run: Run, epoch: int) -> None:
    """Before an epoch: the target pass of the current model (kept from the last evaluation, or computed
    after a resume), the prior estimate applied to the losses, and the method's start hook.  Before epoch
    ``adapt_from_epoch`` none of them: pseudo-labellers have no labels yet and the losses no prior."""
    if not run.needs_target_pass or epoch < run.cfg.adapt_from_epoch:
        return
    target = run.last_target_pass or target_pass(run)
    if run.cfg.prior:
        if run.prior is None:
            src = predict(run.evaluated, run.data.source_eval, run.data.start, run.device, run.autocast).for_source()
            run.prior = label_shift.estimate(run.cfg, src, target.logits)
        label_shift.apply(run, run.prior)
        target = dataclasses.replace(target, prior=run.prior.target_prior.float())
    if run.method.uses_target_pass:
        run.method.on_epoch_start(epoch, target)


def start_reference(run: Run, init_weights: str | None, label_of: dict[str, int]) -> list[int] | None:
    """Before the first stage-2 epoch: AdaBN's target statistics (method ``adabn``), then the start model's
    target pass (kept for the first epoch), and the source model's predicted class of each target-train image,
    what drift is measured from: the stage-1 model's classifier ``init_weights`` on the start features, its
    classes read through the class map (``label_of``: source class -> shared index).  None without a stage-1
    model (a one-stage run) or where its checkpoint names no classes."""
    if run.method.adapts_batchnorm:
        n = adapt_batchnorm(run.evaluated, run.data.target_pass, run.data.start, run.device, run.autocast)
        log.info("AdaBN: %d BatchNorm layers take the target's statistics", n)
    run.last_target_pass = target_pass(run)
    source = checkpoint.load(init_weights) if init_weights else {}
    state, classes = source.get("model", {}), source.get("classes")
    if classes is None or "head.classifier.weight" not in state or not label_of.keys() & set(classes):
        log.info("no source model with its classes to measure prediction drift from")
        return None
    return source_predictions(run.last_target_pass.features, state["head.classifier.weight"],
                              state["head.classifier.bias"], classes, label_of).tolist()


def select_and_stop(cfg: RunConfig, state: RunState) -> bool:
    """Update the selected and oracle epochs after an epoch; True when the newest epoch is selected."""
    scores = [e["scores"] for e in state.history]
    state.selected_epoch = best_epoch(scores, cfg.selection, cfg.rank_validators)
    newest = len(state.history)
    state.bad_epochs = newest - state.selected_epoch
    tgt = [m["target_test"]["accuracy"] if m["target_test"] else None for m in state.metrics]
    if tgt[-1] is not None and (state.oracle_epoch is None or tgt[-1] > tgt[state.oracle_epoch - 1]):
        state.oracle_epoch = newest
    if cfg.patience and state.bad_epochs >= cfg.patience:
        state.stopped_early = True
    return state.selected_epoch == newest


def _model_payload(run: Run, epoch: int, config_hash: str) -> dict:
    # LoRA adapters merged: the selected model is read as any other by export, prediction and stage 2
    return {"model": merged_state_dict(run.evaluated), "epoch": epoch, "classes": run.classes, "config_hash": config_hash}


def train_stage(cfg: RunConfig, stage: int, init_weights: str | None = None,
                on_epoch_end: Callable[[int], None] | None = None) -> Path:
    """Train one stage to completion (resuming from its checkpoint if there is one); return its record.

    ``stage`` 1 trains supervised on ``cfg.source`` with all its classes; 2 adapts ``cfg.source`` ->
    ``cfg.target`` on their shared classes, starting from ``init_weights`` (a stage-1 checkpoint) when
    given.  ``on_epoch_end(epoch)`` is called after each checkpoint (tests use it to interrupt a run).
    """
    cfg.validate()
    if stage == 1 and cfg.selection != "source_acc":
        cfg = cfg.replace(selection="source_acc")  # stage 1 has no target to score
    run_dir = run_dir_for(cfg, stage)
    t_start = time.perf_counter()
    seed_everything(cfg.seed)
    set_deterministic(cfg.deterministic)
    splits = load_splits(cfg, stage)  # the inputs are checked before anything is written
    inputs = run_inputs(cfg, splits, init_weights)
    if records.is_done(run_dir):
        return _reuse(run_dir, stage, inputs)

    def waiting(holder: str) -> None:
        log.warning("stage %d: %s is being trained by %s; waiting for it to finish", stage, run_dir, holder)

    # one writer per run directory: a twin launch waits here, then finds the run done and reuses it
    with exclusive_lock(run_dir / LOCK_FILE, on_wait=waiting):
        if records.is_done(run_dir):
            log.info("stage %d: %s finished while this process waited", stage, run_dir)
            return _reuse(run_dir, stage, inputs)
        with run_log(run_dir / LOG_FILE) as log_file:
            (run_dir / FAILED_FILE).unlink(missing_ok=True)  # this attempt replaces an earlier failure
            _log_start(cfg, stage, run_dir, splits, log_file)
            try:
                return _train(cfg, stage, run_dir, splits, init_weights, on_epoch_end, t_start, inputs)
            except BaseException as err:
                log.error("stage %d: %s stopped: %s: %s", stage, run_dir, type(err).__name__, err)
                if isinstance(err, Exception):  # a failure, not a kill: the index says "failed", not "started"
                    atomic_write_text(run_dir / FAILED_FILE, f"{type(err).__name__}: {err}\nlog: {run_dir / LOG_FILE}\n")
                raise
            finally:
                refresh_index(run_dir.parent)


def _log_start(cfg: RunConfig, stage: int, run_dir: Path, splits, log_file: logging.Handler) -> None:
    env = records.environment(resolve_device(cfg.device).type)
    log.info("stage %d: %s, config %s, code %s", stage, run_dir, cfg.config_hash(), records.git_commit())
    log.info("environment: python %s, torch %s, torchvision %s, timm %s, cuda %s, gpu %s, %d threads, "
             "deterministic %s", env["python"], env["torch"], env["torchvision"], env["timm"], env["cuda"],
             env["gpu"], env["torch_threads"], env["deterministic_algorithms"])
    for name, d in splits.data.items():
        log.info("data %s: %d images in %d classes, sizes %s (official release: %s images, %s px)", name,
                 d["images"], len(d["images_per_class"]), d["image_sizes"], d["official"]["images"],
                 d["official"]["image_size"])
        if d.get("differs_from_release"):  # the console had it once already, as scan's DatasetMismatchWarning
            file_only(log_file, log, logging.WARNING, "data %s is not the official release: %s", name,
                      "; ".join(d["differs_from_release"]))
    log.info("splits: %s", ", ".join(f"{k} {len(v)}" for k, v in splits.parts.items()))
    refresh_index(run_dir.parent)


def run_inputs(cfg: RunConfig, splits, init_weights: str | None) -> dict[str, str]:
    """What a run saw besides its config: the images, their labels under the class map and their file
    fingerprints, and the weights files it started from (by content)."""
    inputs = {"data": splits.fingerprint()}
    for name, path in (("weights", cfg.weights), ("init_weights", init_weights)):
        if path and Path(path).is_file():
            inputs[name] = file_digest(path)
    return inputs


INPUTS = {"data": "the images, their labels (class map) or their files", "weights": "the weights file",
          "init_weights": "the stage-1 model it starts from"}


def _check_inputs(run_dir: Path, saved: dict | None, inputs: dict[str, str]) -> None:
    if saved is None:  # written before runs recorded their inputs: nothing to compare
        log.warning("%s does not record its inputs; it cannot be checked against the current data", run_dir)
        return
    if not str(saved.get("data", CONTENT_FINGERPRINT)).startswith(CONTENT_FINGERPRINT):
        # an early record hashed file times: after a copy of the data it can only differ, so it is not compared
        log.warning("%s fingerprinted its data by file times, which a copy of the data does not keep; its data "
                    "cannot be checked against the current files", run_dir)
        saved = {k: v for k, v in saved.items() if k != "data"}
        inputs = {k: v for k, v in inputs.items() if k != "data"}
    check_inputs(run_dir, saved, inputs, INPUTS)


def _reuse(run_dir: Path, stage: int, inputs: dict[str, str]) -> Path:
    record = json.loads((run_dir / records.RECORD_FILE).read_text())
    _check_inputs(run_dir, record.get("inputs"), inputs)
    log.info("stage %d: reusing the finished run %s", stage, run_dir)
    return run_dir / records.RECORD_FILE


def _train(cfg: RunConfig, stage: int, run_dir: Path, splits, init_weights: str | None,
           on_epoch_end: Callable[[int], None] | None, t_start: float, inputs: dict[str, str]) -> Path:
    config_hash = cfg.config_hash()
    if (run_dir / CONFIG_FILE).exists() and (run_dir / CHECKPOINT_FILE).exists():  # resuming: same inputs?
        _check_inputs(run_dir, json.loads((run_dir / CONFIG_FILE).read_text()).get("inputs"), inputs)
    for stale in run_dir.rglob(".*.tmp"):  # left by a writer killed mid-write; this process is the only writer
        stale.unlink(missing_ok=True)
    atomic_write_json(run_dir / CONFIG_FILE, {"config": cfg.to_dict(), "config_hash": config_hash,
                                              "stage": stage, "init_weights": init_weights, "inputs": inputs})
    atomic_write_text(run_dir / MANIFEST_FILE, splits.manifest())
    ckpt_path = run_dir / CHECKPOINT_FILE
    ckpt = None
    if ckpt_path.exists():
        try:
            ckpt = checkpoint.read_checkpoint(ckpt_path, config_hash)
        except checkpoint.DamagedCheckpoint as err:  # start over, keeping the damaged file for a look
            checkpoint.set_aside(ckpt_path, err, f"stage {stage}")
    run = build_run(cfg, stage, splits, init_weights)
    keep_epoch_models = stage == 2 and cfg.selection == RANK  # a relative rule may go back to an earlier epoch
    state = RunState(git_commit=records.git_commit())
    if ckpt is not None:
        state = checkpoint.restore_training(ckpt, run, run_dir)
        state.resumed += 1
        log.info("stage %d: resuming %s after epoch %d", stage, run_dir, state.epoch)
    state.note_validator_versions(validator_versions())

    if run.data.target_pass is not None:  # stage 2
        if state.epoch == 0:
            label_of = splits.class_map.source_label() if splits.class_map is not None else {}
            state.reference_predictions = start_reference(run, init_weights, label_of)
        if state.reference_predictions is not None:
            run.reference = torch.tensor(state.reference_predictions)
    writer = _tensorboard(run_dir / TENSORBOARD_DIR)
    t_mark = t_start
    run.model.train()
    while state.epoch < cfg.epochs and not state.stopped_early:
        epoch = state.epoch
        start_epoch(run, epoch)
        result = train_epoch(run, epoch, str(ckpt_path) if ckpt_path.exists() else "(none yet)")
        state.train_time += result.seconds
        state.images += result.images
        if run.method.adapts_batchnorm:
            adapt_batchnorm(run.evaluated, run.data.target_pass, run.data.start, run.device, run.autocast)

        src, tgt, scores, cost = evaluate_epoch(run)
        src_m, tgt_m = src.metrics(run.classes), (tgt.metrics(run.classes) if tgt is not None else None)
        entry = {"epoch": epoch + 1, "lr": _head_lr(run.optimizer),
                 "train_s": round(result.seconds, 3), "loss": result.loss,
                 "source_val": _summary(src_m), "scores": scores,
                 # the confusion matrix of every epoch: harm and confusion tables at an epoch chosen after training
                 "target_test": None if tgt_m is None else {**_summary(tgt_m), "confusion": tgt_m["confusion"]}}
        if run.reference is not None:
            logits = run.last_target_pass.logits
            entry["drift"] = prediction_drift(run.reference, logits.argmax(1), logits.shape[1]).summary(run.classes)
        if cost:
            entry["validation_s"] = {k: round(v, 4) for k, v in cost.items()}
        state.history.append(entry)
        state.metrics.append({"source_val": src_m, "target_test": tgt_m})
        if run.prior is not None and tgt is not None:
            entry["prior"], state.metrics[-1]["target_test_prior_corrected"] = label_shift.report(run, run.prior, tgt)
        newest_selected = select_and_stop(cfg, state)
        if keep_epoch_models:
            checkpoint.save(run_dir / epoch_model_file(epoch + 1), _model_payload(run, epoch + 1, config_hash))
        elif newest_selected:
            checkpoint.save(run_dir / BEST_FILE, _model_payload(run, epoch + 1, config_hash))
        state.epoch = epoch + 1
        now = time.perf_counter()
        state.wall_time += now - t_mark
        t_mark = now
        _log_epoch(writer, entry)
        log.info("stage %d epoch %d/%d: %s source-val acc %.4f%s", stage, epoch + 1, cfg.epochs,
                 " ".join(f"{k}={v:.4f}" for k, v in entry["loss"].items()), src_m["accuracy"],
                 f", target-test acc {tgt_m['accuracy']:.4f}" if tgt_m else "")
        checkpoint.save_training(ckpt_path, run, state, config_hash)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1)
    if writer is not None:
        writer.close()
    if keep_epoch_models:
        shutil.copyfile(run_dir / epoch_model_file(state.selected_epoch), run_dir / BEST_FILE)
        shutil.rmtree(run_dir / EPOCHS_DIR)
    return _write_record(run, state, run_dir, init_weights, splits, t_mark, inputs)


def _head_lr(optimizer) -> float:
    """The head's current learning rate (its last group; a method's own groups come after it)."""
    return next(g["lr"] for g in reversed(optimizer.param_groups) if g["name"].startswith("head"))


def _write_record(run: Run, state: RunState, run_dir: Path, init_weights: str | None, splits,
                  t_mark: float, inputs: dict[str, str]) -> Path:
    cfg, data = run.cfg, run.data
    pad = None
    if data.target_eval is not None:
        remove_adapters(run.model)  # the saved model has them merged
        run.model.load_state_dict(checkpoint.load(run_dir / BEST_FILE)["model"])
        src = predict(run.model, data.source_eval, data.start, run.device, run.autocast)
        tgt = predict(run.model, data.target_eval, data.start, run.device, run.autocast)
        pad = export_features(src, tgt, run_dir)
    selected = state.selected()
    validation_s = [sum(e.get("validation_s", {}).values()) for e in state.history]
    record = {
        "schema_version": records.SCHEMA_VERSION,
        "config": cfg.to_dict(),
        "config_hash": cfg.config_hash(),
        "seed": cfg.seed,
        "git_commit": state.git_commit,  # the code the run started with
        "stage": run.stage,
        "classes": run.classes,
        "init_weights": init_weights,
        "epochs": state.history,
        "selected_epoch": state.selected_epoch,
        "selection": cfg.selection,  # a validator of da.selection: no target labels
        "validator_versions": state.validator_versions,  # what the scores of "epochs" mean (tables check them)
        "source_val": selected["source_val"],
        "target_test": selected["target_test"],
        # --prior: the selected epoch's estimate of the target class prior and its corrected predictions
        "prior": (None if not cfg.prior else state.history[state.selected_epoch - 1].get("prior")),
        "target_test_prior_corrected": selected.get("target_test_prior_corrected"),
        "oracle": state.oracle(),  # best target-test epoch: uses target labels, never a result to report
        "stopped_early": state.stopped_early,
        "started_at": state.started_at,  # unix time of the first start (before any resume)
        "finished_at": time.time(),
        "wall_time_s": round(state.wall_time + time.perf_counter() - t_mark, 3),
        "data_time_s": round(run.data_seconds, 3),
        "train_time_s": round(state.train_time, 3),
        "validation_time_s": round(sum(validation_s), 3),
        "images_per_s": round(state.images / max(state.train_time, 1e-9), 2),
        "manifest_sha256": manifest_hash(splits.manifest()),
        "inputs": inputs,  # checked before the run is reused
        "split_sizes": {k: len(v) for k, v in splits.parts.items()},
        "skipped_files": {k: len(v) for k, v in splits.skipped.items()},
        "data": splits.data,  # per dataset: images per class, image sizes, the official release's figures
        "cache_hits": data.cache_hits,
        "prefix_stages_cached": data.start,
        "parameters": run.parameters,  # trainable at the start (gradual unfreezing adds more), LoRA's, total
        "resumed": state.resumed,
        "features_file": FEATURES_FILE if pad is not None else None,
        "proxy_a_distance": pad,  # source-val vs target-test bottleneck features of the selected model
        "launch": records.launch_info(),
        "device": str(run.device),
        # the process's peaks when the record is written (a stage-1 run in the same process before counts)
        "peak_memory_mb": records.peak_memory_mb(run.device.type),
        "torch_threads": torch.get_num_threads(),  # the summation order, hence the last digits, depend on it
        "torch": torch.__version__,
        "environment": records.environment(run.device.type),
    }
    path = records.write_record(run_dir, record)
    _log_hparams(run_dir, record)
    log.info("%s; record: %s", records.summary(record), path)
    return path


def _tensorboard(logdir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but a broken install must not stop training
        log.warning("tensorboard is not importable: no TensorBoard logs in %s", logdir)
        return None
    return SummaryWriter(str(logdir))


def _log_hparams(run_dir: Path, record: dict) -> None:
    """The run's hashed config next to its headline metrics (TensorBoard's HParams tab compares sweep runs)."""
    from da.config import RunConfig

    writer = _tensorboard(run_dir / TENSORBOARD_DIR / "hparams")
    if writer is None:
        return
    cfg = RunConfig.from_record(record["config"])
    hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in cfg.hashed_dict().items()}
    hparams.update(stage=record["stage"], seed=record["seed"])
    metrics = {f"hparam/{split}_accuracy": record[split]["accuracy"]
               for split in ("target_test", "source_val") if record.get(split)}
    metrics["hparam/selected_epoch"] = record["selected_epoch"]
    writer.add_hparams(hparams, metrics, run_name=".")
    writer.close()


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
    for name, value in entry.get("scores", {}).items():
        writer.add_scalar(f"validator/{name}", value, step)
    writer.flush()
