"""One writer per run directory: twin launches of one config, and sweeps that repeat an entry."""

import json
import subprocess
import sys

import pytest

from conftest import REPO
from da.launch import load_sweep


@pytest.mark.slow  # an end-to-end run: the default suite stays under 10 minutes on 2 slow cores
def test_twin_launches_train_once_and_agree(tiny_root, tmp_path):
    args = [sys.executable, str(REPO / "experiments" / "run.py"), "--data-root", str(tiny_root), "--out",
            str(tmp_path), "--weights", "none", "--img-size", "32", "--batch-size", "8", "--epochs", "2",
            "--stages", "1", "--max-steps-per-epoch", "2", "--num-workers", "0", "--progress", "false",
            "--val-fraction", "0.25", "--method", "coral"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    paths = [o.strip().splitlines()[-1] for o, _ in outs]
    assert paths[0] == paths[1]
    logs = "".join(e for _, e in outs)
    assert logs.count("waiting for it to finish") == 1 and "finished while this process waited" in logs
    rec = json.loads(open(paths[0]).read())
    assert rec["resumed"] == 0 and len(rec["epochs"]) == 2  # trained once, from the start


def test_sweep_collapses_repeated_entries(tmp_path):
    sweep = tmp_path / "dup.yaml"
    sweep.write_text("grid: {method: [coral, coral, mmd]}\nseeds: [0, 0, 1]\n")
    configs = load_sweep(sweep).configs()
    assert [(c.method, c.seed) for c in configs] == [("coral", 0), ("coral", 1), ("mmd", 0), ("mmd", 1)]
    assert len({c.config_hash() for c in configs}) == 4


# parallel processes training whole runs: with the slow tests (the twin-launch test keeps the lock in the fast suite)
@pytest.mark.slow
def test_stage2_runs_sharing_a_stage1_start_from_its_final_model(tiny_root, tmp_path):
    """Two stage-2 runs launched together share one stage 1: one trains it, the other waits for it to be
    done, and both start from its final best model (not from an earlier epoch's)."""
    from da.config import RunConfig, stage1_config
    from da.rundir import BEST_FILE, run_dir_for
    from da.utils.io import file_digest

    common = ["--data-root", str(tiny_root), "--out", str(tmp_path), "--weights", "none", "--img-size", "32",
              "--batch-size", "8", "--epochs", "1", "--stage1-epochs", "3", "--max-steps-per-epoch", "2",
              "--num-workers", "0", "--progress", "false", "--val-fraction", "0.25"]
    procs = [subprocess.Popen([sys.executable, str(REPO / "experiments" / "run.py"), *common, "--method", m],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for m in ("coral", "mmd")]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    cfg = RunConfig(data_root=str(tiny_root), out=str(tmp_path), weights="none", img_size=32, batch_size=8,
                    stage1_epochs=3, max_steps_per_epoch=2, val_fraction=0.25)
    best = file_digest(run_dir_for(stage1_config(cfg), 1) / BEST_FILE)
    for out, _ in outs:
        rec = json.loads(open(out.strip().splitlines()[-1]).read())
        assert rec["inputs"]["init_weights"] == best


def test_missing_data_root_creates_nothing(tmp_path):
    res = subprocess.run([sys.executable, str(REPO / "experiments" / "run.py"), "--data-root", str(tmp_path / "none"),
                          "--out", str(tmp_path / "runs"), "--stages", "1"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "error: dataset AID: folder" in res.stderr and str(tmp_path / "none") in res.stderr
    assert not (tmp_path / "runs").exists()


def test_a_signal_that_ends_the_job_during_a_write_is_handled_after_it(tmp_path):
    """Preemption may come at any moment: submitit's handler requeues and raises SystemExit from whatever line
    runs. Inside torch.save that failed the job; now the write completes first, then the handler runs."""
    import os
    import signal

    import torch

    from da.utils.io import atomic_write

    events = []

    def submitit_like(signum, frame):
        events.append(("handled", (tmp_path / "x.pt").exists()))
        raise SystemExit(-1)

    def write(f):
        os.kill(os.getpid(), signal.SIGUSR2)  # preempted in the middle of the write
        events.append("writing")
        torch.save({"w": torch.arange(1000)}, f)

    old = signal.signal(signal.SIGUSR2, submitit_like)
    try:
        with pytest.raises(SystemExit):
            atomic_write(tmp_path / "x.pt", write, mode="wb")
        assert signal.getsignal(signal.SIGUSR2) is submitit_like  # the job's handler is back in place
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert events == ["writing", ("handled", True)]
    assert torch.equal(torch.load(tmp_path / "x.pt")["w"], torch.arange(1000))
