#!/usr/bin/env python
"""Kill drill: SIGKILL a real run at random moments, rerun the same command each time, and check that it
ends with the numbers of an uninterrupted run, with no damaged checkpoint and no leftover temporary file.

    python experiments/kill_drill.py --kills 20 --data-root ../shared/data --out /tmp/drill

The run is the smoke preset on the real AID -> RSSCN7 images (two stages, short epochs), so kills land in
every phase: data scanning, cache building, training steps, checkpoint and record writes.  Prints a
table and writes it to results/benchmarks/kill_drill.txt (--report).
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


def command(out: Path, data_root: str) -> list[str]:
    return [sys.executable, str(REPO / "experiments" / "run.py"), "--preset", "smoke", "--method", "coral",
            "--out", str(out), "--data-root", data_root, "--progress", "false", "--num-workers", "0"]


def epochs_of(record: Path) -> list:
    rec = json.loads(record.read_text())
    return [(e["loss"], e["source_val"], e["target_test"], e["scores"]) for e in rec["epochs"]]


def damaged_checkpoints(out: Path) -> list[str]:
    bad = []
    for path in out.rglob("*.pt"):
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any failure to load counts
            bad.append(f"{path.relative_to(out)} ({type(err).__name__})")
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--data-root", default=os.environ.get("DA_DATA_ROOT", "../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/da-kill-drill"))
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    ap.add_argument("--report", type=Path, default=REPO / "results" / "benchmarks" / "kill_drill.txt")
    args = ap.parse_args(argv)
    if args.kills < 1:
        ap.error("--kills must be >= 1")
    shutil.rmtree(args.out, ignore_errors=True)
    rng = random.Random(args.seed)
    env = {**os.environ, "DA_CACHE_DIR": str(args.out / "verified")}

    t0 = time.perf_counter()
    ref = subprocess.run(command(args.out / "ref", args.data_root), capture_output=True, text=True, env=env)
    if ref.returncode != 0:
        print(ref.stderr, file=sys.stderr)
        return 1
    duration = time.perf_counter() - t0
    ref_record = Path(ref.stdout.strip().splitlines()[-1])

    drill = args.out / "drill"
    kills, starts, leftovers, damaged = 0, 0, 0, []
    while kills < args.kills:
        proc = subprocess.Popen(command(drill, args.data_root), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        starts += 1
        try:
            proc.wait(timeout=rng.uniform(0.5, duration))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            leftovers += len(list(drill.rglob(".*.tmp")))
            damaged += damaged_checkpoints(drill)
            continue
        if proc.returncode == 0:  # finished before the kill: start over so that every kill lands in a run
            shutil.rmtree(drill)
        else:
            print(proc.stderr.read(), file=sys.stderr)
            return 1
    final = subprocess.run(command(drill, args.data_root), capture_output=True, text=True, env=env)
    if final.returncode != 0:
        print(final.stderr, file=sys.stderr)
        return 1
    record = Path(final.stdout.strip().splitlines()[-1])
    same = epochs_of(record) == epochs_of(ref_record)
    left_after = len(list(drill.rglob(".*.tmp")))
    lines = [
        f"# kill drill ({platform.node()}, {platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads)",
        f"# command: python experiments/kill_drill.py --kills {args.kills} --seed {args.seed}",
        f"# run: python experiments/run.py {' '.join(command(Path('OUT'), 'DATA')[2:])}",
        f"uninterrupted run            {duration:.1f} s",
        f"starts / SIGKILLs            {starts + 1} / {kills}",
        f"temporaries left by kills    {leftovers} (removed by the next start; {left_after} after the final run)",
        f"damaged checkpoint files     {len(damaged)}{': ' + ', '.join(damaged) if damaged else ''}",
        f"final record == uninterrupted (per-epoch losses, metrics, validator scores): {same}",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(text)
    return 0 if same and not damaged and left_after == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
