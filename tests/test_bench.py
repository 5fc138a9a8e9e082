"""The benchmark scripts: they run where they are meant to (the GPU one on the CPU too) and report what
their tables claim.  Their numbers are recorded in results/benchmarks/, never asserted as timings here."""

import importlib.util
import re
import subprocess
import sys

import pytest
import torchvision

from conftest import REPO


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_flops_per_image_match_the_published_resnet50_count():
    """ResNet-50 at 224 px is 4.09 GMAC forward (torchvision's model card: 4.09 'GFLOPS' counting
    multiply-adds), so a training image is 3 x 2 x 4.09 = 24.5 GFLOP, the figure the issue gives."""
    gpu = _script("bench_gpu")
    import torch

    flops = gpu.forward_flops(torchvision.models.resnet50(weights=None), 224, torch.device("cpu"))
    assert 3 * flops / 1e9 == pytest.approx(24.5, rel=0.01)


def test_workers_follow_the_allocation(monkeypatch):
    gpu = _script("bench_gpu")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "7")
    assert gpu.workers_available() == 7
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    import os

    assert gpu.workers_available() == len(os.sched_getaffinity(0))


@pytest.mark.slow  # an end-to-end run: the default suite stays under 10 minutes on 2 slow cores
def test_gpu_script_runs_end_to_end_on_the_cpu(tiny_root, tmp_path):
    out = tmp_path / "gpu.txt"
    res = subprocess.run([sys.executable, str(REPO / "experiments" / "bench_gpu.py"), "--model", "resnet18",
                          "--img-size", "32", "--batch", "4", "--steps", "1", "--warmup", "1", "--precisions", "fp32",
                          "bf16", "--compile", "off", "--data-root", str(tiny_root), "--pipeline-batches", "2",
                          "--peak-tflops", "1", "--det-size", "96", "--det-batch", "1", "--det-repeats", "1",
                          "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    text = out.read_text()
    det = {line[:36].strip(): line[36:].split() for line in text.splitlines()
           if line.startswith(("default sampler", "fitted anchors", "OHEM", "focal box loss"))}
    assert set(det) == {"default sampler, default anchors", "fitted anchors", "OHEM", "focal box loss"}
    assert det["default sampler, default anchors"][2] == "1.00x"  # the baseline against itself
    for s_step, ips, ratio in det.values():
        # batch 1; both printed rounded (images/s to 2 decimals): on a slow machine 0.23 stands for 0.2347
        assert float(ips) == pytest.approx(1 / float(s_step), rel=0.02, abs=0.006)
    assert re.search(r"^1\s+[\d.]+\s+[\d.]+$", text, re.M)  # inference at batch 1
    assert text == res.stdout
    rows = [line.split() for line in text.splitlines() if re.match(r"(fp32|bf16)\s", line)]
    assert [(r[0], r[1], r[2]) for r in rows] == [("fp32", "contiguous", "off"), ("fp32", "channels_last", "off"),
                                                 ("bf16", "contiguous", "off"), ("bf16", "channels_last", "off")]
    for r in rows:
        ips, share = float(r[3]), float(r[4].rstrip("%"))
        gflop = float(re.search(r"([\d.]+) GFLOP per training image", text).group(1))
        assert ips > 0 and share == pytest.approx(100 * ips * gflop / 1e3, rel=0.05, abs=0.05)
    assert re.search(r"pipeline\s+[\d.]+ img/s = [\d.]+x the fastest training variant", text)
    assert "torch " in text.splitlines()[1] and "bench_gpu.py --model resnet18" in text.splitlines()[2]


@pytest.mark.slow
def test_prefix_benchmark_reports_the_default_runtime_within_rounding(real_root, tmp_path):
    out = tmp_path / "prefix.txt"
    res = subprocess.run([sys.executable, str(REPO / "experiments" / "bench_prefix.py"), "--data-root", str(real_root),
                          "--batch", "16", "--repeats", "1", "--steps", "2", "--out", str(out)],
                         capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = {line[:42].strip(): line[42:].split() for line in out.read_text().splitlines()
            if line.startswith(("eager", "inductor", "contiguous", "channels_last"))}
    before, default = rows["eager fp32, contiguous (before)"], rows["inductor fp32, channels_last (default)"]
    assert float(before[3]) == 0 and float(before[4].rstrip("%")) == 0  # the baseline against itself
    assert float(default[3]) < 1e-3 and float(default[4].rstrip("%")) < 5  # float rounding, no more
    assert float(rows["inductor bf16, channels_last (not used)"][5]) > float(default[5])  # bf16 is coarser
    assert {"contiguous (before)", "channels_last (default)"} <= set(rows)


def test_epoch_benchmark_variants_carry_their_settings():
    import argparse

    epoch = _script("bench_epoch")
    args = argparse.Namespace(repeats=1, data_root="", cache_root="runs")
    cfg = epoch.config(args, "fixmatch+mcc:fixmatch_ema=0.99,fixmatch_strong=randaugment,fixmatch_relative=true")
    assert (cfg.method, cfg.fixmatch_ema, cfg.fixmatch_strong, cfg.fixmatch_relative) == (
        "fixmatch+mcc", 0.99, "randaugment", True)
    assert epoch.config(args, "aad+mcc").aad_k == 3  # the half_gap sweeps' settings
    from da.config import ConfigError

    with pytest.raises(ConfigError, match="--fixmatch-strong"):
        epoch.config(args, "fixmatch:fixmatch_strong=cutout")
