#!/usr/bin/env python
"""Kill drill: SIGKILL a real run at random moments, rerun the same command each time, and check that it
ends with the numbers of an uninterrupted run, with no damaged checkpoint and no leftover temporary file.

    python experiments/kill_drill.py --task classification --kills 12 --data-root ../shared/data
    python experiments/kill_drill.py --task detection --kills 12 --data-root ../shared/data
    python experiments/kill_drill.py --task hpo --kills 12 --data-root ../shared/data

classification: the smoke preset on the real AID -> RSSCN7 images (two stages); detection: the smoke preset on
NWPU VHR-10 with two epochs (a kill after the first resumes from its checkpoint); hpo: one worker (``da-hpo
--worker``) of a two-trial study of smoke runs, so kills land in trial claims, journal appends and the
trials' runs.  Kills land in every phase: data scanning, cache building, training steps, checkpoint, record
and journal writes.  Prints a table and writes it to results/benchmarks/kill_drill[_TASK].txt (--report).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TASKS = ("classification", "detection", "hpo")


STUDY = """\
name: drill
presets: [smoke]
base: {method: coral, progress: false, num_workers: 0}
space:
  align_weight: {type: loguniform, low: 0.3, high: 3.0}
objective: im
n_trials: 2
seed: 0
sampler: random
"""


def command(task: str, out: Path, data_root: str) -> list[str]:
    common = ["--out", str(out), "--data-root", data_root]
    if task == "classification":
        return [sys.executable, str(REPO / "experiments" / "run.py"), "--preset", "smoke", "--method", "coral",
                *common, "--progress", "false", "--num-workers", "0"]
    if task == "detection":
        return [sys.executable, str(REPO / "experiments" / "detect.py"), "--preset", "smoke", "--epochs", "2",
                *common, "--num-workers", "0"]
    return [sys.executable, str(REPO / "experiments" / "hpo.py"), "--study", str(out.parent / "drill.yaml"),
            *common, "--worker"]


def outcome(task: str, out: Path, stdout: str):
    """What must not change: per-epoch losses, metrics and scores of the run; per trial of a study, its state,
    parameters and objective, and its run's per-epoch numbers."""
    if task == "classification":
        rec = json.loads(Path(stdout.strip().splitlines()[-1]).read_text())
        return [(e["loss"], e["source_val"], e["target_test"], e["scores"]) for e in rec["epochs"]]
    if task == "detection":
        rec = json.loads(Path(stdout.strip().splitlines()[-1]).read_text())
        timings = ("train_s", "train_images_per_s")  # wall-clock, the only thing a resume may change
        history = [{k: v for k, v in e.items() if k not in timings} for e in rec["history"]]
        return history, rec["val"], rec["test"], rec["selected_epoch"]
    from da.hpo.study import load_study_dir

    study = load_study_dir(out / "studies" / "drill")
    records = sorted((p.parent.name, [(e["loss"], e["target_test"], e["scores"]) for e in json.loads(p.read_text())["epochs"]])
                     for p in out.glob("stage2-*/record.json"))
    return [(t.number, t.state.name, t.params, t.value) for t in study.get_trials()], records


def damaged_files(out: Path) -> list[str]:
    """Checkpoints that torch cannot load and JSON files (records, journals) that do not parse."""
    bad = damaged_checkpoints(out)
    for path in [*out.rglob("*.json"), *out.rglob("journal.log")]:
        try:
            text = path.read_text()
            if path.name == "journal.log":
                for line in text.splitlines():
                    json.loads(line)
            else:
                json.loads(text)
        except (ValueError, UnicodeDecodeError) as err:
            bad.append(f"{path.relative_to(out)} ({type(err).__name__})")
    return bad


def damaged_checkpoints(out: Path) -> list[str]:
    bad = []
    for path in out.rglob("*.pt"):
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any failure to load counts
            bad.append(f"{path.relative_to(out)} ({type(err).__name__})")
    return bad


def cut_journal_lines(out: Path) -> int:
    """Journal lines a kill cut mid-append (the next worker cuts them back, da.hpo.study.repair_journal)."""
    cut = 0
    for path in out.rglob("journal.log"):
        data = path.read_bytes()
        cut += bool(data) and not data.endswith(b"\n")
    return cut


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=TASKS, default="classification")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--data-root", default=os.environ.get("DA_DATA_ROOT", "../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/da-kill-drill"))
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    ap.add_argument("--report", type=Path, default=None,
                    help="default: results/benchmarks/kill_drill.txt (classification), kill_drill_TASK.txt (others)")
    args = ap.parse_args(argv)
    if args.kills < 1:
        ap.error("--kills must be >= 1")
    task = args.task
    report = args.report or REPO / "results" / "benchmarks" / (
        "kill_drill.txt" if task == "classification" else f"kill_drill_{task}.txt")
    shutil.rmtree(args.out, ignore_errors=True)
    rng = random.Random(args.seed)
    env = {**os.environ, "DA_CACHE_DIR": str(args.out / "verified")}
    ref_out, drill = args.out / "ref" / "runs", args.out / "drill" / "runs"
    for out in (ref_out, drill):
        out.mkdir(parents=True)
        (out.parent / "drill.yaml").write_text(STUDY)

    t0 = time.perf_counter()
    ref = subprocess.run(command(task, ref_out, args.data_root), capture_output=True, text=True, env=env)
    if ref.returncode != 0:
        print(ref.stderr, file=sys.stderr)
        return 1
    duration = time.perf_counter() - t0

    kills, starts, leftovers, cut, damaged = 0, 0, 0, 0, []
    while kills < args.kills:
        proc = subprocess.Popen(command(task, drill, args.data_root), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        starts += 1
        try:
            proc.wait(timeout=rng.uniform(0.5, duration))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            leftovers += len(list(drill.rglob(".*.tmp")))
            cut += cut_journal_lines(drill)
            damaged += [f for f in damaged_files(drill) if "journal.log" not in f]  # a cut journal line is repaired
            continue
        if proc.returncode == 0:  # finished before the kill: start over so that every kill lands in a run
            shutil.rmtree(drill)
            drill.mkdir(parents=True)
        else:
            print(proc.stderr.read(), file=sys.stderr)
            return 1
    final = subprocess.run(command(task, drill, args.data_root), capture_output=True, text=True, env=env)
    if final.returncode != 0:
        print(final.stderr, file=sys.stderr)
        return 1
    same = outcome(task, drill, final.stdout) == outcome(task, ref_out, ref.stdout)
    damaged_after = damaged_files(drill)
    left_after = len(list(drill.rglob(".*.tmp")))
    compared = {"classification": "per-epoch losses, metrics, validator scores",
                "detection": "per-epoch losses and mAP (all but wall-clock times), val and test at every NMS "
                             "threshold, selected epoch",
                "hpo": "per trial: state, parameters, objective; per-epoch numbers of every trial's run"}[task]
    lines = [
        f"# kill drill, {task} ({platform.node()}, {platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} at the end)",
        f"# command: python experiments/kill_drill.py --task {task} --kills {args.kills} --seed {args.seed}",
        f"# run: {' '.join(['python', *[str(Path(c).relative_to(REPO)) if c.endswith('.py') else c for c in command(task, Path('OUT'), 'DATA')[1:]]])}",
        f"uninterrupted run            {duration:.1f} s",
        f"starts / SIGKILLs            {starts + 1} / {kills}",
        f"temporaries left by kills    {leftovers} (removed by the next start; {left_after} after the final run)",
        f"damaged files after kills    {len(damaged)}{': ' + ', '.join(damaged) if damaged else ''}",
        f"damaged files at the end     {len(damaged_after)}{': ' + ', '.join(damaged_after) if damaged_after else ''}",
    ]
    if task == "hpo":
        lines.append(f"journal lines cut by kills   {cut} (cut back by the next worker)")
    lines.append(f"final result == uninterrupted ({compared}): {same}")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text)
    return 0 if same and not damaged and not damaged_after and left_after == 0 else 1

if __name__ == "__main__":
    sys.exit(main())
