#!/usr/bin/env python
"""Benchmark: how long a command takes before it does anything, i.e. ``run.py --help``, a bad flag's error and a
bare ``import da.cli``, each in a fresh interpreter (wall time of the subprocess, median of N).

    python experiments/bench_startup.py --baseline 4336bce --repeats 5

With ``--baseline`` the revision is checked out into a temporary worktree and measured in the same run, its
runs interleaved with this checkout's (one of each in turn), so that a neighbour's load falls on both alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from da.utils.bench import header, write_table

COMMANDS = {  # name -> argv after the interpreter (run in the checkout's root)
    "run.py --help": ["experiments/run.py", "--help"],
    "run.py --method nope": ["experiments/run.py", "--method", "nope"],
    "import da.cli": ["-c", "import da.cli"],
}
HEAVY = ("sklearn", "torchvision", "timm", "pandas", "scipy")


def wall(code: Path, argv: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(code)}
    start = time.perf_counter()
    subprocess.run([sys.executable, *argv], cwd=code, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def heavy_loaded(code: Path) -> str:
    """The heavy libraries that ``import da.cli`` loads with ``code``."""
    probe = f"import sys, da.cli; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", probe], cwd=code, env={**os.environ, "PYTHONPATH": str(code)},
                         capture_output=True, text=True)
    return res.stdout.strip() or "none"


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="", help="a git revision measured in the same run (before/after)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of each command with each checkout")
    ap.add_argument("--out", default="results/benchmarks/startup.txt")
    args = ap.parse_args()
    repo = Path(__file__).resolve().parents[1]
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="da-bench-") as tmp:
        codes = {}
        if args.baseline:
            subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", f"{tmp}/baseline", args.baseline],
                           check=True, capture_output=True)
            codes[f"before ({args.baseline})"] = Path(tmp, "baseline")
        codes[f"after ({commit or 'this checkout'})"] = repo
        try:
            for code in codes.values():  # untimed: compiles the .pyc files, warms the page cache
                for argv in COMMANDS.values():
                    wall(code, argv)
            times = {(c, n): [] for c in codes for n in COMMANDS}
            for _ in range(args.repeats):
                for name, argv in COMMANDS.items():
                    for label, code in codes.items():  # interleaved: before, after, before, after, ...
                        times[label, name].append(wall(code, argv))
            loaded = {label: heavy_loaded(code) for label, code in codes.items()}
        finally:
            if args.baseline:
                subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", f"{tmp}/baseline"],
                               capture_output=True)

    lines = header("startup: a command's wall time before it does anything, fresh interpreter each "
                   "(experiments/bench_startup.py)")
    lines.append(f"# {args.repeats} timed runs per command and checkout after one untimed, the checkouts interleaved; "
                 f"load average {os.getloadavg()[0]:.1f} at the end")
    lines.append(f"{'code':<22}{'command':<24}{'median s':>9}{'min s':>8}  runs s")
    for (label, name), ts in times.items():
        lines.append(f"{label:<22}{name:<24}{statistics.median(ts):>9.2f}{min(ts):>8.2f}  "
                     + " ".join(f"{t:.2f}" for t in ts))
    for label, libs in loaded.items():
        lines.append(f"{label:<22}heavy libraries loaded by import da.cli: {libs}")
    if len(codes) == 2:
        (before, after) = codes
        lines.append("after / before (medians): " + ", ".join(
            f"{name} {statistics.median(times[after, name]) / statistics.median(times[before, name]):.2f}x"
            for name in COMMANDS))
    write_table(args.out, lines)


if __name__ == "__main__":
    main()
