"""The detector (issue 20): OHEM and focal RoI losses against independent computations, NMS and COCO mAP
against hand-computed cases, the backbone's initialisation, the config and CLI, resumable runs, sweeps."""

import json
from types import SimpleNamespace

import yaml

import numpy as np
import pytest
import torch
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.ops import MultiScaleRoIAlign

from da.detection.config import DetectionConfig, DetectionConfigError
from da.detection.evaluate import coco_metrics, postprocess
from da.detection.roi_heads import hardest, make_roi_heads
from tests.det_fixtures import make_nwpu_many

K = 3  # object classes in the small heads below


def _heads(sampler="default", box_cls_loss="ce", ohem_batch_size=5, ohem_nms=1.0, seed=0):
    torch.manual_seed(seed)
    heads = RoIHeads(MultiScaleRoIAlign(["0"], 7, 2), TwoMLPHead(4 * 7 * 7, 32), FastRCNNPredictor(32, K + 1),
                     0.5, 0.5, 16, 0.25, None, 0.05, 0.5, 100)
    cfg = SimpleNamespace(sampler=sampler, box_cls_loss=box_cls_loss, focal_gamma=2.0,
                          ohem_batch_size=ohem_batch_size, ohem_nms=ohem_nms)
    return make_roi_heads(heads, cfg)


def _inputs(seed=1, n=30):
    g = torch.Generator().manual_seed(seed)
    features = {"0": torch.randn(1, 4, 16, 16, generator=g)}
    xy = torch.rand(n, 2, generator=g) * 40
    wh = 8 + torch.rand(n, 2, generator=g) * 20
    proposals = [torch.cat([xy, xy + wh], dim=1)]
    targets = [{"boxes": torch.tensor([[5.0, 5.0, 25.0, 30.0], [30.0, 20.0, 55.0, 40.0]]),
                "labels": torch.tensor([1, 3])}]
    return features, proposals, [(64, 64)], targets


def _smooth_l1(x, beta=1 / 9):
    a = np.abs(x)
    return np.where(a < beta, 0.5 * a ** 2 / beta, a - 0.5 * beta)


def _independent_losses(heads, features, proposals, shapes, targets):
    """Every candidate RoI's CE and box loss in numpy, from the head's own logits on all candidates."""
    heads.train()
    props, _, labels, reg = heads.select_training_samples([p.clone() for p in proposals], targets)
    with torch.no_grad():
        logits, regression = heads._head(features, props, shapes)
    logits, regression = logits.double().numpy(), regression.double().numpy()
    y, t = labels[0].numpy(), reg[0].double().numpy()
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    ce = lse - logits[np.arange(len(y)), y]
    box = np.zeros(len(y))
    for i in np.where(y > 0)[0]:
        box[i] = _smooth_l1(regression[i].reshape(-1, 4)[y[i]] - t[i]).sum()
    return props[0], ce, box


def test_ohem_keeps_exactly_the_hardest_b():
    heads = _heads("ohem", ohem_batch_size=5)
    features, proposals, shapes, targets = _inputs()
    cand, ce, box = _independent_losses(heads, features, proposals, shapes, targets)
    assert len(cand) == 32  # every proposal plus the two ground-truth boxes: nothing sampled away
    top = np.argsort(-(ce + box))[:5]
    seen = []
    pool = heads.box_roi_pool
    heads.box_roi_pool.register_forward_pre_hook(lambda m, args: seen.append([b.clone() for b in args[1]]))
    losses = heads(features, [p.clone() for p in proposals], shapes, targets)[1]
    assert [len(p[0]) for p in seen] == [32, 5]  # the read-only pass over all, then only the hardest
    kept = {tuple(np.round(b, 4)) for b in seen[1][0].numpy()}
    assert kept == {tuple(np.round(b, 4)) for b in cand.numpy()[top]}
    assert losses["loss_classifier"].item() == pytest.approx(ce[top].sum() / 5, rel=1e-5)
    assert losses["loss_box_reg"].item() == pytest.approx(box[top].sum() / 5, rel=1e-5, abs=1e-7)
    # gradients reach the head only through the kept RoIs: the same loss rebuilt from them alone matches
    sum(losses.values()).backward()
    grad = heads.box_predictor.cls_score.weight.grad.clone()
    heads.zero_grad()
    feats = heads.box_head(pool(features, [seen[1][0]], shapes))
    logits = heads.box_predictor(feats)[0]
    labels = heads.select_training_samples([p.clone() for p in proposals], targets)[2][0]
    y = torch.as_tensor(labels.numpy()[top])
    torch.nn.functional.cross_entropy(logits, y, reduction="sum").div(5).backward()
    assert torch.allclose(grad, heads.box_predictor.cls_score.weight.grad, atol=1e-6)


def test_hardest_with_nms_skips_overlapping_rois():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 9.5], [50, 50, 60, 60], [20, 20, 30, 30]])
    losses = torch.tensor([5.0, 4.0, 3.0, 1.0])
    assert hardest(losses, boxes, 2, 1.0).tolist() == [0, 1]  # no NMS: the two largest
    assert hardest(losses, boxes, 2, 0.7).tolist() == [0, 2]  # box 1 overlaps box 0 at IoU 0.95
    assert hardest(losses, boxes, 10, 0.7).tolist() == [0, 2, 3]


def test_default_sampler_is_torchvisions_loss():
    features, proposals, shapes, targets = _inputs()
    ours = _heads("default")
    theirs = RoIHeads(MultiScaleRoIAlign(["0"], 7, 2), TwoMLPHead(4 * 7 * 7, 32), FastRCNNPredictor(32, K + 1),
                      0.5, 0.5, 16, 0.25, None, 0.05, 0.5, 100)
    theirs.load_state_dict(ours.state_dict())
    ours.train()
    theirs.train()
    torch.manual_seed(3)
    a = ours(features, [p.clone() for p in proposals], shapes, targets)[1]
    torch.manual_seed(3)
    b = theirs(features, [p.clone() for p in proposals], shapes, targets)[1]
    for k in ("loss_classifier", "loss_box_reg"):
        assert a[k].item() == pytest.approx(b[k].item(), rel=1e-6)
    assert fastrcnn_loss  # the function RoIHeads uses; compared through its forward above


def test_focal_box_loss_by_hand():
    features, proposals, shapes, targets = _inputs()
    heads = _heads("ohem", box_cls_loss="focal", ohem_batch_size=40)  # keep all: the plain focal mean
    cand, ce, box = _independent_losses(heads, features, proposals, shapes, targets)
    p = np.exp(-ce)
    focal = (1 - p) ** 2 * ce
    losses = heads(features, [q.clone() for q in proposals], shapes, targets)[1]
    assert losses["loss_classifier"].item() == pytest.approx(focal.mean(), rel=1e-5)


# ------------------------------------------------------------------------------------------ NMS and mAP
def test_postprocess_classwise_nms_and_thresholds():
    a = [0.0, 0.0, 10.0, 10.0]
    b = [0.0, 0.0, 10.0, 5.7]  # IoU with a: 57 / 100
    raw = {"boxes": torch.tensor([a, b, a, [40.0, 40, 50, 50]]), "scores": torch.tensor([0.9, 0.8, 0.7, 0.01]),
           "labels": torch.tensor([1, 1, 2, 1])}
    at_half = postprocess(raw, 0.5, 0.05, 100)
    assert at_half["scores"].tolist() == pytest.approx([0.9, 0.7])  # b suppressed by a; class 2 kept; 0.01 floored
    assert postprocess(raw, 0.6, 0.05, 100)["scores"].tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert postprocess(raw, 0.6, 0.05, 2)["scores"].tolist() == pytest.approx([0.9, 0.8])


def test_coco_map_against_a_hand_computed_case():
    gts = [
        {"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([1, 1])},
        {"boxes": torch.tensor([[0.0, 0, 20, 20], [40, 40, 50, 50]]), "labels": torch.tensor([2, 1]),
         "difficult": torch.tensor([False, True])},
    ]
    dets = [
        {"boxes": torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]]),
         "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([1, 1, 1])},
        # class 2 at IoU exactly 0.5 (a TP at 0.5 only); a class-1 hit on the difficult box (ignored)
        {"boxes": torch.tensor([[0.0, 0, 20, 10], [40, 40, 50, 50]]), "scores": torch.tensor([0.6, 0.95]),
         "labels": torch.tensor([2, 1])},
    ]
    m = coco_metrics(gts, dets, ("plane", "ship", "tank"))
    # class 1: TP, FP, TP over 2 boxes -> interpolated precision 1 up to recall 0.5 (51 of COCO's 101 recall
    # points) and 2/3 after (50 points), at every IoU threshold
    ap1 = (51 + 50 * 2 / 3) / 101
    assert m["ap_per_class"]["plane"] == pytest.approx(ap1, abs=1e-6)
    assert m["ap_per_class"]["ship"] == pytest.approx(0.1)  # 1 at IoU 0.5, 0 at 0.55 ... 0.95
    assert m["ap50_per_class"]["ship"] == pytest.approx(1.0)
    assert np.isnan(m["ap_per_class"]["tank"])  # no ground truth: left out of the means
    assert m["map"] == pytest.approx((ap1 + 0.1) / 2, abs=1e-6)
    assert m["map_50"] == pytest.approx((ap1 + 1) / 2, abs=1e-6)
    assert m["map_75"] == pytest.approx(ap1 / 2, abs=1e-6)
    assert (m["images"], m["gt_boxes"], m["detections"]) == (2, 4, 5)
    # the PR curve at IoU 0.5 behind AP@0.5: precision 1 to recall 0.5, then 2/3 (plane); 1 throughout (ship)
    assert m["pr50_per_class"]["plane"] == pytest.approx([1.0] * 51 + [round(2 / 3, 4)] * 50)
    assert m["pr50_per_class"]["ship"] == [1.0] * 101 and m["pr50_per_class"]["tank"] == [None] * 101
    assert np.mean(m["pr50_per_class"]["plane"]) == pytest.approx(m["ap50_per_class"]["plane"], abs=1e-4)


def test_coco_map_without_detections_is_zero():
    gts = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1])}]
    empty = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}]
    m = coco_metrics(gts, empty, ("plane",))
    assert m["map"] == 0.0 and m["map_50"] == 0.0


# ------------------------------------------------------------------------------------------ model
def test_detector_outputs_and_fitted_anchors():
    from da.detection.anchors import AnchorGeneratorArgs
    from da.detection.model import build_detector

    cfg = DetectionConfig(weights="none", min_size=64, max_size=64, rpn_pre_nms_train=50, rpn_post_nms_train=30,
                          rpn_pre_nms_test=50, rpn_post_nms_test=20, roi_batch_size=16)
    anchors = AnchorGeneratorArgs(((8.0,), (16.0,), (24.0,), (32.0,), (48.0,)), ((0.5, 0.8, 1.0, 1.5),) * 5)
    torch.manual_seed(0)
    model, init = build_detector(cfg, 10, anchors)
    assert model.roi_heads.box_predictor.cls_score.out_features == 11
    assert model.rpn.head.cls_logits.out_channels == 4  # one objectness score per anchor shape
    assert (init.loaded, init.weights) == (0, "none")
    model.train()
    images = [torch.rand(3, 64, 80), torch.rand(3, 72, 64)]
    targets = [{"boxes": torch.tensor([[4.0, 4, 30, 20]]), "labels": torch.tensor([3])},
               {"boxes": torch.tensor([[10.0, 10, 40, 50]]), "labels": torch.tensor([10])}]
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and out[0]["boxes"].shape[1] == 4
    assert out[0]["boxes"][:, 2].max() <= 80 + 1e-3  # boxes are mapped back to the input image


def test_trunk_gets_the_offline_imagenet_weights():
    import timm

    from da.detection.model import build_trunk
    from da.models.weights import load_lite0_offline

    trunk, channels, mean, std, init = build_trunk("timm:tf_efficientnet_lite0", "tf_efficientnet_lite0")
    ref = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    load_lite0_offline(ref)
    assert channels == [24, 40, 112, 320] and mean == pytest.approx((0.5,) * 3)
    assert init.loaded == init.total > 250
    for name in ("conv_stem.weight", "blocks.6.0.conv_pwl.weight", "blocks.3.1.bn2.running_var"):
        assert torch.equal(trunk.state_dict()[name], ref.state_dict()[name])


def test_trunk_from_a_stage1_checkpoint_and_run_dir(tmp_path):
    from da.detection.model import build_trunk, library_state_dict
    from da.models.model import build_model

    torch.manual_seed(5)
    scene = build_model("timm:tf_efficientnet_lite0", 7, weights="none", bottleneck_dim=64)  # as stage 1 saves it
    with torch.no_grad():
        for p in scene.parameters():
            p.add_(0.01)
    run = tmp_path / "stage1-abc"
    run.mkdir()
    torch.save({"model": scene.state_dict()}, run / "best_model.pt")
    lib = library_state_dict(scene)
    for weights in (str(run / "best_model.pt"), str(run)):
        trunk, *_, init = build_trunk("timm:tf_efficientnet_lite0", weights)
        assert init.loaded == init.total
        assert torch.equal(trunk.state_dict()["blocks.5.2.conv_dw.weight"], lib["blocks.5.2.conv_dw.weight"])


def test_trunk_refuses_weights_of_another_network(tmp_path):
    from da.detection.model import build_trunk
    from da.models.model import build_model

    other = build_model("resnet18", 3, weights="none")
    torch.save({"model": other.state_dict()}, tmp_path / "r18.pt")
    with pytest.raises(Exception, match="r18.pt|another|no weights|missing"):
        build_trunk("timm:tf_efficientnet_lite0", str(tmp_path / "r18.pt"))


# ------------------------------------------------------------------------------------------ config and CLI
def test_config_hash_and_validation():
    a = DetectionConfig()
    assert a.config_hash() == DetectionConfig(out="elsewhere", data_root="/x", device="cpu").config_hash()
    assert a.config_hash() != DetectionConfig(anchors="fitted").config_hash()
    assert DetectionConfig.from_dict(a.to_dict()) == a
    with pytest.raises(DetectionConfigError, match="sampler"):
        DetectionConfig(sampler="hard").validate()
    with pytest.raises(DetectionConfigError, match="nms_thresholds"):
        DetectionConfig(nms_thresholds=(0.5, 1.5)).validate()
    with pytest.raises(DetectionConfigError, match="unknown detection config keys \\['anchor'\\]"):
        DetectionConfig.from_dict({"anchor": "fitted"})
    # types and ranges as RunConfig checks them: each of these ran before, silently wrong
    for fields_, message in [({"rot90": "false"}, "rot90 expects true or false, got 'false'"),
                             ({"lr": float("inf")}, "lr must be a finite number"),
                             ({"epochs": 2.5}, "epochs expects an integer"),
                             ({"val_fraction": 0.0}, "val_fraction=0.0: must lie strictly between 0 and 1"),
                             ({"val_fraction": 0.5, "test_fraction": 0.5}, "leaves no training images"),
                             ({"scale_range": (0.8, float("nan"))}, "scale_range must hold finite numbers"),
                             ({"momentum": 1.0}, "momentum=1.0: must lie in"),
                             ({"dataset": "NWPU-VHR-11"}, "dataset='NWPU-VHR-11': unknown detection dataset; known: NWPU-VHR-10")]:
        with pytest.raises(DetectionConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
            DetectionConfig.from_dict(fields_)


def test_cli_print_config_and_bad_flag(capsys, tmp_path):
    from da.scripts.detect import main

    assert main(["--print-config", "--anchors", "fitted", "--nms-thresholds", "0.3", "0.5"]) == 0
    text = capsys.readouterr().out
    cfg = DetectionConfig(anchors="fitted", nms_thresholds=(0.3, 0.5))
    assert f"# config hash {cfg.config_hash()}" in text
    (tmp_path / "c.yaml").write_text(text)
    assert main(["--print-config", "--config", str(tmp_path / "c.yaml")]) == 0
    assert f"# config hash {cfg.config_hash()}" in capsys.readouterr().out
    # the same flag generator as da-run: one line naming the option, and where a bad value came from
    for argv, message in ((["--sampler", "hard"], "error: detection config sampler='hard': choose from"),
                          (["--lr", "inf"], "lr must be a finite number"),
                          (["--preset", "smoke", "--config", str(tmp_path / "bad.yaml")],
                           f"--config {tmp_path / 'bad.yaml'}, key lr: detection config lr=-1"),
                          (["--epoch", "2"], "unrecognized arguments: --epoch 2")):  # no prefix matching
        (tmp_path / "bad.yaml").write_text("lr: -1\n")
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err and len(err.splitlines()) == 2, err


def test_cli_help_names_every_field_and_the_presets(capsys):
    """da-detect --help: every field has its own help and default (issue 31), presets as flags, and a preset
    sets exactly the fields it names."""
    import dataclasses

    from da.detection.config import HELP, PRESETS
    from da.scripts.detect import main

    assert set(HELP) == {f.name for f in dataclasses.fields(DetectionConfig)}
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(DetectionConfig):
        assert f"--{f.name.replace('_', '-')}" in text
    assert "nms thresholds" not in text and "(default: 0.5 0.3)" in text and "smoke = --epochs=1" in text
    assert main(["--print-config", "--preset", "nwpu-cpu"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    changed = {k for k, v in printed.items() if v != DetectionConfig().to_dict()[k] and k != "data_root"}
    assert changed == {k for k, v in PRESETS["nwpu-cpu"].items() if v != getattr(DetectionConfig(), k)}


# ------------------------------------------------------------------------------------------ runs
def _tiny(tmp_path, **kw):
    make_nwpu_many(tmp_path / "data", n=12)
    base = dict(data_root=str(tmp_path / "data"), out=str(tmp_path / "runs"), weights="none", min_size=96,
                max_size=96, rpn_pre_nms_train=60, rpn_post_nms_train=40, rpn_pre_nms_test=60, rpn_post_nms_test=30,
                roi_batch_size=16, ohem_batch_size=8, epochs=2, batch_size=2, max_steps_per_epoch=2, lr=0.005,
                warmup_iters=2, num_workers=0, val_fraction=0.2, test_fraction=0.25, fpn_channels=32)
    return DetectionConfig(**{**base, **kw})


def _kill_in_second_epoch(engine, cfg, monkeypatch) -> None:
    """Run ``cfg`` until its second evaluation, kill it there (KeyboardInterrupt), then put predict_raw back."""
    real, calls = engine.predict_raw, {"n": 0}

    def dies_in_second_epoch(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(engine, "predict_raw", dies_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        engine.run_detection(cfg)
    monkeypatch.setattr(engine, "predict_raw", real)


def test_run_resumes_bit_identically(tmp_path, monkeypatch):
    import da.detection.engine as engine

    cfg = _tiny(tmp_path, anchors="fitted", sampler="ohem")
    whole = engine.run_detection(cfg.replace(out=str(tmp_path / "whole")))
    monkeypatch.setattr(engine, "git_commit", lambda: "commit-a")
    _kill_in_second_epoch(engine, cfg, monkeypatch)
    assert not (cfg.run_dir() / "DONE").exists() and (cfg.run_dir() / "checkpoint.pt").exists()
    monkeypatch.setattr(engine, "git_commit", lambda: "commit-b")  # the code changed before the resume
    resumed = engine.run_detection(cfg)
    a = json.loads((whole / "record.json").read_text())
    b = json.loads((resumed / "record.json").read_text())
    assert [h["train"] for h in a["history"]] == [h["train"] for h in b["history"]]
    assert a["test"] == b["test"] and a["val"] == b["val"] and a["config_hash"] == b["config_hash"]
    wa = torch.load(whole / "checkpoint.pt", weights_only=True)["model"]
    wb = torch.load(resumed / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # the record says what was run on what, and with which code (each segment's commit, read at its start)
    assert (b["git_commit"], b["git_commits"]) == ("commit-b", ["commit-a", "commit-b"])
    assert b["split"]["train"] + b["split"]["val"] + b["split"]["test"] == 12
    assert (cfg.run_dir() / "manifest.csv").read_text().count("\n") == 13
    assert b["anchors"]["choice"] == "fitted" and 0 < b["anchors"]["fitted_mean_best_iou"] <= 1
    assert set(b["test"]) == {"nms_0.5", "nms_0.3"} and len(b["history"]) == 2
    assert b["test"]["nms_0.5"]["gt_boxes"] == b["split"]["test_boxes"]
    # a done run is skipped
    assert engine.run_detection(cfg) == resumed


def test_shipped_sweep_and_local_submission(tmp_path):
    from da.detection.sweep import load_detection_sweep, submit_detection_sweep

    shipped = load_detection_sweep("det_nwpu").configs()
    assert len(shipped) == 12 == len({c.config_hash() for c in shipped})
    assert [c.seed for c in shipped].count(0) == 8 and shipped[0].weights == "tf_efficientnet_lite0"
    cfg = _tiny(tmp_path, epochs=1)
    base = json.dumps({k: v for k, v in cfg.to_dict().items() if k not in ("out", "data_root", "seed")})
    (tmp_path / "s.yaml").write_text(f"base: {base}\ngrid:\n  sampler: [default, ohem]\n")
    sweep = load_detection_sweep(tmp_path / "s.yaml")
    summary = submit_detection_sweep(sweep, cluster="debug", out=cfg.out, data_root=cfg.data_root)
    assert summary["submit"] == 2
    for job in summary["job_objects"]:
        job.result()
    again = submit_detection_sweep(sweep, cluster="debug", out=cfg.out, data_root=cfg.data_root)
    assert (again["done"], again["submit"]) == (2, 0)
    # the run states are classification's: a failed run (its FAILED file) is submitted again, and says where
    # its log is; a run with a checkpoint and no record is partial and resumes
    failed, partial = (c.run_dir() for c in sweep.configs(out=cfg.out, data_root=cfg.data_root))
    for d in (failed, partial):
        (d / "DONE").unlink()
    (failed / "FAILED").write_text("RuntimeError: boom\nlog: /logs/7.err\n")
    plan = submit_detection_sweep(sweep, cluster="debug", dry_run=True, out=cfg.out, data_root=cfg.data_root)
    assert (plan["failed"], plan["partial"], plan["submit"]) == (1, 1, 2)
    for text, message in (("grid:\n  anchors: [default, bogus]\n", "bad.yaml.*anchors"),
                          ("variants: [{seed: 1}]\n", "give seeds under 'seeds'"),
                          ("variants: [{sampler: ohem, seeds: [1, 2]}]\nseeds: [0]\n", None)):
        (tmp_path / "bad.yaml").write_text(text)
        if message:
            with pytest.raises(ValueError, match=message):
                load_detection_sweep(tmp_path / "bad.yaml")
        else:  # the same format as classification's: a variant's own seeds
            assert [c.seed for c in load_detection_sweep(tmp_path / "bad.yaml").configs()] == [1, 2]


def test_detection_run_checks_its_inputs_and_heals_a_damaged_checkpoint(tmp_path, monkeypatch, capsys):
    """The classification run core's guarantees hold for detection: a done run made from other data is
    refused, not reused; a damaged checkpoint is set aside and the run starts over to the same numbers."""
    import da.detection.engine as engine
    from da.rundir import StaleRunError

    cfg = _tiny(tmp_path, epochs=2, max_steps_per_epoch=1)
    done = engine.run_detection(cfg)
    record = json.loads((done / "record.json").read_text())
    assert record["inputs"]["data"].startswith("content-sha256:") and set(record["inputs"]) == {"data"}
    gt = tmp_path / "data" / "NWPU-VHR-10" / "ground truth" / "001.txt"
    text = gt.read_text()
    gt.write_text(text.replace("),1", "),2").replace("),3", "),1"))  # one image relabelled
    with pytest.raises(StaleRunError, match=f"{done}.*boxes and labels.*rm -r"):
        engine.run_detection(cfg)
    gt.write_text(text)
    assert engine.run_detection(cfg) == done  # the same inputs again: reused

    cut = cfg.replace(out=str(tmp_path / "cut"))
    _kill_in_second_epoch(engine, cut, monkeypatch)
    ckpt = cut.run_dir() / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # a write cut short by a full disk
    again = json.loads((engine.run_detection(cut) / "record.json").read_text())
    assert "is damaged" in capsys.readouterr().out and (cut.run_dir() / "checkpoint.damaged").exists()
    assert again["test"] == record["test"] and again["history"][-1]["train"] == record["history"][-1]["train"]


def test_detection_tables_and_figure_from_records(tmp_path):
    from da.detection.engine import run_detection
    from da.scripts.tables import main as tables_main

    cfg = _tiny(tmp_path, epochs=1, max_steps_per_epoch=1)
    dirs = [run_detection(cfg.replace(seed=s)) for s in (0, 1)] + [run_detection(cfg.replace(anchors="fitted"))]
    recs = [json.loads((d / "record.json").read_text()) for d in dirs]
    assert tables_main(["--detection", cfg.out, "--out", str(tmp_path / "res")]) == 0
    text = (tmp_path / "res" / "tables" / "detection.md").read_text()
    m = np.array([r["test"]["nms_0.3"]["map_50"] for r in recs[:2]]) * 100
    assert f"{m.mean():.1f} ± {m.std(ddof=1):.1f}" in text  # the two seeds of the default anchors
    rows = [line for line in text.splitlines() if line.startswith("|") and "ImageNet" not in line]
    assert any("random" in line and "fitted" in line for line in text.splitlines())
    assert text.count("| yes") == 1 and rows
    assert (tmp_path / "res" / "figures" / "detections.png").stat().st_size > 10_000
    import csv  # the run index lists detection runs beside classification's (issue 28)
    from pathlib import Path

    index = {r["run"]: r for r in csv.DictReader((Path(cfg.out) / "index.csv").open())}
    assert set(index) == {d.name for d in dirs}
    row = index[dirs[0].name]
    assert row["task"] == "detection" and row["status"] == "done" and row["target"] == "NWPU-VHR-10"
    assert float(row["test_map50"]) == pytest.approx(recs[0]["test"][f"nms_{recs[0]['headline_nms']:g}"]["map_50"], abs=1e-4)


def test_torchvision_resnet_trunk(tmp_path):
    from da.detection.model import build_detector, build_trunk
    from da.models.model import build_model

    torch.manual_seed(0)
    scene = build_model("resnet18", 4, weights="none")
    torch.save({"model": scene.state_dict()}, tmp_path / "r18.pt")
    trunk, channels, *_, init = build_trunk("resnet18", str(tmp_path / "r18.pt"))
    assert channels == [64, 128, 256, 512] and init.loaded == init.total
    lib = {k: v for k, v in scene.state_dict().items()}
    assert torch.equal(trunk.layers[3][1].conv2.weight, lib[scene.library_keys["layer4.1.conv2.weight"]])
    cfg = DetectionConfig(backbone="resnet18", weights="none", min_size=64, max_size=64, rpn_post_nms_test=20)
    model, _ = build_detector(cfg, 2)
    model.eval()
    with torch.no_grad():
        assert len(model([torch.rand(3, 64, 64)])) == 1


def test_missing_weights_or_data_are_clear_errors(tmp_path, capsys):
    from da.detection.sweep import load_detection_sweep, submit_detection_sweep
    from da.scripts.detect import main

    assert main(["--weights", str(tmp_path / "no-stage1"), "--out", str(tmp_path)]) == 2
    assert "weights=" in capsys.readouterr().err and not list(tmp_path.iterdir())
    assert main(["--data-root", str(tmp_path / "none"), "--out", str(tmp_path / "runs"), "--weights", "none"]) == 2
    assert "NWPU-VHR-10: not found" in capsys.readouterr().err and not (tmp_path / "runs").exists()
    (tmp_path / "s.yaml").write_text(f"base: {{weights: {tmp_path / 'gone'}}}\n")
    with pytest.raises(ValueError, match="s.*gone.*nothing was submitted"):
        submit_detection_sweep(load_detection_sweep(tmp_path / "s.yaml"), cluster="debug", out=str(tmp_path / "o"))


def test_committed_detection_table_regenerates(tmp_path):
    """results/detection/tables/detection.md is what the committed records give (python experiments/tables.py
    --detection results/detection/runs --out results/detection --no-figures)."""
    from conftest import REPO
    from da.results.detection import write_detection_report

    committed = REPO / "results" / "detection"
    write_detection_report(committed / "runs", tmp_path, figure=False)
    for name in ("detection.md", "detection.tex"):
        assert (tmp_path / "tables" / name).read_text() == (committed / "tables" / name).read_text(), name
    tex = (committed / "tables" / "detection.tex").read_text()  # LaTeX as a paper takes it (issue 28)
    assert tex.count(r"\begin{table}") == 2 and r"\toprule" in tex and "±" not in tex and r"$\pm$" in tex
    assert "mAP@[.5:.95]" in tex and r"(\%)" in tex
    # docs/detection.md's time of a --preset nwpu-cpu run is the committed records' range
    minutes = [json.loads(p.read_text())["wall_time_s"] / 60 for p in (committed / "runs").glob("det-*/record.json")]
    assert f"records took {min(minutes):.0f}-{max(minutes):.0f} min each" in " ".join((REPO / "docs" / "detection.md").read_text().split())


def test_nms_is_chosen_on_val_and_the_test_number_follows_it():
    """The headline NMS threshold is a val choice: per configuration the threshold with the best mean val
    mAP@0.5, and the test mAP@0.5 at that threshold (recomputed here from the records by hand)."""
    import json

    from conftest import REPO
    from da.results.detection import detection_runs, detection_table

    folder = REPO / "results" / "detection" / "runs"
    table = detection_table(detection_runs(folder))
    by_config = {}
    for path in sorted(folder.glob("det-*/record.json")):
        r = json.loads(path.read_text())
        c = r["config"]
        by_config.setdefault((c["anchors"], c["sampler"], c["weights"]), []).append(r)
    checked = 0
    for recs in by_config.values():
        val = {t: np.mean([r["val"][f"nms_{t:g}"]["map_50"] for r in recs]) for t in recs[0]["config"]["nms_thresholds"]}
        chosen = max(val, key=val.get)
        test = np.mean([r["test"][f"nms_{chosen:g}"]["map_50"] for r in recs])
        row = table[(table["anchors"] == recs[0]["config"]["anchors"]) & (table["sampler"] == recs[0]["config"]["sampler"])
                    & (table["seeds"] == len(recs))]
        assert f"{100 * test:.1f}" in set(row["test mAP@0.5 at it"].str.split(" ").str[0]) and f"{chosen:g}" in set(row["NMS chosen on val"])
        checked += 1
    assert checked >= 3
    # the val-chosen configuration's headline is the test column of its val-chosen NMS, whichever test column is higher
    best = table[table["chosen on val"] == "yes"].iloc[0]
    assert best["test mAP@0.5 at it"] == best[f"mAP@0.5 NMS {best['NMS chosen on val']}"]
