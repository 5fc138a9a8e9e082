"""Submit a study's workers as one submitit array (Slurm, local or debug), with da-sweep's profiles.

Each array task is a worker (:class:`da.hpo.worker.HpoWorker`) that claims trials until the budget is
spent, so N tasks run N trials at a time.  Submitting the same study again continues it: the journal
keeps the trials, a trial left by a dead worker is resumed, and only as many workers are submitted as
there is work for, less those of earlier submissions still queued or running.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from da.hpo.report import counts, trial_rows
from da.hpo.study import JOURNAL_FILE, LOGS_DIR, StudySpec, open_study, quiet_optuna, study_dir
from da.hpo.worker import HpoWorker
from da.launch.submit import Launcher, cluster_parameters, queued_job_ids, sbatch_script
from da.utils.io import atomic_write_json

SUBMITTED_FILE = "submitted.json"


def _live_workers(sdir: Path) -> list[str]:
    """Job ids of earlier submissions of this study still pending or running (Slurm only)."""
    path = sdir / SUBMITTED_FILE
    if not path.exists():
        return []
    try:
        jobs = json.loads(path.read_text()).get("jobs", [])
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is unreadable ({err}); delete it and submit again") from None
    queued = queued_job_ids()
    return [j for j in jobs if j in queued]


def submit_study(spec: StudySpec, out: str | os.PathLike, data_root: str = "", workers: int = 1,
                 cluster: str | None = None, profile: str | None = None, dry_run: bool = False,
                 wait: bool = False) -> dict[str, Any]:
    """Create or continue the study under ``out`` and submit up to ``workers`` array tasks; a summary back."""
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    cluster, params = cluster_parameters(cluster, profile, dry_run)
    quiet_optuna()
    out = Path(out).resolve()
    sdir = study_dir(out, spec.name)
    exists = (sdir / JOURNAL_FILE).exists()
    if exists or not dry_run:  # creates the study (trial 0 enqueued) or loads it, refusing another definition
        study = open_study(spec, out, create=not dry_run)
        c = counts(trial_rows(study, sdir), spec.n_trials)
    else:
        c = {"complete": 0, "running": 0, "interrupted": 0, "failed": 0, "waiting": int(spec.enqueue_default),
             "remaining": spec.n_trials}
    live = _live_workers(sdir) if cluster == "slurm" else []
    work = c["remaining"] + c["running"] + c["interrupted"]  # a running trial may need a worker to resume it
    n = max(0, min(workers, work) - len(live))
    folder = sdir / LOGS_DIR / "%j"
    launcher = Launcher(folder, cluster, params, name=f"da-hpo-{spec.name}")
    if launcher.gpus:
        n = min(n, len(launcher.gpus))  # one worker per GPU: more would only wait for a free one
    summary: dict[str, Any] = {"cluster": cluster, "study_dir": str(sdir), "new": not exists, **c,
                               "live_workers": live, "submit": n, "jobs": []}
    if dry_run:
        print(f"study {spec.name}: {'new' if not exists else 'continuing'} in {sdir}; objective {spec.objective} "
              f"(label-free), sampler {spec.sampler}, seed {spec.seed}, budget {spec.n_trials} trials")
        print(f"trials: {c['complete']} done, {c['running']} running, {c['interrupted']} interrupted, {c['failed']} "
              f"failed, {c['remaining']} remaining; {len(live)} worker(s) of earlier submissions still queued")
        print("space: " + "; ".join(p.describe() for p in spec.space.params))
        default = spec.base.replace(out=str(out))
        print(f"default configuration (trial 0{'' if spec.enqueue_default else ', not enqueued'}): "
              f"{default.method}, run directory {out}/stage2-{default.config_hash()}")
        print(f"would submit {n} worker(s) as one array job on cluster {cluster}; each runs trials until the "
              f"budget is spent")
        if cluster == "slurm" and n:
            print(sbatch_script(params, folder, n, name=f"da-hpo-{spec.name}"))
        return summary
    if n == 0:
        return summary
    data_root = str(data_root)
    jobs = launcher.map(HpoWorker(), [spec] * n, [str(out)] * n, [data_root] * n)
    previous = []
    if (sdir / SUBMITTED_FILE).exists():
        previous = json.loads((sdir / SUBMITTED_FILE).read_text()).get("jobs", [])
    atomic_write_json(sdir / SUBMITTED_FILE, {"jobs": previous + [j.job_id for j in jobs],
                                              "logs": str(sdir / LOGS_DIR)})
    summary["jobs"] = [j.job_id for j in jobs]
    summary["job_objects"] = jobs
    if wait or cluster == "debug":  # the debug executor runs a job only when its result is asked for
        for job in jobs:
            job.result()
    return summary
