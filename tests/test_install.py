"""The package as a user installs it, not the checkout: a non-editable install into a fresh virtual environment,
its console scripts run from another directory; and the git commit a run records.

The slow test builds a wheel from a copy of what setup.cfg packages (so nothing is built inside the checkout),
installs it without dependencies into a new venv (offline: --no-index), and lets that venv find the current
environment's dependencies through a .pth file of plain paths, which puts them on sys.path without processing
their own .pth files (so the editable install of the checkout stays invisible there)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from da import __version__, records


# ------------------------------------------------------------------------------------------------ git_commit
def _git(cwd: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True,
                          timeout=30).stdout.strip()


def _repo_with_a_commit(path: Path) -> str:
    path.mkdir(parents=True, exist_ok=True)
    _git(path, "init", "-q", ".")
    _git(path, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "--allow-empty", "-m", "x")
    return _git(path, "rev-parse", "HEAD")


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="no git program")


@needs_git
def test_git_commit_names_the_checkout_it_runs_from():
    if not (REPO / ".git").exists() or Path(records.__file__).resolve().parent.parent != REPO:
        pytest.skip("not a git checkout, or da imported from an install rather than from it")
    assert records.git_commit().removesuffix("-dirty") == _git(REPO, "rev-parse", "HEAD")


@needs_git
def test_git_commit_of_an_installed_copy_never_names_another_repository(tmp_path, monkeypatch):
    other = tmp_path / "someone_elses_repo"
    _repo_with_a_commit(other)
    # site-packages inside an unrelated repository (a venv in a project), and a da/ at a repository's root that
    # the repository does not track: neither is the code's own commit
    for fake in (other / "venv" / "lib" / "python3" / "site-packages" / "da" / "records.py",
                 other / "da" / "records.py"):
        fake.parent.mkdir(parents=True, exist_ok=True)
        fake.write_text("")
        monkeypatch.setattr(records, "__file__", str(fake))
        assert records.git_commit() == f"unknown (installed da {__version__}, not run from a git checkout)"


# ------------------------------------------------------------------------------------------------ the install
PACKAGED = ("setup.cfg", "pyproject.toml", "README.md", "da")  # what building the distribution reads


def _install(tmp: Path) -> tuple[Path, dict[str, str]]:
    """A fresh venv with ``da`` installed from a wheel, its dependencies those of the running environment."""
    src = tmp / "src"
    src.mkdir()
    for name in PACKAGED:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run(pip + ["wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "wheel"),
                          str(src)], check=True, timeout=300)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # the current pip installs into the new venv (which has none), before the dependencies are visible there
    subprocess.run(pip + ["--python", str(python), "install", "-q", "--no-deps", "--no-index",
                          *map(str, (tmp / "wheel").glob("da-*.whl"))], check=True, timeout=300)
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    deps = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]
    (purelib / "_da_test_deps.pth").write_text("".join(f"{p}\n" for p in deps))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return venv, env


@pytest.mark.slow
def test_non_editable_install_runs_from_another_directory(real_root, tmp_path):
    # the venv lies inside an unrelated git repository: a record must not name that repository's commit
    other_commit = _repo_with_a_commit(tmp_path) if shutil.which("git") else None
    venv, env = _install(tmp_path)
    work = tmp_path / "work"  # not the checkout: nothing may come from it
    work.mkdir()

    def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], cwd=work, env=env, capture_output=True,
                              text=True, timeout=timeout)

    where = cli("python", "-c", "import da, da.launch.sweep as s, da.launch.submit as p; "
                                "print(da.__file__); print(s.SWEEPS_DIR); print(p.PROFILES_DIR)")
    assert where.returncode == 0, where.stderr
    package, sweeps, profiles = map(Path, where.stdout.split())
    assert package.is_relative_to(venv) and not package.is_relative_to(REPO), package
    assert {p.name for p in sweeps.glob("*.yaml")} == {p.name for p in (REPO / "da/launch/sweeps").glob("*.yaml")}
    assert {p.name for p in profiles.glob("*.yaml")} == {"gpu.yaml", "local.yaml"}

    # da-run: a smoke run on the real data, one stage and one epoch, no cache or compilation (about a minute)
    out = tmp_path / "runs"
    res = cli("da-run", "--preset", "smoke", "--method", "coral", "--stages", "1", "--epochs", "1",
              "--cache-views", "0", "--compile-prefix", "false", "--progress", "false",
              "--data-root", str(real_root), "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    record_path = Path(res.stdout.strip().splitlines()[-1])
    assert record_path.is_file() and record_path.is_relative_to(out), res.stdout[-2000:]
    record = json.loads(record_path.read_text())
    assert record["config"]["method"] == "coral" and record["stage"] == 2
    assert 0.0 <= record["target_test"]["accuracy"] <= 1.0 and record["target_test"]["n"] > 0
    assert record["git_commit"] == f"unknown (installed da {__version__}, not run from a git checkout)"
    if other_commit:
        assert other_commit not in record["git_commit"]

    # da-sweep: the shipped sweep and profile by name, planned from here
    from da.launch import load_sweep

    main = load_sweep("main")  # the checkout's copy, to count what the installed one must plan
    n_runs = len(main.configs()) + len(main.stage1_configs())
    res = cli("da-sweep", "--sweep", "main", "--profile", "local", "--cluster", "slurm", "--dry-run",
              "--out", str(tmp_path / "sweep_runs"), "--data-root", str(real_root))
    assert res.returncode == 0, res.stderr[-3000:]
    planned = [line for line in res.stdout.splitlines() if "sweep_runs/stage" in line]
    assert len(planned) == n_runs and all(" missing " in line for line in planned), res.stdout[:3000]
    assert f"total: 0 done, 0 queued, 0 partial, 0 failed, {n_runs} missing" in res.stdout
    assert f"would submit {len(main.stage1_configs())} stage-1 and {len(main.configs())} stage-2 runs" in res.stdout
    assert "#SBATCH --partition=debug" in res.stdout and "export OMP_NUM_THREADS=1" in res.stdout
    res = cli("da-sweep", "--sweep", "nope", "--dry-run")
    assert res.returncode == 2 and "known sweeps: ablation" in res.stderr and "path of a sweep YAML" in res.stderr
    # da-detect: the shipped detection sweep by name
    res = cli("da-detect", "--sweep", "det_nwpu", "--cluster", "debug", "--dry-run", "--out", str(tmp_path / "det"))
    assert res.returncode == 0 and "would submit 12 of 12 runs" in res.stdout, res.stderr[-3000:]

    # da-tables: its help, and the tables of the committed test records
    res = cli("da-tables", "--help")
    assert res.returncode == 0 and "Regenerate the ablation tables" in res.stdout, res.stderr
    res = cli("da-tables", "--runs", str(REPO / "tests" / "data" / "records"), "--out", str(tmp_path / "results"),
              "--no-figures")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "results" / "tables" / "ablation.md").is_file()
