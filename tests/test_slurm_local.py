"""Smoke tests against a real Slurm (slurm/local/start.sh): submitit arrays, sacct, failures, requeue.

Run with the cluster started:
    source slurm/local/state/env.sh && python -m pytest -m slurm tests/test_slurm_local.py
"""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit
from submitit.core.utils import FailedJobError

pytestmark = pytest.mark.slurm

# Jobs unpickle these functions in a fresh interpreter that cannot import this test module (tests/ is not
# on its path), so ship them by value instead of by reference.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _sinfo_problem() -> str | None:
    """Why the cluster is unusable, or None."""
    if not os.environ.get("SLURM_CONF"):
        return "SLURM_CONF is unset; run slurm/local/start.sh and source slurm/local/state/env.sh"
    if not Path(os.environ["SLURM_CONF"]).is_file():
        return f"SLURM_CONF={os.environ['SLURM_CONF']} does not exist; run slurm/local/start.sh"
    if shutil.which("sinfo") is None:
        return "sinfo is not on PATH (Slurm client not installed)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%a %T"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "sinfo timed out after 10 s: slurmctld not reachable"
    if out.returncode != 0:
        return f"sinfo failed: {out.stderr.strip()}"
    if not any(line.startswith("up ") and "down" not in line and "drain" not in line
               for line in out.stdout.splitlines()):
        return f"no usable partition/node: {out.stdout.strip()!r}"
    return None


@pytest.fixture(scope="module")
def cluster() -> None:
    problem = _sinfo_problem()
    if problem:
        pytest.skip(f"local Slurm not reachable: {problem}")


@pytest.fixture
def executor(cluster, tmp_path: Path) -> submitit.AutoExecutor:
    ex = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm")
    # short limits: a broken cluster shows up as a test failure, not a hang
    ex.update_parameters(slurm_partition="debug", cpus_per_task=1, mem_gb=1, timeout_min=3,
                         slurm_array_parallelism=4)
    return ex


def _sacct_states(job_id: str, expected: int, timeout: float = 20) -> dict[str, str]:
    """JobID -> State for the allocations of job_id (array tasks expanded), once `expected` are final."""
    end = time.monotonic() + timeout
    while True:
        out = subprocess.run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "JobID,State"],
                             capture_output=True, text=True, check=True).stdout
        states = dict(line.split("|", 1) for line in out.splitlines() if line)  # "CANCELLED by 0" has spaces
        # slurmctld reports job ends to slurmdbd asynchronously; wait for the records to settle
        if len(states) >= expected and all(s not in ("PENDING", "RUNNING", "COMPLETING") for s in states.values()):
            return states
        if time.monotonic() > end:
            return states
        time.sleep(0.5)


def square_plus(x: int, y: int) -> int:
    return x * x + y


def boom(msg: str) -> None:
    raise ValueError(msg)


class Counter(submitit.helpers.Checkpointable):
    """Counts to `total`, one step per `step_s`; a checkpoint resubmits itself with the count reached."""

    def __init__(self, done: int = 0, restarts: int = 0) -> None:
        self.done = done
        self.restarts = restarts

    def __call__(self, total: int, step_s: float, progress: str) -> dict:
        started_at = self.done
        while self.done < total:
            time.sleep(step_s)
            self.done += 1
            Path(progress).write_text(f"{self.restarts} {self.done}")  # lets the test see it running
        return {"done": self.done, "started_at": started_at, "restarts": self.restarts}

    def checkpoint(self, total: int, step_s: float, progress: str) -> submitit.helpers.DelayedSubmission:
        # the state travels in the resubmitted callable, not in a path the job has to guess
        return submitit.helpers.DelayedSubmission(Counter(self.done, self.restarts + 1), total, step_s, progress)


@pytest.mark.timeout(90)
def test_map_array_results_and_sacct(executor):
    jobs = executor.map_array(square_plus, [0, 1, 2, 3], [10, 20, 30, 40])
    assert len({j.job_id.split("_")[0] for j in jobs}) == 1  # one array, four tasks
    assert [j.result() for j in jobs] == [10, 21, 34, 49]
    array_id = jobs[0].job_id.split("_")[0]
    states = _sacct_states(array_id, expected=4)
    assert states == {j.job_id: "COMPLETED" for j in jobs}, states


@pytest.mark.timeout(60)
def test_failure_is_failed_job_error(executor):
    job = executor.submit(boom, "deliberate failure")
    with pytest.raises(FailedJobError, match="deliberate failure"):
        job.result()
    assert _sacct_states(job.job_id, expected=1).get(job.job_id) == "FAILED"


@pytest.mark.timeout(90)
def test_checkpointable_interrupt_requeues_and_resumes(executor, tmp_path):
    progress = tmp_path / "progress"
    # submitit calls any signal a time-out when the limit is under 10 min (it keeps 10 min of margin);
    # 15 min makes the interrupt read as the preemption it is
    executor.update_parameters(timeout_min=15)
    job = executor.submit(Counter(), 30, 0.2, str(progress))
    end = time.monotonic() + 30
    while not (progress.exists() and int(progress.read_text().split()[1]) >= 3):
        assert time.monotonic() < end, f"job {job.job_id} never made progress (state {job.state})"
        time.sleep(0.2)
    job._interrupt()  # preemption: SIGTERM then USR2, as Slurm does
    out = job.result()
    assert out["restarts"] == 1, out
    assert out["started_at"] >= 3, out  # resumed from the checkpoint, not from scratch
    assert out["done"] == 30
    log = Path(job.paths.stdout).read_text() + Path(job.paths.stderr).read_text()  # both attempts (append)
    for line in ("this job is preempted", "Calling checkpoint method", f"Requeued job {job.job_id}"):
        assert line in log, log[-3000:]
