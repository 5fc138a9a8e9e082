"""The model card of an export (``model_card.json``): what a user of the exported files needs."""

from __future__ import annotations

import platform

import torch

from da.deploy.int8 import INT8_FILE
from da.deploy.load import FinishedRun
from da.deploy.onnx_model import ONNX_FILE

CHECKS_FILE = "checks.json"
CARD_FILE = "model_card.json"


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("torchao", "onnx", "onnxruntime", "onnxscript", "timm"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    return out


def model_card(run: FinishedRun, checks: dict, files: dict) -> dict:
    """What a user of the exported files needs: input, output, provenance, metrics, checks, versions."""
    cfg, rec = run.config, run.record
    tt = rec.get("target_test") or {}
    card = {
        "model": {"backbone": cfg.backbone, "weights": cfg.weights, "bottleneck_dim": cfg.bottleneck_dim,
                  "num_classes": len(run.classes)},
        "classes": list(run.classes),
        "input": {"name": "image", "shape": ["batch", 3, run.img_size, run.img_size], "dtype": "float32",
                  "layout": "NCHW, RGB", "img_size": run.img_size,
                  "preprocessing": f"resize the shorter side, centre-crop {run.img_size} px, scale to [0, 1], "
                                   f"then (x - mean) / std per channel (the run's evaluation transform)",
                  "mean": run.mean, "std": run.std},
        "output": {"name": "logits", "shape": ["batch", len(run.classes)],
                   "meaning": "unnormalised class scores in the order of classes; softmax for probabilities"},
        "data": {"source": cfg.source, "target": cfg.target, "stage1": cfg.stage1 if cfg.stages == 2 else None,
                 "stages": cfg.stages, "class_map": cfg.class_map or "built-in",
                 "split_sizes": rec.get("split_sizes")},
        "training": {"method": cfg.method, "cls_loss": cfg.cls_loss, "strategy": cfg.strategy, "seed": cfg.seed,
                     "selection": rec.get("selection", cfg.selection), "selected_epoch": rec.get("selected_epoch"),
                     "epochs_run": len(rec.get("epochs") or []), "prior": cfg.prior or None},
        "metrics": {"target_test_accuracy": tt.get("accuracy"), "target_test_macro_f1": tt.get("macro_f1"),
                    "target_test_images": tt.get("n"),
                    "source_val_accuracy": (rec.get("source_val") or {}).get("accuracy")},
        "run": {"directory": str(run.run_dir), "config_hash": rec.get("config_hash"),
                "git_commit": rec.get("git_commit"), "finished_at": rec.get("finished_at")},
        "checks": checks,
        "versions": versions(),
        "files": files,
        "how_to_load": {
            ONNX_FILE: "onnxruntime.InferenceSession('model.onnx').run(['logits'], {'image': x})",
            INT8_FILE: "import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer; "
                       "m = torch.export.load('model_int8.pt2').module(); torch.compile(m) under "
                       "torch._inductor.config.patch(freezing=True) for INT8 kernels "
                       "(or da.deploy.int8.load_int8)"},
    }
    if run.prior and "estimate" in run.prior:
        card["target_prior_estimate"] = run.prior["estimate"]
    return card
