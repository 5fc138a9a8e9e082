"""One worker of a study: claim a trial, run it through the ordinary run path, report its label-free score;
again, until the budget is spent.

A worker first looks for a trial left RUNNING by a dead or preempted worker (its trial lock is free) and
runs that one again: its parameters are in the journal, so its config, hence its hashed run directory,
is the same, and the run resumes from its checkpoint (a finished run is reused).  Otherwise it asks for a
new trial, unless the trials finished, failed or running already make the budget.  A run that raises is
told as FAIL with the error in the trial's user attributes; a worker stops after ``max_failures`` failures
in a row, since a broken setup would otherwise spend the whole budget on failures.  A signal that ends
the process (Slurm preemption, the time limit: ``SystemExit`` from submitit) leaves the trial RUNNING for
the next worker, or for this one once submitit has requeued it.
"""

from __future__ import annotations

import logging
import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import submitit

from da.config import RunConfig
from da.hpo.study import (StudySpec, TrialLock, make_sampler, objective_of, open_study, rank_average,
                          selected_scores, study_dir, study_lock, worker_name)
from da.rundir import FAILED_FILE, run_dir_for
from da.selection import RANK
from da.utils.io import atomic_write_text

log = logging.getLogger(__name__)

RunFn = Callable[[RunConfig], "str | os.PathLike"]


@dataclass
class Claim:
    trial: Any  # optuna.trial.Trial
    lock: TrialLock
    params: dict[str, Any]
    resumed: bool


def claim_trial(study, spec: StudySpec, sdir: Path) -> Claim | None:
    """The next trial for this worker, locked: an abandoned RUNNING trial first, else a new one while the
    budget allows; None when there is nothing left to do."""
    from optuna.trial import Trial, TrialState

    counted = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED, TrialState.RUNNING)
    with study_lock(sdir):
        trials = study.get_trials(deepcopy=False)
        for t in trials:
            if t.state != TrialState.RUNNING:
                continue
            lock = TrialLock(sdir, t.number)
            if not lock.try_acquire():
                continue  # its worker is alive
            try:
                # the parameters it already has come back as they were; any a killed worker had not yet drawn
                # are drawn now, by the sampler that trial would have had
                study.sampler = make_sampler(spec, t.number)
                trial = Trial(study, t._trial_id)
                params = spec.space.sample(trial)
                trial.set_user_attr("attempts", int(t.user_attrs.get("attempts", 1)) + 1)
                trial.set_user_attr("worker", worker_name())
            except BaseException:
                lock.release()
                raise
            return Claim(trial, lock, params, resumed=True)
        if sum(t.state in counted for t in trials) >= spec.n_trials:
            return None
        study.sampler = make_sampler(spec, len(trials))
        trial = study.ask()  # an enqueued trial (the default configuration) first
        lock = TrialLock(sdir, trial.number)
        if not lock.try_acquire():  # only a process outside da-hpo could hold the lock of a brand-new trial
            raise RuntimeError(f"{lock.path} of new trial {trial.number} is held by another process; is something "
                               f"other than da-hpo using {sdir}?")
        try:
            params = spec.space.sample(trial)
            trial.set_user_attr("attempts", 1)
            trial.set_user_attr("worker", worker_name())
        except BaseException:
            lock.release()
            raise
        return Claim(trial, lock, params, resumed=False)


def _value(study, spec: StudySpec, scores: dict[str, float]) -> float:
    """What the sampler is told: the objective's score, or for ``rank`` the trial's rank-average among the
    trials finished so far (the table and --status rank over all trials at report time)."""
    if spec.objective != RANK:
        return objective_of(scores, spec.objective)
    from optuna.trial import TrialState

    rows = [t.user_attrs["scores"] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return rank_average(rows + [scores], spec.rank_validators)[-1]


def run_claimed(study, spec: StudySpec, claim: Claim, overrides: dict[str, Any], run_fn: RunFn) -> bool:
    """Run one claimed trial and tell the study how it went; True when it completed."""
    from optuna.trial import TrialState

    from da.records import load_record

    trial, number = claim.trial, claim.trial.number
    run_dir = None
    try:
        cfg = spec.config_for(claim.params, **overrides)
        run_dir = run_dir_for(cfg, 2)
        trial.set_user_attr("config_hash", cfg.config_hash())
        trial.set_user_attr("run_dir", run_dir.name)
        log.info("trial %d (%s): %s -> %s", number, "resumed" if claim.resumed else "new",
                 ", ".join(f"{k}={v!r}" for k, v in claim.params.items()), run_dir)
        (run_dir / FAILED_FILE).unlink(missing_ok=True)
        record_path = Path(run_fn(cfg))
        epoch, scores = selected_scores(load_record(record_path))
        value = _value(study, spec, scores)
    except Exception as err:  # the run failed (not a preemption: SystemExit and signals pass through)
        message = f"{type(err).__name__}: {err}"
        log.error("trial %d failed: %s", number, message)
        trial.set_user_attr("error", message[:2000])
        trial.set_user_attr("traceback", "".join(traceback.format_exc(limit=-4))[-4000:])
        if run_dir is not None and run_dir.is_dir():  # runs/index.csv and da-sweep --status show it too
            atomic_write_text(run_dir / FAILED_FILE, f"{message}\nstudy {spec.name} trial {number}\n")
        study.tell(number, state=TrialState.FAIL)
        return False
    trial.set_user_attr("record", str(record_path))
    trial.set_user_attr("selected_epoch", epoch)
    trial.set_user_attr("scores", scores)
    study.tell(number, value)
    log.info("trial %d: %s = %.6g at epoch %d", number, spec.objective, value, epoch)
    return True


def run_worker(spec: StudySpec, out: str | os.PathLike, data_root: str = "", run_fn: RunFn | None = None,
               max_trials: int | None = None, max_failures: int = 3) -> list[int]:
    """Claim and run trials of ``spec`` (runs under ``out``) until the budget is spent, ``max_trials`` were
    handled here, or ``max_failures`` failed in a row.  ``run_fn(cfg) -> record path`` is the ordinary
    :func:`da.train.run_experiment` unless a test injects another.  Returns the trial numbers handled."""
    if run_fn is None:
        from da.train import run_experiment as run_fn
    overrides: dict[str, Any] = {"out": str(out), "progress": False}
    if data_root:
        overrides["data_root"] = str(data_root)
    study = open_study(spec, out)
    sdir = study_dir(out, spec.name)
    handled: list[int] = []
    failures = 0
    while max_trials is None or len(handled) < max_trials:
        claim = claim_trial(study, spec, sdir)
        if claim is None:
            log.info("study %s: budget of %d trials spent; worker done", spec.name, spec.n_trials)
            break
        try:
            ok = run_claimed(study, spec, claim, overrides, run_fn)
        finally:
            claim.lock.release()
        handled.append(claim.trial.number)
        failures = 0 if ok else failures + 1
        if failures >= max_failures:
            log.error("study %s: %d trials failed in a row; this worker stops (see da-hpo --status for the "
                      "errors)", spec.name, failures)
            break
    return handled


class HpoWorker(submitit.helpers.Checkpointable):
    """The array task: one worker looping over trials.  On preemption or at the time limit submitit requeues
    it with the same arguments; the trial it was running is then found abandoned and resumed."""

    def __call__(self, spec: StudySpec, out: str, data_root: str) -> list[int]:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return run_worker(spec, out, data_root)

    def checkpoint(self, spec: StudySpec, out: str, data_root: str) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(HpoWorker(), spec, out, data_root)
