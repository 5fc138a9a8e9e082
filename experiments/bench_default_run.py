#!/usr/bin/env python
"""Benchmark: wall time of the default run on this machine, fresh (stage 1 and every cache built) and
again with stage 1 and the caches reused (a second seed), with the split between building the
frozen-prefix caches and training + evaluation, read from the run records.

    python experiments/bench_default_run.py --data-root ../shared/data

Give it the cores it is to be measured on and nothing else (e.g. ``sbatch -c 2 --wrap ...``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from da.utils.io import atomic_write_text

RUN = [sys.executable, str(Path(__file__).resolve().parent / "run.py"), "--progress", "false"]


def timed_run(args: list[str]) -> tuple[float, Path]:
    start = time.perf_counter()
    res = subprocess.run(RUN + args, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"run.py {' '.join(args)} failed:\n{res.stderr[-3000:]}")
    return wall, Path(res.stdout.strip().splitlines()[-1])  # run.py prints the record's path last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=os.environ.get("DA_DATA_ROOT", ""))
    ap.add_argument("--out", default="results/benchmarks/default_run.txt")
    args = ap.parse_args()
    runs = Path(tempfile.mkdtemp(prefix="da-bench-"))
    try:
        base = ["--out", str(runs)] + (["--data-root", args.data_root] if args.data_root else [])
        fresh_wall, fresh = timed_run(base)
        reuse_wall, reused = timed_run(base + ["--seed", "1"])
        stage1 = next(runs.glob("stage1-*/record.json"))
        rows = [("fresh, stage 1", json.loads(stage1.read_text())),
                ("fresh, stage 2 (seed 0)", json.loads(fresh.read_text())),
                ("stage 1 reused, stage 2 (seed 1)", json.loads(reused.read_text()))]
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    lines = [f"# default run timing, {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPUs, "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads",
             "# python experiments/bench_default_run.py (run.py with its defaults into a fresh folder, twice)",
             f"{'part':<34}{'wall s':>9}{'caches s':>10}{'train+eval s':>14}"]
    for name, rec in rows:
        lines.append(f"{name:<34}{rec['wall_time_s']:>9.1f}{rec['data_time_s']:>10.1f}{rec['train_time_s']:>14.1f}")
    lines.append(f"{'whole command, fresh':<34}{fresh_wall:>9.1f}   ({fresh_wall / 60:.1f} min)")
    lines.append(f"{'whole command, stage 1 reused':<34}{reuse_wall:>9.1f}   ({reuse_wall / 60:.1f} min)")
    text = "\n".join(lines) + "\n"
    print(text)
    atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
