"""slurm/local/start.sh and stop.sh without a cluster: package detection, the install path and the ERR trap.

These need neither root nor network nor Slurm: a package list with a name that does not exist exercises the
not-installed path (the one a brand-new machine takes), and a stub apt-get on PATH stops the install step.
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
START = REPO / "slurm" / "local" / "start.sh"
STOP = REPO / "slurm" / "local" / "stop.sh"

pytestmark = pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs dpkg-query (Debian/Ubuntu)")


def run(script: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_check_reports_a_missing_package_and_keeps_going(tmp_path: Path) -> None:
    # bash is installed on any Debian; the other name is not a package at all, so dpkg-query exits 1
    out = run(START, "--check", env={"DA_SLURM_STATE": str(tmp_path / "state"),
                                     "DA_SLURM_PKGS": "bash no-such-package-da-test"})
    assert out.returncode == 0, out.stderr
    assert "[slurm-local] missing: no-such-package-da-test\n" in out.stdout
    if os.geteuid() == 0:
        assert "would install: no-such-package-da-test\n" in out.stdout
    else:
        assert "would stop: not root, cannot install no-such-package-da-test\n" in out.stdout


def test_check_reports_nothing_missing_when_all_are_installed(tmp_path: Path) -> None:
    out = run(START, "--check", env={"DA_SLURM_STATE": str(tmp_path / "state"), "DA_SLURM_PKGS": "bash coreutils"})
    assert out.returncode == 0, out.stderr
    assert "[slurm-local] missing: none" in out.stdout


def test_missing_package_reaches_the_install_step(tmp_path: Path) -> None:
    """The regression of issue 12: detection used to end the script silently before it could install."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "apt-calls"
    # a stub apt-get that records its arguments and fails, so nothing is installed and no network is used
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$@" >>{calls}\necho "stub apt-get: no network" >&2\nexit 100\n')
    (bin_dir / "apt-get").chmod(0o755)
    out = run(START, env={"DA_SLURM_STATE": str(tmp_path / "state"), "DA_SLURM_PKGS": "bash no-such-package-da-test",
                          "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert out.returncode == 1
    if os.geteuid() != 0:
        assert "packages missing (no-such-package-da-test) and not root" in out.stderr
        return
    assert "installing no-such-package-da-test" in out.stdout
    installs = [line for line in calls.read_text().splitlines() if line.startswith("install")]
    assert installs and all("no-such-package-da-test" in line for line in installs)
    assert "apt-get install failed" in out.stderr and "stub apt-get: no network" in out.stderr


def test_an_unexpected_failure_names_its_line_and_command(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the state folder should be\n")
    out = run(START, "--check", env={"DA_SLURM_STATE": str(blocker)})
    assert out.returncode != 0
    assert "[slurm-local] ERROR: " in out.stderr and "start.sh:" in out.stderr
    assert '`mkdir -p "$STATE"` exited with status 1' in out.stderr


def test_unknown_argument_is_refused(tmp_path: Path) -> None:
    out = run(START, "--bogus", env={"DA_SLURM_STATE": str(tmp_path / "state")})
    assert out.returncode == 2 and "unknown argument '--bogus'" in out.stderr


def test_stop_without_state_is_a_no_op(tmp_path: Path) -> None:
    out = run(STOP, env={"DA_SLURM_STATE": str(tmp_path / "none")})
    assert out.returncode == 0 and "nothing to stop" in out.stdout


def test_a_state_folder_below_a_private_folder_is_refused_with_the_fix(tmp_path: Path) -> None:
    """munged refuses a socket below a folder other users cannot traverse (a checkout under a 0700 home):
    start.sh says which folder and what to do, before it starts anything."""
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    out = run(START, env={"DA_SLURM_STATE": str(private / "checkout" / "state"), "DA_SLURM_PKGS": "bash coreutils"})
    assert out.returncode == 1
    assert "munged refuses a socket below" in out.stderr and "chmod o+x" in out.stderr
    assert "DA_SLURM_STATE=/tmp/da-slurm-$USER" in out.stderr
