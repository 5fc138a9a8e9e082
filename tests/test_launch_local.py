"""--cluster local with GPUs (one run per GPU, pinned by CUDA_VISIBLE_DEVICES) and the one-process-per-run rule."""

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import submitit

from da.launch import load_sweep, submit_sweep
from da.launch import submit as submit_module
from da.launch.local import LOCAL_TIMEOUT_MIN, local_gpus, map_one_per_gpu
from da.launch.submit import RunJob, load_profile
from da.rundir import SUBMITTED_FILE


@pytest.mark.parametrize("text, key", [("tasks_per_node: 2\n", "tasks_per_node"), ("nodes: 4\n", "nodes"),
                                       ("nodes: 1\ntasks_per_node: 8\n", "tasks_per_node")])
def test_profiles_asking_for_several_processes_per_run_are_refused(tmp_path, text, key):
    path = tmp_path / "multi.yaml"
    path.write_text("partition: gpu\n" + text)
    message = (f"multi-process training is not supported yet; set tasks_per_node: 1 and nodes: 1 in profile "
               f"{path}")
    with pytest.raises(ValueError, match=f"profile {path}: {key}") as info:
        load_profile(str(path))
    assert message in str(info.value)
    sweep = load_sweep(_sweep_file(tmp_path))
    with pytest.raises(ValueError, match="multi-process training is not supported yet"):
        submit_sweep(sweep, cluster="slurm", profile=str(path), dry_run=True, out=str(tmp_path / "runs"))
    path.write_text("partition: gpu\nnodes: 1\ntasks_per_node: 1\n")
    assert load_profile(str(path))["tasks_per_node"] == 1


@pytest.mark.parametrize("env, expected", [("0,2", ["0", "2"]), (" 3 ", ["3"]), ("", []), ("1,-1,2", ["1"]),
                                           ("GPU-8f3e,GPU-11aa", ["GPU-8f3e", "GPU-11aa"])])
def test_local_gpus_follow_cuda_visible_devices(monkeypatch, env, expected):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
    assert local_gpus() == expected


def test_local_gpus_without_cuda_visible_devices_are_those_torch_sees(monkeypatch):
    import torch

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert local_gpus() == ["0", "1", "2"]


def test_each_local_job_sees_only_its_own_gpu(tmp_path):
    # real submitit local jobs (no GPU needed): each reports the CUDA_VISIBLE_DEVICES it was started with
    gpus = ["3", "GPU-4c1e"]
    jobs = map_one_per_gpu(tmp_path / "%j", {"timeout_min": 5}, gpus, os.getenv, ["CUDA_VISIBLE_DEVICES"] * 3,
                           poll_s=0.1)
    seen = [job.result() for job in jobs]
    assert seen[:2] == gpus and seen[2] in gpus


class _FakeJob:
    """A job that reports done after ``polls`` calls of done(): a clock that advances as the caller polls."""

    def __init__(self, n, polls):
        self.job_id, self.polls = str(1000 + n), polls
        self.paths = SimpleNamespace(stdout=Path(f"/logs/{n}.out"), stderr=Path(f"/logs/{n}.err"))

    def done(self):
        self.polls -= 1
        return self.polls < 0

    def result(self):  # waits for the end, as a real job's does
        self.polls = -1
        return "ok"


class _FakeExecutor:
    submitted: list = []

    def __init__(self, folder):
        self.folder, self.params = folder, {}

    def update_parameters(self, **params):
        self.params.update(params)

    def submit(self, fn, *args):
        busy = {s["params"]["visible_gpus"] for s in self.submitted if not s["job"].done()}
        gpu = self.params["visible_gpus"]
        assert gpu not in busy, f"a second job on GPU {gpu}"
        n = len(self.submitted)
        job = _FakeJob(n, polls=[2, 0, 5, 1][n % 4])
        self.submitted.append({"params": dict(self.params), "fn": fn, "args": args, "job": job})
        return job


def test_one_job_per_gpu_at_a_time_and_all_jobs_run(monkeypatch):
    monkeypatch.setattr(_FakeExecutor, "submitted", [])
    jobs = map_one_per_gpu("/f/%j", {"timeout_min": 30, "gpus_per_node": 4}, ["0", "1", "2"], max, range(7),
                           range(7), poll_s=0, executor_class=_FakeExecutor)
    subs = _FakeExecutor.submitted
    assert [s["args"] for s in subs] == [(i, i) for i in range(7)] and jobs == [s["job"] for s in subs]
    assert [s["params"]["visible_gpus"] for s in subs[:3]] == [(0,), (1,), (2,)]
    for s in subs:  # one GPU each, whatever the profile asked; the other settings kept
        assert s["params"]["gpus_per_node"] == 1 and s["params"]["timeout_min"] == 30
        assert s["params"]["visible_gpus"] in {(0,), (1,), (2,)} and "setup" not in s["params"]


def _sweep_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    base = dict(weights="none", img_size=32, batch_size=8, epochs=1, stage1_epochs=1, max_steps_per_epoch=2,
                num_workers=0, val_fraction=0.25)
    path.write_text(f"base: {json.dumps(base)}\ngrid: {{stages: [1, 2], method: [source_only, coral]}}\nseeds: [0]\n")
    return path


def test_local_sweep_on_a_machine_with_gpus_pins_every_run(monkeypatch, tmp_path):
    monkeypatch.setattr(_FakeExecutor, "submitted", [])
    monkeypatch.setattr(submitit, "LocalExecutor", _FakeExecutor)
    monkeypatch.setattr(submit_module, "local_gpus", lambda: ["0", "1"])
    monkeypatch.setattr(submit_module, "map_one_per_gpu",
                        lambda *a, **k: map_one_per_gpu(*a, **k, poll_s=0))
    sweep = load_sweep(_sweep_file(tmp_path))
    out = tmp_path / "runs"
    summary = submit_sweep(sweep, cluster="local", out=str(out), progress=False)
    subs = _FakeExecutor.submitted
    assert (summary["submit_stage1"], summary["submit_stage2"]) == (1, 4) and len(subs) == 5
    assert [s["args"][1] for s in subs] == [1, 2, 2, 2, 2] and all(isinstance(s["fn"], RunJob) for s in subs)
    for s in subs:
        assert s["params"]["visible_gpus"] in {(0,), (1,)} and s["params"]["gpus_per_node"] == 1
        assert s["params"]["timeout_min"] == LOCAL_TIMEOUT_MIN  # not submitit's 2-minute local default
    recorded = sorted(json.loads(p.read_text())["job_id"] for p in out.glob(f"*/{SUBMITTED_FILE}"))
    assert recorded == sorted(s["job"].job_id for s in subs)


def test_every_task_submits_through_the_one_launcher(monkeypatch, tmp_path):
    """Issue 28: sweeps, detection sweeps and HPO workers go out through da.launch.submit.Launcher; no other
    module makes a submitit executor, so local GPU pinning and Slurm dependencies reach every task."""
    import da

    makers = [p.relative_to(Path(da.__file__).parent).as_posix() for p in Path(da.__file__).parent.rglob("*.py")
              if "AutoExecutor(" in p.read_text()]
    assert makers == ["launch/submit.py"]
    monkeypatch.setattr(_FakeExecutor, "submitted", [])
    monkeypatch.setattr(submitit, "LocalExecutor", _FakeExecutor)
    monkeypatch.setattr(submit_module, "local_gpus", lambda: ["3"])
    monkeypatch.setattr(submit_module, "map_one_per_gpu", lambda *a, **k: map_one_per_gpu(*a, **k, poll_s=0))
    launcher = submit_module.Launcher(tmp_path / "%j", "local", {"timeout_min": 7}, name="x")
    assert launcher.gpus == ["3"] and launcher.executor is None  # nothing made before the first submission
    launcher.map(max, [1, 2], [0, 5])
    assert [(s["args"], s["params"]["visible_gpus"]) for s in _FakeExecutor.submitted] == [((1, 0), (3,)), ((2, 5), (3,))]
    # a profile that asks for no GPU keeps submitit's own executor, whatever GPUs the machine has
    assert submit_module.Launcher(tmp_path / "%j", "local", {"gpus_per_node": 0}, name="x").gpus == []
