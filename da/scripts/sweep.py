"""Submit a sweep (grid x seeds) as Slurm array jobs through submitit, or show its status.

    da-sweep --sweep ablation --profile gpu --dry-run
    da-sweep --sweep ablation --profile gpu
    da-sweep --sweep my_sweep.yaml --profile my_cluster.yaml
    da-sweep --status ablation

Sweeps and profiles are given by name (those shipped with da, in da/launch/sweeps and da/launch/profiles)
or by the path of a YAML file.  (``python experiments/sweep.py`` in a checkout is the same program.)

Stage-1 runs go first, once per distinct stage-1 config; the stage-2 array waits for them
(--dependency=afterok), so the whole sweep is submitted at once and this process may exit.  Running the
same command again submits only what is missing; finished runs are skipped, interrupted ones resume.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from da.data.registry import default_data_root
from da.launch import load_sweep, status, submit_sweep
from da.launch.cluster import default_cluster
from da.launch.submit import PROFILES_DIR
from da.launch.sweep import SWEEPS_DIR, known_names


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--sweep", help=f"a sweep shipped with da, by name ({', '.join(known_names(SWEEPS_DIR))}), "
                                      f"or the path of a sweep YAML file")
    what.add_argument("--status", metavar="SWEEP", help="tabulate done / queued / partial / failed / missing runs")
    ap.add_argument("--cluster", choices=["slurm", "local", "debug"], default=None,
                    help=f"submitit executor (default here: {default_cluster()}: slurm when sbatch is on PATH, "
                         "else local; a --profile asks for slurm)")
    ap.add_argument("--profile", help=f"Slurm settings (partition, gpus, cpus, memory, time, account, ...): a profile "
                                      f"shipped with da, by name ({', '.join(known_names(PROFILES_DIR))}), or the "
                                      f"path of a profile YAML file")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and the whole sbatch script; submit nothing")
    ap.add_argument("--wait", action="store_true", help="wait until every run has finished")
    ap.add_argument("--out", default="runs", help="folder of run directories (on a shared file system)")
    ap.add_argument("--data-root", default="", help="folder holding the datasets ($DA_DATA_ROOT, ./data)")
    args = ap.parse_args(argv)
    # absolute paths: array tasks may start in another working directory
    data_root = Path(args.data_root or default_data_root()).resolve()
    overrides = {"out": str(Path(args.out).resolve()), "data_root": str(data_root), "progress": False}
    try:
        if args.status:
            print(status(load_sweep(args.status), **overrides))
            return 0
        summary = submit_sweep(load_sweep(args.sweep), cluster=args.cluster, profile=args.profile,
                               dry_run=args.dry_run, wait=args.wait, **overrides)
    except (FileNotFoundError, ValueError) as err:
        ap.error(str(err))
    if not args.dry_run:
        print(f"submitted {summary['submit_stage1']} stage-1 and {summary['submit_stage2']} stage-2 runs "
              f"({summary['done']} already done, {summary['queued']} still queued): jobs {' '.join(summary['jobs']) or '-'}")
    return 0

