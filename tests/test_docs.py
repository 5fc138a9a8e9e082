"""The documentation's commands (issue 31): every fenced shell command of README.md, docs/ and results/README.md
that calls one of the project's programs names a program that exists and only flags that program has."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "results" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SCRIPTS = {f"da-{name}": name for name in ("run", "sweep", "tables", "hpo", "predict", "evaluate", "export", "detect")}


def commands() -> dict[str, set[str]]:
    """program (a path under the repo, or a console script) -> every flag the pages pass to it."""
    found: dict[str, set[str]] = {}
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
            text = re.sub(r"\\\n\s*", " ", block)  # continuation lines
            for part in re.split(r"&&|;|\||\n|\bdo\b|\bdone\b", text):
                words = part.split("#")[0].split()
                if len(words) >= 2 and words[0] == "python" and words[1].startswith("experiments/"):
                    program, args = words[1], words[2:]
                elif words and words[0] in SCRIPTS:
                    program, args = words[0], words[1:]
                else:
                    continue
                found.setdefault(program, set()).update(a.split("=")[0] for a in args if re.fullmatch(r"--[a-z][\w-]*(=.*)?", a))
    return found


def test_the_pages_have_commands():
    found = commands()
    assert {"experiments/run.py", "experiments/sweep.py", "experiments/tables.py"} <= set(found)


@pytest.mark.slow  # one --help per program: about 40 s in all
@pytest.mark.parametrize("program,flags", sorted(commands().items()))
def test_every_documented_command_names_a_program_and_flags_it_has(program, flags):
    if program in SCRIPTS:  # a console script: its da.scripts module's main
        call = ["-c", f"import sys; from da.scripts.{SCRIPTS[program]} import main; sys.exit(main(['--help']))"]
    else:
        assert (REPO / program).exists(), f"the docs call {program}, which does not exist"
        call = [program, "--help"]
    res = subprocess.run([sys.executable, *call], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    known = set(re.findall(r"--[a-z][\w-]*", res.stdout))
    assert flags <= known, f"{program}: the docs pass {sorted(flags - known)}, which --help does not list"


def _bench_smoke():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_smoke", REPO / "experiments" / "bench_smoke.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_quickstart_and_detection_pages_have_smoke_commands():
    assert _bench_smoke().smoke_commands() == ["python experiments/run.py --preset smoke",
                                                "python experiments/detect.py --preset smoke"]


@pytest.mark.slow  # both smoke paths on the real images, fresh and reused: a few minutes on 2 cores
@pytest.mark.parametrize("command", _bench_smoke().smoke_commands())
def test_smoke_commands_run_as_written(command, real_root, tmp_path):
    """Each `--preset smoke` command of the Quickstart and docs/detection.md, as written (its runs under a
    temporary --out), ends with the path of a finished record; run again, it finds the same run."""
    import json
    import os

    bench = _bench_smoke()
    env = {**os.environ, "DA_DATA_ROOT": str(real_root), "DA_CACHE_DIR": str(tmp_path / "cache")}
    _, res = bench.run(command, tmp_path / "runs", env)
    assert res.returncode == 0, res.stderr[-3000:]
    record = Path(res.stdout.strip().splitlines()[-1])
    assert record.is_file() and (record.parent / "DONE").is_file() and json.loads(record.read_text())["config_hash"]
    _, again = bench.run(command, tmp_path / "runs", env)
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == str(record)
