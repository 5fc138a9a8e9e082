"""The frozen-prefix cache: computed once, read back, and sliced for a split whose images it already holds."""

import logging

import pytest
import torch

from da.data.domains import Split, supervised_splits
from da.data.transforms import train_transform
from da.models import build_model
from da.train import cache
from da.train.cache import PrefixRuntime, _payload, cache_key, prefix_outputs


def _setup(tiny_root):
    torch.manual_seed(0)
    model = build_model("timm:tf_efficientnet_lite0", 30, weights="none").eval()
    full = supervised_splits("AID", tiny_root, 0.25, 0)["train"]
    sub = Split(full.dataset, full.folder, full.samples[::3], full.classes)
    return model, full, sub, train_transform(32, model.mean, model.std)


def test_subset_is_sliced_from_a_cache_that_holds_its_images(tiny_root, tmp_path, caplog):
    model, full, sub, tf = _setup(tiny_root)
    kw = dict(views=2, view_seed=0, device=torch.device("cpu"), batch_size=16)
    all_feats, hit = prefix_outputs(model, 3, full, tf, cache_dir=tmp_path / "a", **kw)
    assert not hit and all_feats.shape[:2] == (len(full), 2) and all_feats.dtype == torch.float16
    again, hit = prefix_outputs(model, 3, full, tf, cache_dir=tmp_path / "a", **kw)
    assert hit and torch.equal(again, all_feats)

    with caplog.at_level(logging.INFO, logger="da.train.cache"):
        sliced, hit = prefix_outputs(model, 3, sub, tf, cache_dir=tmp_path / "a", **kw)
    assert hit and "sliced" in caplog.text and torch.equal(sliced, all_feats[::3])
    direct, hit = prefix_outputs(model, 3, sub, tf, cache_dir=tmp_path / "b", **kw)  # an empty cache: computed
    assert not hit
    # each image's views are seeded by its path, so the slice is what a fresh computation gives
    assert torch.allclose(sliced.float(), direct.float(), atol=1e-2, rtol=1e-2)
    assert (sliced != direct).float().mean() < 1e-3


def test_no_slice_across_different_keys(tiny_root, tmp_path):
    model, full, sub, tf = _setup(tiny_root)
    kw = dict(device=torch.device("cpu"), batch_size=16, cache_dir=tmp_path)
    prefix_outputs(model, 3, full, tf, views=2, view_seed=0, **kw)
    assert not prefix_outputs(model, 3, sub, tf, views=1, view_seed=0, **kw)[1]  # other view count
    assert not prefix_outputs(model, 3, sub, tf, views=2, view_seed=1, **kw)[1]  # other view seed
    assert not prefix_outputs(model, 2, sub, tf, views=2, view_seed=0, **kw)[1]  # other prefix
    (tmp_path / "AID-junk.json").write_text("{not json")  # a damaged index is passed over, not fatal
    val = supervised_splits("AID", tiny_root, 0.25, 0)["val"]
    wider = Split(full.dataset, full.folder, sub.samples + val.samples[:1], full.classes)  # one image not cached
    assert not prefix_outputs(model, 3, wider, tf, views=2, view_seed=0, **kw)[1]


FAST = PrefixRuntime(channels_last=True, compile=True, legacy=False)


def test_compiled_prefix_matches_eager_fp32_to_rounding(tiny_root, tmp_path):
    """The default runtime (channels_last, inductor with frozen weights, padded last batch) computes what the
    eager fp32 prefix computes: float rounding apart, on every image, the padded ones of the last batch too."""
    model, full, _, tf = _setup(tiny_root)
    kw = dict(views=1, view_seed=0, device=torch.device("cpu"), batch_size=16)  # 16 does not divide the split
    assert len(full) % 16
    eager, _ = prefix_outputs(model, 3, full, tf, cache_dir=tmp_path, **kw)
    fast, hit = prefix_outputs(model, 3, full, tf, cache_dir=tmp_path, runtime=FAST, **kw)
    assert not hit, "the runtime is part of the key: the eager cache must not be read for it"
    assert fast.shape == eager.shape and fast.is_contiguous()
    assert (fast.float() - eager.float()).abs().max() <= 2e-3 * eager.float().abs().max()
    assert (fast != eager).float().mean() < 0.05  # a last-bit difference on a few float16 entries, no more
    assert len(list(tmp_path.glob("AID-*.pt"))) == 2


def test_legacy_runtime_keeps_the_earlier_cache_key(tiny_root):
    _, full, _, _ = _setup(tiny_root)
    legacy = _payload(full, "d", "t", 2, 0)
    assert "runtime" not in legacy and legacy["format"] == 1  # caches written before issue 15 are still found
    keys = {cache_key(full, "d", "t", 2, 0, r) for r in
            (PrefixRuntime(), FAST, PrefixRuntime(channels_last=True, legacy=False), PrefixRuntime(legacy=False))}
    assert len(keys) == 4


def test_prefix_falls_back_to_eager_where_inductor_cannot_compile(tiny_root, tmp_path, monkeypatch, caplog):
    model, full, _, tf = _setup(tiny_root)
    monkeypatch.setattr(cache, "inductor_works", lambda device_type: False)
    kw = dict(views=1, view_seed=0, device=torch.device("cpu"), batch_size=16)
    feats, _ = prefix_outputs(model, 3, full, tf, cache_dir=tmp_path, runtime=FAST, **kw)
    eager_cl, hit = prefix_outputs(model, 3, full, tf, cache_dir=tmp_path,
                                   runtime=PrefixRuntime(channels_last=True, legacy=False), **kw)
    assert hit and torch.equal(feats, eager_cl)  # stored under the runtime that computed it


def test_inductor_probe_reports_a_failing_compiler(monkeypatch, caplog):
    cache.inductor_works.cache_clear()

    def broken(*a, **k):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken)
    with caplog.at_level(logging.WARNING, logger="da.train.cache"):
        assert cache.inductor_works("cpu") is False
    assert "no C++ compiler found" in caplog.text and "runs eagerly" in caplog.text
    cache.inductor_works.cache_clear()


@pytest.mark.slow  # an end-to-end run: the default suite stays under 10 minutes on 2 slow cores
def test_compiling_for_the_cpu_prints_no_cuda_home_notice(tmp_path):
    """Issue 31: every CPU run printed torch's "No CUDA runtime is found, using CUDA_HOME=..." when inductor
    imported torch.utils.cpp_extension on a machine with a CUDA toolkit (here a fake nvcc) and no GPU."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    bin_dir = tmp_path / "cuda" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "nvcc").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "nvcc").chmod(0o755)
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=str(repo))

    def stderr_of(code: str) -> str:
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        return res.stderr

    # the notice this machine set-up provokes, so that its absence below means something
    assert "No CUDA runtime is found" in stderr_of("import torch.utils.cpp_extension")
    err = stderr_of("import logging\n"
                    "from da.train.cache import inductor_works\n"
                    "inductor_works('cpu')\n"
                    "assert logging.getLogger('torch.utils.cpp_extension').filters == []  # nothing else hidden\n")
    assert "No CUDA runtime is found" not in err and "CUDA_HOME" not in err, err[-3000:]
