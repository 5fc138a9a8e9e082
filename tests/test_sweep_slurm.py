"""Sweeps submitted to a real Slurm (slurm/local/start.sh): arrays, stage dependencies, preemption and
requeue, resubmission of what is missing, cancellation.

    bash slurm/local/start.sh && . slurm/local/state/env.sh && python -m pytest -m slurm tests/test_sweep_slurm.py
"""

import json
import time

import pytest
import torch

from da import records
from da.launch import load_sweep, plan, submit_sweep
from da.config import RunConfig
from da.results import load_runs
from da.train import train_stage

from test_slurm_local import _sinfo_problem

pytestmark = pytest.mark.slurm

TINY = dict(weights="none", img_size=32, batch_size=8, epochs=2, stage1_epochs=1, max_steps_per_epoch=2,
            num_workers=0, val_fraction=0.25, eval_batch_size=64)


@pytest.fixture(scope="module")
def cluster():
    problem = _sinfo_problem()
    if problem:
        pytest.skip(f"local Slurm not reachable: {problem}")


def sweep_file(tmp_path, grid, seeds, **base):
    path = tmp_path / "tiny.yaml"
    path.write_text(f"base: {json.dumps({**TINY, **base})}\ngrid: {grid}\nseeds: {seeds}\n")
    return load_sweep(path)


def test_array_sweep_with_stage_dependency_then_resubmit_only_missing(cluster, tiny_root, tmp_path):
    sweep = sweep_file(tmp_path, "{stages: [1, 2], method: [source_only, coral]}", "[0, 1]")
    kw = dict(out=str(tmp_path / "runs"), data_root=str(tiny_root), progress=False)
    t0 = time.time()
    first = submit_sweep(sweep, cluster="slurm", profile="local", wait=True, **kw)
    wall = time.time() - t0
    print(f"tiny sweep of {len(first['jobs'])} array tasks: {wall:.1f} s")
    assert (first["submit_stage1"], first["submit_stage2"]) == (1, 8)
    runs = plan(sweep, **kw)
    assert [r.state for r in runs] == ["done"] * 9
    s1 = json.loads((runs[0].run_dir / records.RECORD_FILE).read_text())
    assert s1["launch"]["slurm_job_id"] and s1["launch"]["slurm_array_task_id"] is None
    for r in runs[1:]:
        rec = json.loads((r.run_dir / records.RECORD_FILE).read_text())
        assert rec["launch"]["slurm_array_job_id"] and rec["launch"]["slurm_array_task_id"] is not None
        if r.cfg.stages == 2:  # afterok: stage 2 started only once stage 1 had finished
            assert rec["started_at"] >= s1["finished_at"]
    # eight tasks finished close together: every record is whole and loads
    assert len(load_runs(tmp_path / "runs")) == 8
    # a lost result is the only thing a second submission sends
    victim = runs[3].run_dir
    (victim / records.DONE_FILE).unlink()
    (victim / records.RECORD_FILE).unlink()
    again = submit_sweep(sweep, cluster="slurm", profile="local", wait=True, **kw)
    assert (again["submit_stage1"], again["submit_stage2"], again["done"]) == (0, 1, 8)
    assert records.is_done(victim)


def _wait_for(predicate, timeout=300, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_preempted_task_requeues_and_resumes_bit_identically(cluster, tiny_root, tmp_path):
    sweep = sweep_file(tmp_path, "{stages: [1], method: [coral]}", "[0]", epochs=12)
    kw = dict(out=str(tmp_path / "runs"), data_root=str(tiny_root), progress=False)
    summary = submit_sweep(sweep, cluster="slurm", profile="local", **kw)
    job = summary["job_objects"][0]
    run_dir = plan(sweep, **kw)[0].run_dir
    _wait_for(lambda: (run_dir / "checkpoint.pt").exists(), what="the first epoch checkpoint")
    t_signal = time.time()
    job._interrupt()  # what Slurm's preemption/time-limit signal does: submitit calls checkpoint() and requeues
    job.result()
    print(f"preempted run finished {time.time() - t_signal:.1f} s after the signal")
    rec = json.loads((run_dir / records.RECORD_FILE).read_text())
    assert rec["resumed"] >= 1 and rec["launch"]["slurm_restart_count"] >= 1
    # the same config run here without interruption gives the same numbers (on as many threads as the
    # task had: the local profile gives each task one core, and CPU reductions depend on the thread count)
    cfg = RunConfig.from_dict(rec["config"]).replace(out=str(tmp_path / "ref"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = json.loads(train_stage(cfg, stage=2).read_text())
    finally:
        torch.set_num_threads(threads)
    strip = lambda r: [{k: v for k, v in e.items() if k not in ("train_s", "validation_s")}  # noqa: E731
                       for e in r["epochs"]]
    assert strip(rec) == strip(ref) and rec["target_test"] == ref["target_test"]


def test_cancelled_run_leaves_no_done_marker(cluster, tiny_root, tmp_path):
    sweep = sweep_file(tmp_path, "{stages: [1], method: [mmd]}", "[0]", epochs=40)
    kw = dict(out=str(tmp_path / "runs"), data_root=str(tiny_root), progress=False)
    job = submit_sweep(sweep, cluster="slurm", profile="local", **kw)["job_objects"][0]
    run_dir = plan(sweep, **kw)[0].run_dir
    _wait_for(lambda: (run_dir / "checkpoint.pt").exists(), what="a checkpoint")
    job.cancel()
    _wait_for(lambda: job.state.startswith("CANCELLED"), timeout=60, what="the cancellation")
    assert not records.is_done(run_dir)
    assert plan(sweep, **kw)[0].state == "partial"  # resubmitting resumes it
