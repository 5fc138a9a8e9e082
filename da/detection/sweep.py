"""Detection sweeps: the classification sweep format, loader and expansion (``da.launch.sweep``) with
``DetectionConfig`` runs, submitted as one Slurm array job with submitit.

A sweep file (shipped ones in ``da/detection/sweeps/``) has ``base``, ``grid``, ``variants`` (each may list its
own ``seeds``) and ``seeds``, as a classification sweep.  Submission goes by each run directory's state
(``da.rundir.submission_state``, as for classification): done and queued runs are skipped, failed, partial
and missing ones submitted, so the same command submits only what is missing; a preempted or timed-out job is
requeued by submitit and resumes from its run directory's checkpoint.  The cluster profiles are
classification's (``da/launch/profiles``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import submitit

from da.detection.config import DetectionConfig
from da.launch.submit import Launcher, cluster_parameters, guarded, queued_job_ids, record_submission, sbatch_script
from da.launch.sweep import Sweep, load_sweep
from da.rundir import SUBMISSION_STATES, submission_state

SWEEPS_DIR = Path(__file__).parent / "sweeps"


def load_detection_sweep(name: str | os.PathLike) -> Sweep:
    """A detection sweep by shipped name or path; errors name the file and the field."""
    return load_sweep(name, SWEEPS_DIR, "detection sweep", DetectionConfig)


class DetectionJob(submitit.helpers.Checkpointable):
    """The job callable: one detection run, resumable from its run directory alone."""

    def __call__(self, config: dict[str, Any]) -> str:
        import logging

        from da.detection.engine import run_detection

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        cfg = DetectionConfig.from_dict(config)
        return str(guarded(cfg.run_dir(), lambda: run_detection(cfg)))

    def checkpoint(self, config: dict[str, Any]) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(DetectionJob(), config)


def submit_detection_sweep(sweep: Sweep, cluster: str | None = None, profile: str | None = None,
                           dry_run: bool = False, **overrides: Any) -> dict[str, Any]:
    """Submit the runs of ``sweep`` that are neither done nor queued, as one array job."""
    cluster, params = cluster_parameters(cluster, profile, dry_run)
    configs = sweep.configs(**overrides)
    queued = queued_job_ids() if cluster == "slurm" else set()
    states = [submission_state(c.run_dir(), queued) for c in configs]
    todo = [c for c, (s, _, _) in zip(configs, states) if s not in ("done", "queued")]
    summary = {"cluster": cluster, "runs": len(configs), **{s: sum(t[0] == s for t in states) for s in SUBMISSION_STATES},
               "submit": len(todo), "jobs": []}
    for c, (s, _, log) in zip(configs, states):
        print(f"{s:8s} {c.run_dir()}" + (f"  log: {log}" if s == "failed" and log else ""))
    for c in todo if not dry_run else []:
        try:
            c.check_weights()
        except ValueError as err:
            raise ValueError(f"detection sweep {sweep.name}: {err}; nothing was submitted") from None
    out = Path(overrides.get("out", DetectionConfig().out))
    folder = out / "logs" / sweep.name / "%j"
    if dry_run or not todo:
        print(f"{'would submit' if dry_run else 'nothing to submit:'} {len(todo)} of {len(configs)} runs")
        if dry_run and todo and cluster == "slurm":
            print(sbatch_script(params, folder, len(todo), name=f"da-det-{sweep.name}"))
        return summary
    jobs = Launcher(folder, cluster, params, name=f"da-det-{sweep.name}").map(DetectionJob(), [c.to_dict() for c in todo])
    for c, job in zip(todo, jobs):
        c.run_dir().mkdir(parents=True, exist_ok=True)
        record_submission(c.run_dir(), job, c.config_hash())
    summary["jobs"] = [j.job_id for j in jobs]
    summary["job_objects"] = jobs
    print(f"submitted {len(jobs)} runs on {cluster}: {jobs[0].job_id.split('_')[0]}")
    return summary
