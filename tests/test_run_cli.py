"""experiments/run.py as a user runs it: flags, errors, the printed record path, SIGTERM and resume."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


from conftest import REPO

RUN = [sys.executable, str(REPO / "experiments" / "run.py")]
TINY = ["--weights", "none", "--img-size", "32", "--batch-size", "8", "--stage1-epochs", "1", "--num-workers", "0",
        "--progress", "false", "--val-fraction", "0.25", "--eval-batch-size", "64"]


def run(args, **kw):
    return subprocess.run(RUN + args, capture_output=True, text=True, cwd=REPO, timeout=600, **kw)


def test_help_documents_every_flag():
    out = run(["--help"]).stdout
    for flag in ("--method", "--cls-loss", "--source", "--target", "--stage1", "--stages", "--backbone", "--weights",
                 "--strategy", "--epochs", "--batch-size", "--lr", "--img-size", "--seed", "--data-root", "--out",
                 "--config", "--preset", "--source-sampling"):
        assert flag in out
    flat = " ".join(out.split())
    assert "(default: coral)" in flat and "(default: partial:3)" in flat and "(default: '')" in flat
    assert "smoke = --img-size=64" in flat and "{" not in flat.split("--preset PRESET")[2].split("--print-config")[0]
    assert "(default: None)" not in flat  # a flag's default is the config's, never argparse's placeholder


@pytest.mark.parametrize("args,message", [
    (["--method", "nope"], "--method 'nope' is not valid; choose from source_only, aad, adabn, cbst, cdan, coral, dann"),
    (["--cls-loss", "hinge"], "--cls-loss 'hinge' is not valid; choose from 'ce', 'focal', 'ohem'"),
    (["--strategy", "half"], "--strategy 'half' is not valid; choose from full, linear, gradual, partial:K"),
    (["--stages", "3"], "--stages 3 is not valid"),
    (["--source", "ImageNet", "--data-root", "/nonexistent"], "unknown dataset 'ImageNet'; known datasets: AID"),
])
def test_bad_values_fail_at_once_with_valid_choices(args, message, tmp_path):
    res = run(args + ["--out", str(tmp_path)])
    assert res.returncode != 0 and message in res.stderr
    assert not list(tmp_path.glob("stage*/checkpoint.pt"))  # nothing trained


@pytest.mark.slow  # an end-to-end run: the default suite stays under 10 minutes on 2 slow cores
def test_config_file_and_record_path_last_line(tiny_root, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: mmd\nepochs: 1\nmax_steps_per_epoch: 2\nstages: 1\n")
    res = run(["--config", str(cfg), "--data-root", str(tiny_root), "--out", str(tmp_path / "runs")] + TINY)
    assert res.returncode == 0, res.stderr
    record = Path(res.stdout.strip().splitlines()[-1])
    rec = json.loads(record.read_text())
    assert rec["config"]["method"] == "mmd" and rec["config"]["stages"] == 1 and len(rec["epochs"]) == 1
    # the line before says how the run went, from the record
    said = res.stdout.strip().splitlines()[-2]
    assert said.startswith("stage 2: epoch 1 of 1 selected by source_acc; source-val accuracy ")
    assert f"target-test accuracy {100 * rec['target_test']['accuracy']:.1f} %" in said
    assert said in (record.parent / "log.txt").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("methd: mmd\n")
    res = run(["--config", str(bad)])
    assert res.returncode != 0 and "unknown field(s) methd" in res.stderr


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR2, signal.SIGKILL])
def test_signal_then_same_command_resumes_bit_identically(tiny_root, tmp_path, sig):
    args = ["--method", "coral", "--stages", "1", "--epochs", "6", "--data-root", str(tiny_root)] + TINY
    ref = run(args + ["--out", str(tmp_path / "ref")])
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "cut"
    proc = subprocess.Popen(RUN + args + ["--out", str(out)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("stage2-*/checkpoint.pt")):
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    run_dir = next(out.glob("stage2-*"))
    if (run_dir / "DONE").exists():
        pytest.fail("the run finished before the signal arrived; make it longer")
    assert proc.returncode != 0
    if sig != signal.SIGKILL:
        assert "rerun the same command to resume" in err
    res = run(args + ["--out", str(out)])
    assert res.returncode == 0, res.stderr
    a = json.loads(Path(res.stdout.strip().splitlines()[-1]).read_text())
    b = json.loads(Path(ref.stdout.strip().splitlines()[-1]).read_text())
    assert a["resumed"] == 1
    timings = ("train_s", "validation_s")  # seconds differ from run to run; everything else must not
    assert [{k: v for k, v in e.items() if k not in timings} for e in a["epochs"]] == \
        [{k: v for k, v in e.items() if k not in timings} for e in b["epochs"]]
    assert a["target_test"] == b["target_test"] and a["selected_epoch"] == b["selected_epoch"]


def test_a_flag_prefix_is_not_taken_for_a_flag(capsys):
    """--epoch 2 used to be read as --epochs 2 (argparse's prefix matching): a typo must fail, not guess."""
    from da.cli import config_from_args

    with pytest.raises(SystemExit):
        config_from_args(["--epoch", "2"], "x")
    assert "unrecognized arguments: --epoch 2" in capsys.readouterr().err
    assert config_from_args(["--epochs", "2"], "x").epochs == 2
