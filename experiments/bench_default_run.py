#!/usr/bin/env python
"""Benchmark: wall time of the default run on this machine, fresh (stage 1 and every cache built) and
again with stage 1 and the caches reused (a second seed), with the split between building the
frozen-prefix caches and training + evaluation, read from the run records.

    python experiments/bench_default_run.py --data-root ../shared/data --baseline 9ce9d40

Give it the cores it is to be measured on and nothing else (e.g. ``sbatch -c 2 --wrap ...``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


from da.utils.bench import header, write_table

def timed_run(code: Path, args: list[str], env: dict[str, str]) -> tuple[float, Path]:
    start = time.perf_counter()
    res = subprocess.run([sys.executable, str(code / "experiments" / "run.py"), "--progress", "false"] + args,
                         capture_output=True, text=True, env=env, cwd=code)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"run.py {' '.join(args)} ({code}) failed:\n{res.stderr[-3000:]}")
    return wall, Path(res.stdout.strip().splitlines()[-1])  # run.py prints the record's path last


def measure(code: Path, tmp: Path, data_root: str) -> dict:
    """The default run fresh (no run, cache, verification memo or compiled kernel on disk), then again with
    another seed (stage 1, caches, memo and kernels reused), with ``code`` (a checkout) importing itself."""
    runs, state = tmp / "runs", tmp / "state"
    env = {**os.environ, "PYTHONPATH": str(code), "DA_CACHE_DIR": str(state / "da"),
           "TORCHINDUCTOR_CACHE_DIR": str(state / "inductor")}
    base = ["--out", str(runs)] + (["--data-root", str(Path(data_root).resolve())] if data_root else [])
    fresh_wall, fresh = timed_run(code, base, env)
    reuse_wall, reused = timed_run(code, base + ["--seed", "1"], env)
    stage1 = json.loads(next(runs.glob("stage1-*/record.json")).read_text())
    return {"stage1": stage1, "fresh": json.loads(fresh.read_text()), "reused": json.loads(reused.read_text()),
            "fresh_wall": fresh_wall, "reuse_wall": reuse_wall}


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=os.environ.get("DA_DATA_ROOT", ""))
    ap.add_argument("--baseline", default="", help="a git revision measured first, in the same run (before/after)")
    ap.add_argument("--sweep-size", type=int, default=15, help="K stage-2 runs of a sweep, for the shared-stage-1 line")
    ap.add_argument("--out", default="results/benchmarks/default_run.txt")
    args = ap.parse_args()
    repo = Path(__file__).resolve().parents[1]
    results = {}
    with tempfile.TemporaryDirectory(prefix="da-bench-") as tmp:
        tmp = Path(tmp)
        if args.baseline:
            subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(tmp / "baseline"),
                            args.baseline], check=True, capture_output=True)
            try:
                results[f"before ({args.baseline})"] = measure(tmp / "baseline", tmp / "b", args.data_root)
            finally:
                subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tmp / "baseline")],
                               capture_output=True)
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        results[f"after ({commit or 'this checkout'})"] = measure(repo, tmp / "a", args.data_root)

    lines = header("the default run (python experiments/run.py), fresh and with stage 1 reused "
                   "(experiments/bench_default_run.py)")
    lines.append("# fresh: no run, cache, verification memo or compiled kernel on disk; reused: a second seed")
    lines.append(f"{'code':<24}{'part':<34}{'wall s':>9}{'caches s':>10}{'train+eval s':>14}")
    for code, r in results.items():
        for name, rec in (("fresh, stage 1", r["stage1"]), ("fresh, stage 2 (seed 0)", r["fresh"]),
                          ("stage 1 reused, stage 2 (seed 1)", r["reused"])):
            lines.append(f"{code:<24}{name:<34}{rec['wall_time_s']:>9.1f}{rec['data_time_s']:>10.1f}"
                         f"{rec['train_time_s']:>14.1f}")
        lines.append(f"{code:<24}{'whole command, fresh':<34}{r['fresh_wall']:>9.1f}   ({r['fresh_wall'] / 60:.1f} min)")
        lines.append(f"{code:<24}{'whole command, stage 1 reused':<34}{r['reuse_wall']:>9.1f}   "
                     f"({r['reuse_wall'] / 60:.1f} min)")
        k, s1, s2 = args.sweep_size, r["stage1"]["wall_time_s"], r["reused"]["wall_time_s"]
        lines.append(f"{code:<24}{f'sweep of {k}, stage 1 shared':<34}{s1 + k * s2:>9.0f}   vs {k * (s1 + s2):.0f} s "
                     f"with a stage 1 per run: {k * (s1 + s2) / (s1 + k * s2):.1f}x (from the rows above)")
    if len(results) == 2:
        (b, before), (a, after) = results.items()
        lines.append(f"after / before: fresh {after['fresh_wall'] / before['fresh_wall']:.2f}x, "
                     f"stage 1 reused {after['reuse_wall'] / before['reuse_wall']:.2f}x")
    write_table(args.out, lines)


if __name__ == "__main__":
    main()
