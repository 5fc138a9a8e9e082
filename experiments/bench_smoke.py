#!/usr/bin/env python
"""The one-minute smoke paths as a new user runs them: the fenced `--preset smoke` commands of README.md's
Quickstart and of docs/detection.md, each timed fresh (an empty runs folder and cache) and reused (the same
command again: the finished run is found), and the time to `--help` of the programs they call.

    python experiments/bench_smoke.py --data-root ../shared/data

Each command runs as written, with `--out` (and DA_CACHE_DIR) pointing into --work so that nothing lands in
the checkout.  Prints a table and writes it to results/benchmarks/smoke.txt (--report).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = (REPO / "README.md", REPO / "docs" / "detection.md")


def smoke_commands() -> list[str]:
    """Every fenced bash command of the pages that runs a program with `--preset smoke` (comments dropped)."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                command = line.split("#")[0].strip()
                if "--preset smoke" in command and command.startswith("python experiments/"):
                    found.append(command)
    return found


def run(command: str, out: Path, env: dict) -> tuple[float, subprocess.CompletedProcess]:
    """``command`` as written, from the repo, its runs under ``out``; the wall time and the finished process."""
    words = shlex.split(command)
    words[0] = sys.executable
    t = time.perf_counter()
    res = subprocess.run([*words, "--out", str(out)], cwd=REPO, capture_output=True, text=True, env=env)
    return time.perf_counter() - t, res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=os.environ.get("DA_DATA_ROOT", "../shared/data"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/da-bench-smoke"), help="runs and caches (emptied first)")
    ap.add_argument("--report", type=Path, default=REPO / "results" / "benchmarks" / "smoke.txt")
    args = ap.parse_args(argv)
    shutil.rmtree(args.work, ignore_errors=True)
    env = {**os.environ, "DA_DATA_ROOT": str(Path(args.data_root).resolve()), "DA_CACHE_DIR": str(args.work / "cache")}
    rows = []
    for i, command in enumerate(smoke_commands()):
        out = args.work / f"runs{i}"
        fresh, res = run(command, out, env)
        if res.returncode != 0:
            print(res.stderr[-3000:], file=sys.stderr)
            return 1
        reused, again = run(command, out, env)
        if again.returncode != 0 or again.stdout.strip().splitlines()[-1] != res.stdout.strip().splitlines()[-1]:
            print(again.stderr[-3000:], file=sys.stderr)
            return 1
        program = shlex.split(command)[1]
        t = time.perf_counter()
        subprocess.run([sys.executable, program, "--help"], cwd=REPO, capture_output=True, check=True)
        rows.append((command, fresh, reused, time.perf_counter() - t))
    import torch

    lines = [f"# smoke paths (experiments/bench_smoke.py), {time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, "
             f"{len(os.sched_getaffinity(0))} usable CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
             f"load average {os.getloadavg()[0]:.1f} at the end",
             "# fresh: empty runs folder and cache; reused: the same command again (the finished run is found)",
             f"{'fresh s':>8} {'reused s':>9} {'--help s':>9}  command"]
    lines += [f"{f:8.1f} {r:9.1f} {h:9.1f}  {c}" for c, f, r, h in rows]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
