"""Detection sweeps: a YAML grid of ``DetectionConfig`` fields submitted as Slurm array jobs with submitit.

A sweep file (shipped ones in ``da/detection/sweeps/``) has ``base`` (fields for every run), ``grid`` (field:
list of values, crossed), optional ``variants`` (a list of field mappings, each crossed with the grid) and
``seeds``.  Submission skips runs that are done (their ``DONE`` marker) and runs already queued, so the same
command submits only what is missing; a preempted or timed-out job is requeued by submitit and resumes from
its run directory's checkpoint.  The cluster profiles are classification's (``da/launch/profiles``).
"""

from __future__ import annotations

import itertools
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

from da.detection.config import DetectionConfig, DetectionConfigError
from da.launch.submit import queued_job_ids, cluster_parameters
from da.launch.sweep import named_yaml
from da.rundir import DONE_FILE, FAILED_FILE, RECORD_FILE, SUBMITTED_FILE
from da.utils.io import atomic_write_json, atomic_write_text
from da.utils.safeload import load_file, plain_line

SWEEPS_DIR = Path(__file__).parent / "sweeps"


@dataclass
class DetectionSweep:
    name: str
    base: dict[str, Any]
    grid: dict[str, list[Any]]
    seeds: list[int]
    variants: list[dict[str, Any]] = field(default_factory=lambda: [{}])

    def configs(self, **overrides: Any) -> list[DetectionConfig]:
        keys, out, seen = list(self.grid), [], set()
        for variant, values in itertools.product(self.variants, itertools.product(*(self.grid[k] for k in keys))):
            for seed in ([variant["seed"]] if "seed" in variant else self.seeds):  # a variant may fix its seed
                cfg = DetectionConfig.from_dict({**self.base, **variant, **dict(zip(keys, values)), "seed": seed,
                                                 **overrides})
                if cfg.config_hash() not in seen:
                    seen.add(cfg.config_hash())
                    out.append(cfg)
        return out


def load_detection_sweep(name: str | os.PathLike) -> DetectionSweep:
    """A detection sweep by shipped name or path; errors name the file and the field."""
    path = named_yaml(name, SWEEPS_DIR, "detection sweep")
    data = load_file(path, "detection sweep", yaml_only=True) or {}
    if not isinstance(data, dict):
        raise ValueError(f"detection sweep {path}: expected a mapping with base, grid, variants, seeds")
    unknown = sorted(set(data) - {"base", "grid", "variants", "seeds", "description"})
    if unknown:
        raise ValueError(f"detection sweep {path}: unknown key(s) {unknown}; expected base, grid, variants, seeds, "
                         "description")
    grid = data.get("grid") or {}
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ValueError(f"detection sweep {path}: grid must map fields to non-empty lists of values")
    variants = data.get("variants") or [{}]
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise ValueError(f"detection sweep {path}: variants must be a list of mappings of config fields")
    sweep = DetectionSweep(plain_line(path.stem, f"detection sweep {path}: its file name"), data.get("base") or {}, grid, list(data.get("seeds") or [0]), variants)
    try:
        sweep.configs()
    except (DetectionConfigError, TypeError) as err:
        raise ValueError(f"detection sweep {path}: {err}") from None
    return sweep


class DetectionJob(submitit.helpers.Checkpointable):
    """The job callable: one detection run, resumable from its run directory alone."""

    def __call__(self, config: dict[str, Any]) -> str:
        import logging

        from da.detection.engine import run_detection

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        cfg = DetectionConfig.from_dict(config)
        (cfg.run_dir() / FAILED_FILE).unlink(missing_ok=True)
        try:
            return str(run_detection(cfg))
        except Exception as err:
            atomic_write_text(cfg.run_dir() / FAILED_FILE, f"{type(err).__name__}: {err}\n"
                                                           + "".join(traceback.format_exc(limit=-3)))
            raise

    def checkpoint(self, config: dict[str, Any]) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(DetectionJob(), config)


def run_state(cfg: DetectionConfig, queued: set[str]) -> str:
    run_dir = cfg.run_dir()
    if (run_dir / DONE_FILE).exists() and (run_dir / RECORD_FILE).exists():
        return "done"
    sub = run_dir / SUBMITTED_FILE
    if sub.exists():
        import json
        try:
            if str(json.loads(sub.read_text()).get("job_id")) in queued:
                return "queued"
        except (OSError, ValueError):
            pass
    return "missing"


def submit_detection_sweep(sweep: DetectionSweep, cluster: str | None = None, profile: str | None = None,
                           dry_run: bool = False, **overrides: Any) -> dict[str, Any]:
    """Submit the runs of ``sweep`` that are neither done nor queued, as one array job."""
    cluster, params = cluster_parameters(cluster, profile)
    configs = sweep.configs(**overrides)
    queued = queued_job_ids() if cluster == "slurm" else set()
    states = [run_state(c, queued) for c in configs]
    todo = [c for c, s in zip(configs, states) if s == "missing"]
    summary = {"cluster": cluster, "runs": len(configs), "done": states.count("done"),
               "queued": states.count("queued"), "submit": len(todo), "jobs": []}
    for c, s in zip(configs, states):
        print(f"{s:8s} {c.run_dir()}")
    for c in todo if not dry_run else []:
        try:
            c.check_weights()
        except DetectionConfigError as err:
            raise ValueError(f"detection sweep {sweep.name}: {err}; nothing was submitted") from None
    if dry_run or not todo:
        print(f"{'would submit' if dry_run else 'nothing to submit:'} {len(todo)} of {len(configs)} runs")
        return summary
    out = Path(overrides.get("out", DetectionConfig().out))
    executor = submitit.AutoExecutor(folder=out / "logs" / sweep.name / "%j",
                                     cluster=None if cluster == "slurm" else cluster)
    executor.update_parameters(name=f"da-det-{sweep.name}", **params)
    jobs = executor.map_array(DetectionJob(), [c.to_dict() for c in todo])
    for c, job in zip(todo, jobs):
        c.run_dir().mkdir(parents=True, exist_ok=True)
        atomic_write_json(c.run_dir() / SUBMITTED_FILE, {"job_id": job.job_id, "stdout": str(job.paths.stdout),
                                                         "config_hash": c.config_hash()})
    summary["jobs"] = [j.job_id for j in jobs]
    summary["job_objects"] = jobs
    print(f"submitted {len(jobs)} runs on {cluster}: {jobs[0].job_id.split('_')[0]}")
    return summary
