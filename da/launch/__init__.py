"""Sweeps: grids of run configs, submitted as Slurm array jobs (or run locally) through submitit."""

from da.launch.sweep import Sweep, load_sweep
from da.launch.submit import RunJob, plan, status, submit_sweep

__all__ = ["Sweep", "load_sweep", "RunJob", "plan", "status", "submit_sweep"]
