"""Which submitit executor a sweep, detection sweep or HPO study uses: decided here, once, for every launcher.

- ``--cluster local`` / ``debug``: what was asked, sbatch or not.
- ``--cluster slurm``, or a ``--profile`` (a profile holds Slurm settings, so giving one asks for Slurm): Slurm.
  Without ``sbatch`` on PATH a dry run still prints the sbatch script (rendering it needs no Slurm) and says a
  real submission would fail; a real submission stops with what to do, never quietly runs on this machine.
- Neither: Slurm when ``sbatch`` is on PATH, else this machine, said on stderr so it is never silent.
"""

from __future__ import annotations

import shutil
import sys

CLUSTERS = ("slurm", "local", "debug")


def sbatch_on_path() -> bool:
    return shutil.which("sbatch") is not None


def default_cluster() -> str:
    """The executor when neither --cluster nor --profile is given."""
    return "slurm" if sbatch_on_path() else "local"


def choose_cluster(cluster: str | None, profile: str | None, dry_run: bool = False) -> str:
    """The executor to use (see the module docstring); raises ValueError when Slurm is asked for and absent."""
    if cluster is not None and cluster not in CLUSTERS:
        raise ValueError(f"--cluster {cluster!r} is not valid; choose from {', '.join(CLUSTERS)}")
    if cluster in ("local", "debug") or sbatch_on_path():
        return cluster or "slurm"
    if cluster is None and not profile:
        print("note: sbatch is not on PATH, so the runs go to this machine (--cluster local); give --profile or "
              "--cluster slurm on a Slurm login node to submit them to Slurm", file=sys.stderr)
        return "local"
    asked = "--cluster slurm" if cluster == "slurm" else f"--profile {profile} (a Slurm profile)"
    todo = ("submit from a Slurm login node, or start the single-node cluster (slurm/local/start.sh, then source "
            "slurm/local/state/env.sh) and use --profile local, or run on this machine without Slurm with "
            "--cluster local")
    if dry_run:
        print(f"note: sbatch is not on PATH here; {asked} would submit the script below, but a real submission "
              f"from this machine would fail: {todo}")
        return "slurm"
    raise ValueError(f"{asked} needs Slurm, but sbatch is not on PATH; nothing was submitted. To go on: {todo}")
