"""One writer per run directory: twin launches of one config, and sweeps that repeat an entry."""

import json
import subprocess
import sys

from conftest import REPO
from da.launch import load_sweep


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
