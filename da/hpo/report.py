"""What a study holds, read from its journal: the trials, their label-free objective, and --status.

Nothing here reads a target label: the objective is the validators' score of each trial's selected
epoch.  The target accuracies (and the oracle) are added by the study table, ``da.results.study``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from da.hpo.study import (TrialLock, load_study_dir, quiet_optuna, rank_average, study_dir, study_lock)
from da.selection import RANK


def trial_rows(study, sdir: Path, probe_locks: bool = True) -> list[dict[str, Any]]:
    """One dict per trial: number, state (complete, failed, running, interrupted: RUNNING but no live worker
    holds it; waiting: enqueued), whether it is the default configuration, params, its objective (for rank:
    the rank-average over all complete trials now), and where its run is."""
    from optuna.trial import TrialState

    definition = study.user_attrs.get("definition", {})
    objective = definition.get("objective")
    trials = study.get_trials(deepcopy=False)
    alive: dict[int, bool] = {}
    if probe_locks and any(t.state == TrialState.RUNNING for t in trials):
        with study_lock(sdir):  # so that no worker mistakes this probe for a live owner
            for t in trials:
                if t.state == TrialState.RUNNING:
                    lock = TrialLock(sdir, t.number)
                    alive[t.number] = not lock.try_acquire()
                    lock.release()
    state_names = {TrialState.COMPLETE: "complete", TrialState.FAIL: "failed", TrialState.WAITING: "waiting",
                   TrialState.PRUNED: "pruned"}
    rows = []
    for t in trials:
        state = state_names.get(t.state, "running")
        if t.state == TrialState.RUNNING and not alive.get(t.number, True):
            state = "interrupted"
        rows.append({"number": t.number, "state": state, "default": bool(t.user_attrs.get("default")),
                     "params": dict(t.params) if t.params else dict(t.system_attrs.get("fixed_params", {})),
                     "value": t.value, "objective": t.value, "scores": t.user_attrs.get("scores"),
                     "selected_epoch": t.user_attrs.get("selected_epoch"), "run_dir": t.user_attrs.get("run_dir"),
                     "record": t.user_attrs.get("record"), "attempts": t.user_attrs.get("attempts", 0),
                     "error": t.user_attrs.get("error"), "worker": t.user_attrs.get("worker")})
    complete = [r for r in rows if r["state"] == "complete"]
    if objective == RANK and complete:
        ranks = rank_average([r["scores"] for r in complete], definition["rank_validators"])
        for r, value in zip(complete, ranks):
            r["objective"] = value
    return rows


def best_row(rows: list[dict[str, Any]], key: str = "objective") -> dict[str, Any] | None:
    """The complete trial with the highest ``key``; the earliest among equals (a NaN never wins)."""
    complete = [r for r in rows if r["state"] == "complete" and r.get(key) is not None
                and not math.isnan(r[key])]
    return max(complete, key=lambda r: (r[key], -r["number"])) if complete else None


def counts(rows: list[dict[str, Any]], n_trials: int) -> dict[str, int]:
    out = {s: sum(r["state"] == s for r in rows) for s in ("complete", "running", "interrupted", "failed", "waiting")}
    used = out["complete"] + out["failed"] + out["running"] + out["interrupted"] + sum(r["state"] == "pruned" for r in rows)
    out["remaining"] = max(0, n_trials - used)
    return out


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def status_text(name_or_dir: str | os.PathLike, out: str | os.PathLike | None = None,
                n_trials: int | None = None) -> str:
    """--status: the counts, the best trial so far by the label-free objective with its parameters, and one
    line per trial (failed ones with their error)."""
    quiet_optuna()
    sdir = study_dir(out, str(name_or_dir)) if out is not None else Path(name_or_dir)
    study = load_study_dir(sdir)
    definition = study.user_attrs.get("definition", {})
    n_trials = n_trials or int(study.user_attrs.get("n_trials", 0))
    rows = trial_rows(study, sdir)
    c = counts(rows, n_trials)
    objective = definition.get("objective")
    if objective == RANK:
        objective = f"rank (rank-average of {', '.join(definition.get('rank_validators', []))} over the trials)"
    lines = [f"study {study.study_name} ({sdir}): objective {objective} (label-free, higher is better), "
             f"sampler {definition.get('sampler')}, seed {definition.get('seed')}, budget {n_trials} trials",
             f"trials: {c['complete']} done, {c['running']} running, {c['interrupted']} interrupted (resumed by the "
             f"next worker), {c['failed']} failed, {c['remaining']} remaining"
             + (f", {c['waiting']} enqueued" if c["waiting"] else "")]
    best = best_row(rows)
    if best is None:
        lines.append("best so far: none (no trial has finished)")
    else:
        lines.append(f"best so far: trial {best['number']}{' (the default configuration)' if best['default'] else ''}"
                     f", {definition.get('objective')} = {best['objective']:.6g}: {_params_text(best['params'])}")
    lines.append(f"{'trial':<6}{'state':<12}{'objective':>12}  params / run directory / error")
    for r in rows:
        value = "" if r["objective"] is None else f"{r['objective']:.6g}"
        extra = f"  {r['run_dir']}" if r["run_dir"] else ""
        if r["state"] == "failed" and r["error"]:
            extra += f"  error: {r['error'].splitlines()[0][:200]}"
        if r["attempts"] and r["attempts"] > 1:
            extra += f"  (attempt {r['attempts']})"
        tag = " *" if r["default"] else ""
        lines.append(f"{r['number']:<6}{r['state'] + tag:<12}{value:>12}  {_params_text(r['params'])}{extra}")
    lines.append("* the default configuration (the base config)")
    return "\n".join(lines)
