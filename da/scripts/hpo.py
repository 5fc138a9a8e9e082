"""Hyperparameter search without target labels: submit a study's workers, or show its status and table.

    da-hpo --study shot_mcc_rsscn7 --out runs --workers 2 --profile local --dry-run
    da-hpo --study shot_mcc_rsscn7 --out runs --workers 2 --profile local     # submit; the process may exit
    da-hpo --study shot_mcc_rsscn7 --out runs --status                        # done / running / failed / best
    da-hpo --study shot_mcc_rsscn7 --out runs --status --table                # and write the study table
    da-hpo --study shot_mcc_rsscn7 --out results/hpo --status --table         # the committed study
    da-hpo --study my_study.yaml --out runs --worker                          # one worker, in this process

A study (a file shipped in da/launch/studies, by name, or the path of a study YAML file) is a base config,
a search space, a budget of trials, a seed, a sampler and a label-free objective (a validator of
da.selection, or rank).  Its trials are kept in <out>/studies/<name>/journal.log, shared by every worker;
the runs go to <out> like any other (hashed run directories, resumed after a kill).  Running the same
command again continues the study: finished trials stay, a trial a dead worker left is resumed, and
only the missing workers are submitted.  (``python experiments/hpo.py`` in a checkout is the same program.)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from da.data.registry import default_data_root
from da.hpo.study import load_study_spec, study_dir
from da.launch.cluster import default_cluster
from da.launch.submit import PROFILES_DIR
from da.launch.sweep import STUDIES_DIR, known_names
from da.utils.interrupt import exit_on_signals


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--study", required=True,
                    help=f"a study shipped with da, by name ({', '.join(known_names(STUDIES_DIR)) or 'none'}), or "
                         f"the path of a study YAML file")
    ap.add_argument("--out", default="runs", help="folder of run directories (on a shared file system); the study "
                                                  "itself goes to <out>/studies/<name>")
    ap.add_argument("--data-root", default="", help="folder holding the datasets ($DA_DATA_ROOT, ./data)")
    ap.add_argument("--workers", type=int, default=1, help="array tasks, each running trials one after another "
                                                           "until the budget is spent (default 1)")
    ap.add_argument("--cluster", choices=["slurm", "local", "debug"], default=None,
                    help=f"submitit executor (default here: {default_cluster()}: slurm when sbatch is on PATH, "
                         "else local; a --profile asks for slurm)")
    ap.add_argument("--profile", help=f"Slurm settings: a profile shipped with da, by name "
                                      f"({', '.join(known_names(PROFILES_DIR))}), or the path of a profile YAML file")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and the sbatch script; create and submit "
                                                           "nothing")
    ap.add_argument("--wait", action="store_true", help="wait until the workers have finished")
    ap.add_argument("--status", action="store_true", help="print trials done / running / failed / remaining and the "
                                                          "best so far by the label-free objective")
    ap.add_argument("--table", action="store_true", help="print the study table (label-free choice vs default vs "
                                                         "oracle) and write it to <out>/studies/<name>/results/study.md")
    ap.add_argument("--table-out", type=Path, default=None, help="write the study table here instead")
    ap.add_argument("--runs", type=Path, default=None,
                    help="with --table: the folder holding the study's run directories, where they are neither in "
                         "--out nor in <out>/runs (the default: found beside the study)")
    ap.add_argument("--worker", action="store_true", help="run one worker in this process (no submitit)")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()  # absolute: array tasks may start in another working directory
    try:
        spec = load_study_spec(args.study)
        if args.status or args.table:
            from da.hpo.report import status_text

            if args.status:
                print(status_text(spec.name, out, n_trials=spec.n_trials))
            if args.table:
                from da.results.study import write_study_table

                path = write_study_table(study_dir(out, spec.name), args.table_out, args.runs)
                print(f"\n{path.read_text()}\nstudy table written to {path}")
            return 0
        data_root = str(Path(args.data_root or default_data_root()).resolve())
        if args.worker:
            from da.hpo.worker import run_worker

            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
            # the trial stays RUNNING and its lock goes with this process: the next worker resumes it
            exit_on_signals("the trial in progress is resumed by the next worker (run the same command again)")
            handled = run_worker(spec, out, data_root)
            print(f"worker ran trial(s) {', '.join(map(str, handled)) or '-'}")
            return 0
        from da.hpo.submit import submit_study

        summary = submit_study(spec, out, data_root, workers=args.workers, cluster=args.cluster,
                               profile=args.profile, dry_run=args.dry_run, wait=args.wait)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.dry_run:
        live = summary["live_workers"]
        print(f"study {spec.name} in {summary['study_dir']} ({'new' if summary['new'] else 'continued'}): "
              f"{summary['complete']} done, {summary['failed']} failed, {summary['remaining']} to run; submitted "
              f"{summary['submit']} worker(s): jobs {' '.join(summary['jobs']) or '-'}"
              + (f" ({len(live)} earlier worker(s) still queued: {' '.join(live)})" if live else ""))
        print(f"status: da-hpo --study {args.study} --out {args.out} --status")
    return 0
