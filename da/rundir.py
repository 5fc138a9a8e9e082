"""The run directory of every task (classification, detection, HPO trials): its name, the files in it, its
state as the launcher sees it and the check that it was made from the inputs given now, declared once for
the engines, the launcher, the archiver, the results loader and the tests.

``<out>/stage<S>-<config hash>/`` (detection: ``<out>/det-<config hash>/``) holds::

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

import json
import shutil
import tempfile
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


def archive_run(run_dir: Path, dest: Path, features: bool = False) -> str:
    """Copy a finished run's :data:`ARCHIVED_FILES` (and ``features.npz`` when ``features``) to
    ``dest/<run_dir.name>``; returns ``"copied"``, ``"same"`` (that record is archived already) or ``"kept"``:
    another record of the same configuration is archived there (a run trained again elsewhere, e.g. a stage-1
    model that committed stage-2 runs started from), which is never replaced, so that committed records do
    not change under what cites them. A new directory appears whole or not at all."""
    target = dest / run_dir.name
    if (target / RECORD_FILE).exists():
        if (target / RECORD_FILE).read_bytes() != (run_dir / RECORD_FILE).read_bytes():
            return "kept"
        if features and (run_dir / FEATURES_FILE).exists() and not (target / FEATURES_FILE).exists():
            shutil.copy2(run_dir / FEATURES_FILE, target / FEATURES_FILE)
        return "same"
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", dir=dest))
    try:
        for f in ARCHIVED_FILES + ((FEATURES_FILE,) if features and (run_dir / FEATURES_FILE).exists() else ()):
            shutil.copy2(run_dir / f, staging / f)
        if target.exists():  # a directory without a record (an interrupted copy of an older archiver)
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return "copied"


# ---------------------------------------------------------------------------------------------- state
SUBMISSION_STATES = ("done", "queued", "failed", "partial", "missing")


def submission_state(run_dir: Path, queued: set[str]) -> tuple[str, str | None, str | None]:
    """``(state, job id, log)`` of a run directory as a sweep sees it, in the order a state wins: ``done``
    (record and marker), ``queued`` (its job is pending or running), ``failed`` (``FAILED``; the log it
    names), ``partial`` (a checkpoint to resume), ``missing``.  Every state but done and queued needs a job."""
    sub = run_dir / SUBMITTED_FILE
    try:
        info = json.loads(sub.read_text()) if sub.exists() else {}
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{sub} is unreadable ({err}); delete it and submit again") from None
    job_id, log = info.get("job_id"), info.get("stderr")
    if (run_dir / DONE_FILE).exists() and (run_dir / RECORD_FILE).exists():
        return "done", job_id, log
    if job_id and job_id in queued:
        return "queued", job_id, log
    if (run_dir / FAILED_FILE).exists():
        text = (run_dir / FAILED_FILE).read_text().splitlines()
        return "failed", job_id, next((line[5:] for line in text if line.startswith("log: ")), log)
    if (run_dir / CHECKPOINT_FILE).exists():
        return "partial", job_id, log
    return "missing", job_id, log


# ---------------------------------------------------------------------------------------------- inputs
class StaleRunError(ValueError):
    """A run directory made from other inputs than the ones given now (same config hash)."""


def check_inputs(run_dir: Path, saved: dict | None, inputs: dict[str, str], what: dict[str, str]) -> None:
    """Refuse to reuse or resume ``run_dir`` when what it was made from (``saved``: name -> digest, from its
    config.json or record) differs from ``inputs`` now; ``what`` says in words what each name stands for.
    ``saved`` None: the run predates recorded inputs and cannot be checked (the caller says so)."""
    if saved is None:
        return
    changed = sorted(k for k in set(saved) | set(inputs) if saved.get(k) != inputs.get(k))
    if changed:
        raise StaleRunError(f"{run_dir} was made from other inputs than now ({'; '.join(what.get(k, k) for k in changed)} "
                            f"changed); its numbers do not describe the current ones. Delete it to run it again: "
                            f"rm -r {run_dir}")
