"""The run directory: its name and the files in it, declared once for the engine, the launcher, the
archiver, the results loader and the tests.

``<out>/stage<S>-<config hash>/`` holds::

    config.json      the full config, its hash, the stage and the initial weights (written first)
    manifest.csv     split, path, label of every image the run saw
    checkpoint.pt    the last finished epoch, with every RNG state (resume)
    best_model.pt    the model of the selected epoch
    epochs/          one model per epoch, kept only while a selection rule needs to look back
    features.npz     bottleneck features of source-val and target-test of the selected model
    tb/              TensorBoard logs (tb/hparams: the config and the headline metrics, for the HParams tab)
    log.txt          the run's log (appended to on resume)
    record.json      the run record (da.records)
    DONE             the done marker, written after the record
    submitted.json   the Slurm job that runs it (da.launch)
    FAILED           the last failure's message and log path (da.launch)
    LOCK             held by the one process that trains the run (an advisory lock; says who holds it)

``<out>/index.csv`` lists every run directory with its status and headline metric (da.runindex).
"""

from __future__ import annotations

from pathlib import Path

CONFIG_FILE = "config.json"
MANIFEST_FILE = "manifest.csv"
CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best_model.pt"
EPOCHS_DIR = "epochs"
FEATURES_FILE = "features.npz"
TENSORBOARD_DIR = "tb"
RECORD_FILE = "record.json"
DONE_FILE = "DONE"
SUBMITTED_FILE = "submitted.json"
FAILED_FILE = "FAILED"
LOCK_FILE = "LOCK"
LOG_FILE = "log.txt"
# what archive_runs.py copies into results/ (checkpoints and caches stay behind)
ARCHIVED_FILES = (RECORD_FILE, DONE_FILE, CONFIG_FILE)


def run_dir_for(cfg, stage: int) -> Path:
    """``<cfg.out>/stage<stage>-<cfg.config_hash()>``."""
    return Path(cfg.out) / f"stage{stage}-{cfg.config_hash()}"


def epoch_model_file(epoch: int) -> str:
    return f"{EPOCHS_DIR}/epoch-{epoch:04d}.pt"
