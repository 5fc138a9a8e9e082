"""Submit a sweep through submitit: one array per stage, stage 2 waiting on stage 1 through ``afterok``.

- Idempotent: a run with a done marker is skipped, a run whose job is still queued or running is not
  submitted twice, and a run with a checkpoint but no marker resumes from it.
- Preemption and time limits: ``RunJob`` is ``submitit.helpers.Checkpointable``; its ``checkpoint()``
  resubmits the same config, and the run finds its own checkpoint from its run directory.
- Each run directory gets ``submitted.json`` (job id, array index, log paths); a failure writes
  ``FAILED`` there with the traceback's last line and the log path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import submitit

from da.config import RunConfig
from da.launch.cluster import choose_cluster
from da.launch.local import LOCAL_TIMEOUT_MIN, check_single_process, local_gpus, map_one_per_gpu
from da.launch.sweep import Sweep, named_yaml
from da.rundir import FAILED_FILE, SUBMITTED_FILE, run_dir_for, submission_state
from da.runindex import update_index
from da.utils.io import atomic_write_json, atomic_write_text
from da.utils.safeload import load_file, plain_line

# Shipped with the package (setup.cfg package_data), so that names work in any install, not only a checkout.
PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
GENERIC_KEYS = {"timeout_min", "mem_gb", "cpus_per_task", "gpus_per_node", "nodes", "tasks_per_node"}
SLURM_KEYS = {"partition", "account", "constraint", "qos", "exclude", "setup", "array_parallelism",
              "signal_delay_s", "additional_parameters", "gres", "comment"}


def job_payload(cfg: RunConfig) -> dict[str, Any]:
    """What a job receives: every field of the config, the declared method and validator settings included
    (``dataclasses.asdict`` would give the core fields only, and the job would run other settings)."""
    return cfg.to_dict()


def guarded(run_dir: Path, work: Callable[[], Any]) -> Any:
    """A job's work on one run directory, for every task: an earlier ``FAILED`` goes when the job starts; a
    failure writes ``FAILED`` (the message, the job's log, the traceback's end) and shows in the index at
    once, then propagates so that Slurm marks the job failed."""
    (run_dir / FAILED_FILE).unlink(missing_ok=True)
    try:
        return work()
    except Exception as err:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / FAILED_FILE, f"{type(err).__name__}: {err}\nlog: {_job_log()}\n"
                                                 + "".join(traceback.format_exc(limit=-3)))
        try:
            update_index(run_dir.parent)
        except OSError:
            pass
        raise


class RunJob(submitit.helpers.Checkpointable):
    """The job callable: run one stage of one config; resumable from the run directory alone."""

    def __call__(self, config: dict[str, Any], stage: int) -> str:
        import logging

        from da.train import run_experiment, train_stage

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        cfg = RunConfig.from_dict(config)
        return str(guarded(run_dir_for(cfg, stage),
                           lambda: train_stage(cfg, stage=1) if stage == 1 else run_experiment(cfg)))

    def checkpoint(self, config: dict[str, Any], stage: int) -> submitit.helpers.DelayedSubmission:
        # Only the config travels: the state is the run directory's checkpoint, found again at start-up.
        return submitit.helpers.DelayedSubmission(RunJob(), config, stage)


def _job_log() -> str:
    try:
        return str(submitit.JobEnvironment().paths.stderr)
    except RuntimeError:  # not inside a submitit job
        return "(not a submitit job)"


# ---------------------------------------------------------------------------------------------- profiles
def load_profile(name: str | None) -> dict[str, Any]:
    """A Slurm profile by name (shipped: ``da/launch/profiles/<name>.yaml``) or by path, checked."""
    if not name:
        return {}
    path = named_yaml(name, PROFILES_DIR, "profile")
    data = load_file(path, "profile", yaml_only=True) or {}
    if not isinstance(data, dict):
        raise ValueError(f"profile {path}: expected a mapping of Slurm settings")
    unknown = sorted(set(data) - GENERIC_KEYS - SLURM_KEYS)
    if unknown:
        raise ValueError(f"profile {path}: unknown key(s) {', '.join(unknown)}; valid: "
                         f"{', '.join(sorted(GENERIC_KEYS | SLURM_KEYS))}")
    # every value lands in the sbatch script: a newline would start a shell line of its own there
    for key, value in data.items():
        values = value if key == "setup" and isinstance(value, list) else [value]
        if key == "setup" and not isinstance(value, list):
            raise ValueError(f"profile {path}: setup must be a list of shell lines, one line each")
        for v in values:
            if isinstance(v, dict):
                v = " ".join(f"{k}={x}" for k, x in v.items())
            plain_line(v, f"profile {path}: {key}")
    check_single_process(data, path)
    return data


def executor_parameters(profile: dict[str, Any], cluster: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, value in profile.items():
        if key in GENERIC_KEYS:
            params[key] = value
        elif cluster == "slurm":
            params[f"slurm_{key}"] = value
    return params


def max_array_size() -> int:
    """The cluster's MaxArraySize (array indices must stay below it); Slurm's default when unknown."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 1001
    for line in out.splitlines():
        if line.strip().startswith("MaxArraySize"):
            return int(line.split("=")[1].strip())
    return 1001


def queued_job_ids() -> set[str]:
    """Ids of this user's pending or running jobs, array tasks as ``A_i`` (empty without squeue)."""
    if not shutil.which("squeue"):
        return set()
    # only jobs that will still run: a cancelled job lingers a moment in squeue as CG (completing)
    out = subprocess.run(["squeue", "-h", "-r", "-u", os.environ.get("USER", "root"), "-t", "PD,CF,R,RQ,RS,S",
                          "-o", "%i"],
                         capture_output=True, text=True, timeout=30).stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


# ---------------------------------------------------------------------------------------------- planning
@dataclass
class PlannedRun:
    cfg: RunConfig
    stage: int
    run_dir: Path
    state: str  # done | queued | failed | partial | missing
    job_id: str | None = None
    log: str | None = None

    @property
    def needs_submission(self) -> bool:
        return self.state in ("missing", "partial", "failed")


def plan(sweep: Sweep, **overrides: Any) -> list[PlannedRun]:
    queued = queued_job_ids()
    runs = []
    for cfg in sweep.stage1_configs(**overrides):
        d = run_dir_for(cfg, 1)
        runs.append(PlannedRun(cfg, 1, d, *submission_state(d, queued)))
    for cfg in sweep.configs(**overrides):
        d = run_dir_for(cfg, 2)
        runs.append(PlannedRun(cfg, 2, d, *submission_state(d, queued)))
    return runs


def status(sweep: Sweep, **overrides: Any) -> str:
    """A table of every run of the sweep: stage, state, run directory, and the log of each failure."""
    runs = plan(sweep, **overrides)
    lines = [f"{'stage':<6}{'state':<9}{'method':<14}{'cls':<7}{'stages':<7}{'seed':<5}run directory / log"]
    for r in runs:
        extra = f"  log: {r.log}" if r.state == "failed" else ""
        lines.append(f"{r.stage:<6}{r.state:<9}{r.cfg.method:<14}{r.cfg.cls_loss:<7}{r.cfg.stages:<7}{r.cfg.seed:<5}"
                     f"{r.run_dir}{extra}")
    counts = {s: sum(r.state == s for r in runs) for s in ("done", "queued", "partial", "failed", "missing")}
    lines.append("total: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- submission
def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def record_submission(run_dir: Path, job: submitit.Job, config_hash: str, **extra: Any) -> None:
    """``submitted.json``: the job that runs ``run_dir`` and its logs (every task's launcher writes it)."""
    atomic_write_json(run_dir / SUBMITTED_FILE, {
        "job_id": job.job_id, "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr),
        "config_hash": config_hash, **extra})


def sbatch_script(params: dict[str, Any], folder: Path, n_tasks: int, name: str = "da") -> str:
    """The whole sbatch script an array of ``n_tasks`` would be submitted with (for --dry-run): its #SBATCH
    lines, the profile's setup lines and the command.  The project's one use of a private submitit function
    (submitit has no public way to render a script without submitting it); tests/test_sweep.py pins what it
    writes, so a submitit release that changes it fails there first."""
    from submitit.slurm.slurm import _make_sbatch_string

    slurm = {k[len("slurm_"):]: v for k, v in params.items() if k.startswith("slurm_")}
    eq = {"timeout_min": "time", "mem_gb": "mem", "gpus_per_node": "gpus_per_node", "cpus_per_task": "cpus_per_task",
          "nodes": "nodes", "tasks_per_node": "ntasks_per_node"}
    for k, v in params.items():
        if k in eq:
            slurm[eq[k]] = f"{v}GB" if k == "mem_gb" else v
    text = _make_sbatch_string(command="python -u -m submitit.core._submit <folder>", folder=folder,
                               job_name=name, map_count=n_tasks, **slurm)
    return text


def cluster_parameters(cluster: str | None, profile: str | None,
                       dry_run: bool = False) -> tuple[str, dict[str, Any]]:
    """The cluster to use (da.launch.cluster decides) and its executor parameters from ``profile``, for sweeps
    and studies; the profile is loaded first, so a bad profile is reported before a missing sbatch."""
    profile_data = load_profile(profile)
    cluster = choose_cluster(cluster, profile, dry_run)
    params = executor_parameters(profile_data, cluster)
    if cluster == "local":
        params.setdefault("timeout_min", LOCAL_TIMEOUT_MIN)  # submitit's local default stops a job after 2 min
    return cluster, params


class Launcher:
    """How every task's jobs go out (sweeps, detection sweeps, HPO workers): one submitit array per call on
    Slurm, the local or the debug executor; with local GPUs (unless the profile asks for none) one job per GPU
    at a time, each pinned to its own (:func:`da.launch.local.map_one_per_gpu`)."""

    def __init__(self, folder: str | os.PathLike, cluster: str, params: dict[str, Any], name: str):
        self.folder, self.cluster, self.params, self.name = Path(folder), cluster, dict(params), name
        self.gpus = local_gpus() if cluster == "local" and self.params.get("gpus_per_node") != 0 else []
        self.executor = None  # made at the first map: a dry run submits nothing and makes nothing

    def map(self, fn: Callable, *iterables, after: list[str] = ()) -> list:
        """``fn(*args)`` for each ``args`` of ``zip(*iterables)``; ``after``: Slurm job ids these jobs wait for
        (``afterok``; the other executors know no dependencies: the caller waits for those jobs itself)."""
        if self.gpus:
            return map_one_per_gpu(self.folder, self.params, self.gpus, fn, *iterables)
        if self.executor is None:
            self.executor = submitit.AutoExecutor(folder=self.folder, cluster=None if self.cluster == "slurm" else self.cluster)
            self.executor.update_parameters(name=self.name, **self.params)
        if after and self.cluster == "slurm":
            self.executor.update_parameters(slurm_dependency="afterok:" + ":".join(after))
        return self.executor.map_array(fn, *iterables)


def submit_sweep(sweep: Sweep, cluster: str | None = None, profile: str | None = None, dry_run: bool = False,
                 wait: bool = False, **overrides: Any) -> dict[str, Any]:
    """Submit what is missing of ``sweep``; return a summary (and print the plan when ``dry_run``)."""
    cluster, params = cluster_parameters(cluster, profile, dry_run)
    runs = plan(sweep, **overrides)
    stage1 = [r for r in runs if r.stage == 1 and r.needs_submission]
    stage2 = [r for r in runs if r.stage == 2 and r.needs_submission]
    waiting_s1 = [r.job_id for r in runs if r.stage == 1 and r.state == "queued" and r.job_id]
    out_dir = Path(overrides.get("out", RunConfig().out))
    folder = out_dir / "logs" / sweep.name / "%j"  # on the shared file system beside the runs, never /tmp
    array_size = max_array_size() if cluster == "slurm" else 10**9
    summary: dict[str, Any] = {"cluster": cluster, "runs": len(runs),
                               "done": sum(r.state == "done" for r in runs),
                               "queued": sum(r.state == "queued" for r in runs),
                               "submit_stage1": len(stage1), "submit_stage2": len(stage2),
                               "arrays_stage1": len(_chunks(stage1, array_size)),
                               "arrays_stage2": len(_chunks(stage2, array_size)), "jobs": []}
    if dry_run:
        print(status(sweep, **overrides))
        print(f"would submit {len(stage1)} stage-1 and {len(stage2)} stage-2 runs as "
              f"{summary['arrays_stage1']} + {summary['arrays_stage2']} array job(s) on cluster {cluster}"
              + (" (stage 2 after stage 1: --dependency=afterok)" if stage1 or waiting_s1 else ""))
        if cluster == "slurm" and (stage1 or stage2):
            print(sbatch_script(params, folder, max(len(stage1), len(stage2)), name=f"da-{sweep.name}"))
        return summary

    launcher = Launcher(folder, cluster, params, name=f"da-{sweep.name}")
    s1_ids = list(waiting_s1)
    s1_jobs = []
    for chunk in _chunks(stage1, array_size):
        jobs = launcher.map(RunJob(), [job_payload(r.cfg) for r in chunk], [1] * len(chunk))
        for r, job in zip(chunk, jobs):
            r.run_dir.mkdir(parents=True, exist_ok=True)
            record_submission(r.run_dir, job, r.cfg.config_hash(), stage=r.stage)
        s1_jobs += jobs
        s1_ids.append(jobs[0].job_id.split("_")[0])
    if cluster != "slurm":  # local and debug executors know no dependencies: wait here instead
        for job in s1_jobs:
            job.result()
    s2_jobs = []
    for chunk in _chunks(stage2, array_size):
        jobs = launcher.map(RunJob(), [job_payload(r.cfg) for r in chunk], [2] * len(chunk), after=s1_ids)
        for r, job in zip(chunk, jobs):
            r.run_dir.mkdir(parents=True, exist_ok=True)
            record_submission(r.run_dir, job, r.cfg.config_hash(), stage=r.stage)
        s2_jobs += jobs
    summary["jobs"] = [j.job_id for j in s1_jobs + s2_jobs]
    summary["job_objects"] = s1_jobs + s2_jobs
    if wait:
        for job in s2_jobs:
            job.result()
    return summary
