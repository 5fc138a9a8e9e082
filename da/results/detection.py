"""Detection tables and the figure of detections, from the records of ``da.detection`` runs.

``detection_runs(folder)`` reads every ``det-*/record.json`` (with its DONE marker) into a DataFrame, one row
per run: the factors (backbone init, anchors, RoI sampler, loss), the seed, and the test metrics at every NMS
threshold scored.  ``detection_table`` gives mean ± s.d. over seeds per configuration; the configuration
chosen on the *val* split (its mAP@[.5:.95] at the headline NMS) is marked, the test split only reports.
``per_class_table`` gives AP@0.5 per class.  ``detections_figure`` draws ground truth against predictions
on test images for one run whose ``best_model.pt`` is still there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from da.records import load_record
from da.results.tables import render_cells_latex, render_cells_markdown
from da.rundir import BEST_FILE, DONE_FILE, RECORD_FILE
from da.utils.io import atomic_write_text

FACTORS = ["init", "anchors", "sampler", "box_loss"]


def init_name(weights: str) -> str:
    """``ImageNet`` for library/packaged ImageNet weights, ``stage-1 <run>`` for a scene checkpoint."""
    if weights in ("imagenet", "tf_efficientnet_lite0"):
        return "ImageNet"
    if weights == "none":
        return "random"
    p = Path(weights)
    return f"stage-1 {(p.parent.name if p.name == BEST_FILE else p.name).removeprefix('stage1-')}"


def detection_runs(folder: str | Path) -> pd.DataFrame:
    rows = []
    for rec_path in sorted(Path(folder).glob(f"det-*/{RECORD_FILE}")):
        if not (rec_path.parent / DONE_FILE).exists():
            continue
        r = load_record(rec_path, kind="detection")
        c = r["config"]
        row = {"run": rec_path.parent.name, "init": init_name(c["weights"]), "anchors": c["anchors"],
               "sampler": c["sampler"], "box_loss": c["box_cls_loss"], "seed": r["seed"],
               "selected_epoch": r["selected_epoch"], "epochs": c["epochs"],
               "val_map": r["val"][f"nms_{r['headline_nms']:g}"]["map"],
               "train_images_per_s": r["train_images_per_s"], "wall_time_min": r["wall_time_s"] / 60,
               "record": r}
        for key, m in r["test"].items():
            t = key[len("nms_"):]
            row[f"map@nms{t}"] = m["map"]
            row[f"map50@nms{t}"] = m["map_50"]
            row[f"val_map50@nms{t}"] = r["val"][key]["map_50"]
        rows.append(row)
    if not rows:
        raise FileNotFoundError(f"no finished detection runs (det-*/record.json with DONE) under {folder}")
    return pd.DataFrame(rows)


def _fmt(values: pd.Series, scale: float = 100.0) -> str:
    v = pd.Series(values).dropna().to_numpy(dtype=float) * scale  # NaN: a class without test boxes
    if v.size == 0:
        return "–"
    return f"{v.mean():.1f}" if v.size == 1 else f"{v.mean():.1f} ± {v.std(ddof=1):.1f}"


def detection_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: seeds, test mAP@[.5:.95] and mAP@0.5 (%) at each NMS, val mAP, speed."""
    nms = [f"{t:g}" for t in runs["record"].iloc[0]["config"]["nms_thresholds"]]  # the headline first
    best = runs.groupby(FACTORS)["val_map"].mean().idxmax()
    out = []
    for key, g in runs.groupby(FACTORS):
        row = dict(zip(FACTORS, key))
        row["seeds"] = len(g)
        row["val mAP"] = _fmt(g["val_map"])
        for t in nms:
            row[f"mAP@[.5:.95] NMS {t}"] = _fmt(g[f"map@nms{t}"])
            row[f"mAP@0.5 NMS {t}"] = _fmt(g[f"map50@nms{t}"])
        # the NMS threshold is a choice like any other: the one with the best mean val mAP@0.5, and the test
        # number at it (the headline reports that one, never the best test column)
        chosen = max(nms, key=lambda t: (g[f"val_map50@nms{t}"].mean(), -nms.index(t)))
        row["val mAP@0.5 per NMS"] = " / ".join(f"{100 * g[f'val_map50@nms{t}'].mean():.1f}" for t in nms)
        row["NMS chosen on val"] = chosen
        row["test mAP@0.5 at it"] = _fmt(g[f"map50@nms{chosen}"])
        row["train img/s"] = f"{g['train_images_per_s'].mean():.2f}"
        row["chosen on val"] = "yes" if key == best else ""
        out.append(row)
    return pd.DataFrame(out)


def per_class_table(runs: pd.DataFrame, nms: float) -> pd.DataFrame:
    """AP@0.5 (%) per class at NMS ``nms``, mean over seeds, one column per configuration."""
    cols, classes = {}, runs["record"].iloc[0]["classes"]
    for key, g in runs.groupby(FACTORS):
        per = pd.DataFrame([r["test"][f"nms_{nms:g}"]["ap50_per_class"] for r in g["record"]])
        cols[" / ".join(str(k) for k in key)] = [_fmt(per[c]) if c in per else "–" for c in classes]
    return pd.DataFrame(cols, index=pd.Index(classes, name="class"))


def diverse(samples: list, n: int) -> list:
    """Up to ``n`` samples, each adding a class not shown yet where one can (in split order), then the rest."""
    chosen, seen = [], set()
    for s in samples:
        if len(chosen) < n and set(s.labels.tolist()) - seen:
            chosen.append(s)
            seen |= set(s.labels.tolist())
    chosen += [s for s in samples if s not in chosen][:n - len(chosen)]
    return chosen


def detections_figure(run_dir: str | Path, out: str | Path, n_images: int = 6, nms: float = 0.3,
                      min_score: float = 0.3) -> Path:
    """Ground truth (green) against predictions with score >= ``min_score`` (red, class and score) on
    ``n_images`` test images of a finished run showing as many classes as they can, at NMS ``nms``; PNG
    and PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns
    import torch
    from PIL import Image

    from da.detection.config import DetectionConfig
    from da.detection.data import load_detection, split_by_image
    from da.detection.engine import predict_raw
    from da.detection.evaluate import postprocess
    from da.detection.model import build_detector

    run_dir = Path(run_dir)
    record = load_record(run_dir / RECORD_FILE, kind="detection")
    cfg = DetectionConfig.from_dict(record["config"])
    dataset = load_detection(cfg.dataset, cfg.data_root)
    test = diverse(split_by_image(dataset, cfg.val_fraction, cfg.test_fraction, seed=cfg.split_seed).test, n_images)
    anchors = None
    if cfg.anchors == "fitted":
        from da.detection.anchors import AnchorGeneratorArgs
        a = record["anchors"]
        anchors = AnchorGeneratorArgs(tuple(tuple(s) for s in a["sizes"]), (tuple(a["aspect_ratios"]),) * len(a["sizes"]))
    model, _ = build_detector(cfg.replace(weights="none"), len(dataset.classes), anchors)
    model.load_state_dict(torch.load(run_dir / BEST_FILE, map_location="cpu", weights_only=True)["model"])
    raw, _ = predict_raw(model, test, torch.device("cpu"))
    sns.set_theme(style="white")
    cols = 3
    rows = int(np.ceil(len(test) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.2 * rows))
    for ax, sample, r in zip(np.ravel(axes), test, raw):
        det = postprocess(r, nms, min_score, cfg.detections_per_img)
        with Image.open(sample.image_path) as im:
            ax.imshow(im.convert("RGB"))
        for (x1, y1, x2, y2) in sample.boxes.tolist():
            ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="lime", lw=1.5))
        for (x1, y1, x2, y2), s, c in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
            ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="red", lw=1.0))
            ax.text(x1, y1 - 2, f"{dataset.classes[c - 1]} {s:.2f}", color="red", fontsize=6)
        ax.set_title(f"{sample.image_path.name}: {sample.num_boxes} true, {len(det['scores'])} found", fontsize=8)
        ax.axis("off")
    for ax in np.ravel(axes)[len(test):]:
        ax.axis("off")
    fig.suptitle(f"{run_dir.name} ({init_name(cfg.weights)}, anchors {cfg.anchors}, sampler {cfg.sampler}): "
                 f"ground truth green, detections red (score >= {min_score}, NMS {nms})", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".png", ".pdf"):
        tmp = out.with_name(f".{out.stem}.tmp{suffix}")
        fig.savefig(tmp, dpi=110)
        tmp.replace(out.with_suffix(suffix))
    plt.close(fig)
    return out.with_suffix(".png")


def _configuration(key) -> str:
    return " / ".join(str(k) for k in key)


def per_class_ap_data(runs: pd.DataFrame) -> dict:
    """Per configuration (init / anchors / sampler / box loss): test AP@0.5 (%) of each class at the headline NMS,
    mean and s.d. over seeds (null: a class without test boxes)."""
    from da.results.figures import json_number

    first = runs["record"].iloc[0]
    classes, nms = first["classes"], f"nms_{first['headline_nms']:g}"
    configurations = []
    for key, g in runs.groupby(FACTORS, sort=True):
        per = np.array([[r["test"][nms]["ap50_per_class"].get(c, np.nan) for c in classes] for r in g["record"]],
                       dtype=float) * 100
        with np.errstate(invalid="ignore"):
            sd = np.nanstd(per, axis=0, ddof=1) if len(per) > 1 else np.full(len(classes), np.nan)
        configurations.append({"configuration": _configuration(key), "runs": int(len(g)),
                               "ap50": [json_number(v, 1) for v in np.nanmean(per, axis=0)],
                               "sd": [json_number(v, 1) for v in sd]})
    return {"classes": list(classes), "nms": first["headline_nms"], "configurations": configurations}


def map_per_epoch_data(runs: pd.DataFrame) -> dict:
    """Per configuration: val mAP@0.5 and mAP@[.5:.95] (%) after every epoch, mean over seeds (the curve the
    selected epoch is read from)."""
    from da.results.figures import json_number

    configurations = []
    for key, g in runs.groupby(FACTORS, sort=True):
        histories = [r["history"] for r in g["record"]]
        if len({len(h) for h in histories}) != 1:
            continue
        configurations.append({
            "configuration": _configuration(key), "runs": int(len(g)),
            "val_map_50": [json_number(100 * np.mean([h[i]["val_map_50"] for h in histories]), 2) for i in range(len(histories[0]))],
            "val_map": [json_number(100 * np.mean([h[i]["val_map"] for h in histories]), 2) for i in range(len(histories[0]))],
            "selected_epochs": sorted(int(r["selected_epoch"]) for r in g["record"])})
    return {"configurations": configurations}


def pr_curve_data(runs: pd.DataFrame) -> dict:
    """Per configuration and class: the test precision-recall curve at IoU 0.5 and the headline NMS (precision at
    COCO's 101 recall points), mean over seeds where every seed reaches that recall; empty where the records
    predate the curves (they keep them since issue 31)."""
    from da.results.figures import json_number

    first = runs["record"].iloc[0]
    classes, nms = first["classes"], f"nms_{first['headline_nms']:g}"
    if not all("pr50_per_class" in r["test"][nms] for r in runs["record"]):
        return {"classes": list(classes), "configurations": []}
    configurations = []
    for key, g in runs.groupby(FACTORS, sort=True):
        curves = {}
        for c in classes:
            per = np.array([[np.nan if v is None else v for v in r["test"][nms]["pr50_per_class"][c]] for r in g["record"]])
            curves[c] = [json_number(v, 4) if np.isfinite(v) else None for v in per.mean(axis=0)]
        configurations.append({"configuration": _configuration(key), "runs": int(len(g)), "precision": curves})
    return {"classes": list(classes), "nms": first["headline_nms"], "configurations": configurations}


def pr_curve_figure(data: dict, out: Path) -> list[Path]:
    """One panel per class: precision against recall at IoU 0.5, one line per configuration."""
    import matplotlib.pyplot as plt

    from da.results.figures import palette, save_figure

    configs, classes = data["configurations"], data["classes"]
    if not configs:
        return []
    colours = palette(len(configs))
    recall = np.linspace(0, 1, 101)
    cols = 5
    rows = -(-len(classes) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.6 * rows), sharex=True, sharey=True, squeeze=False)
    for ax, c in zip(axes.flat, classes):
        for colour, cfg in zip(colours, configs):
            precision = np.array([np.nan if v is None else v for v in cfg["precision"][c]], dtype=float)
            ax.plot(recall, precision, color=colour, label=f"{cfg['configuration']} ({cfg['runs']} seeds)")
        ax.set_title(c, fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
    for ax in list(axes.flat)[len(classes):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("recall")
    for ax in axes[:, 0]:
        ax.set_ylabel("precision")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.tight_layout()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=7, frameon=False)
    fig.suptitle(f"Test precision-recall at IoU 0.5 (NMS {data['nms']:g}), mean over seeds", y=1.0, va="bottom")
    return save_figure(fig, out, "pr_curves")


def per_class_ap_figure(data: dict, out: Path) -> list[Path]:
    """Grouped bars: AP@0.5 per class, one bar per configuration, error bars the s.d. over seeds."""
    import matplotlib.pyplot as plt

    from da.results.figures import palette, save_figure

    classes, configs = data["classes"], data["configurations"]
    x = np.arange(len(classes))
    width = 0.8 / len(configs)
    colours = palette(len(configs))
    fig, ax = plt.subplots(figsize=(max(8.0, 0.9 * len(classes) + 2), 4.0))
    for i, c in enumerate(configs):
        values = np.array(c["ap50"], dtype=float)
        sd = np.array(c["sd"], dtype=float)
        ax.bar(x - 0.4 + (i + 0.5) * width, values, width, yerr=np.nan_to_num(sd), capsize=2, color=colours[i],
               label=f"{c['configuration']} ({c['runs']} seeds)")
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set_ylabel("test AP@0.5 (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"NWPU VHR-10 test AP@0.5 per class (NMS {data['nms']:g}), mean over seeds, bars: s.d.", fontsize=9)
    ax.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.42), ncol=2)
    fig.tight_layout()
    return save_figure(fig, out, "per_class_ap")


def map_per_epoch_figure(data: dict, out: Path) -> list[Path]:
    """Val mAP@0.5 (left) and mAP@[.5:.95] (right) per epoch, one line per configuration."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from da.results.figures import palette, save_figure

    configs = data["configurations"]
    colours = palette(len(configs))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, name in zip(axes, ("val_map_50", "val_map"), ("val mAP@0.5 (%)", "val mAP@[.5:.95] (%)")):
        for colour, c in zip(colours, configs):
            ax.plot(np.arange(1, len(c[key]) + 1), c[key], marker="o", color=colour,
                    label=f"{c['configuration']} ({c['runs']} seeds)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.tight_layout()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=7, frameon=False)
    fig.suptitle("Detection: val mAP after every epoch, mean over seeds (each run keeps its best-val epoch)", y=1.0,
                 va="bottom", fontsize=10)
    return save_figure(fig, out, "map_per_epoch")


# figure name -> (what its JSON holds, what draws it from that), as figures.DRAWN_FROM_DATA for classification
DRAWN_FROM_DATA = {"per_class_ap": (per_class_ap_data, per_class_ap_figure),
                   "map_per_epoch": (map_per_epoch_data, map_per_epoch_figure),
                   "pr_curves": (pr_curve_data, pr_curve_figure)}
FIGURE_DATA = {name: compute for name, (compute, _) in DRAWN_FROM_DATA.items()}  # recomputed by the tests


def write_detection_report(folder: str | Path, out: str | Path, figure: bool = True) -> list[Path]:
    """``<out>/tables/detection.md`` (+ per-class AP) and, when the val-chosen run's model is still there,
    ``<out>/figures/detections.png``."""
    runs = detection_runs(folder)
    out = Path(out)
    written = []
    table = detection_table(runs)
    headline = runs["record"].iloc[0]["headline_nms"]
    nms_list = ", ".join(f"{t:g}" for t in runs["record"].iloc[0]["config"]["nms_thresholds"])
    caption = (f"NWPU VHR-10 test split ({runs['record'].iloc[0]['split']['test']} images), Faster R-CNN: "
               f"COCO mAP@[.5:.95] and mAP@0.5 (%) at class-wise NMS IoU {nms_list}, mean ± s.d. over seeds; the "
               f"model of each run is its epoch with the best val mAP (NMS {headline:g}); 'NMS chosen on val': the "
               f"threshold with the best mean val mAP@0.5 (val values in the order {nms_list}), and the test mAP@0.5 "
               f"at it; 'chosen on val': the configuration with the best mean val mAP (the test split plays no part "
               f"in any choice). Init: "
               f"ImageNet weights, or 'stage-1 <hash>': the backbone of that stage-1 scene-classification run.")
    per_class = per_class_table(runs, float(nms_list.split(", ")[-1]))
    per_class_caption = (f"AP@0.5 (%) per class at NMS {nms_list.split(', ')[-1]}, mean over seeds "
                         "(columns: init / anchors / sampler / box loss).")
    text = "# Detection\n\n" + render_cells_markdown(table, caption) + "\n" + render_cells_markdown(per_class, per_class_caption)
    path = out / "tables" / "detection.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    written.append(path)
    latex = (render_cells_latex(table, caption, "tab:detection", left=tuple(FACTORS)) + "\n"
             + render_cells_latex(per_class, per_class_caption, "tab:detection-per-class"))
    written.append(atomic_write_text(out / "tables" / "detection.tex", latex))
    if figure:
        from da.results.figures import save_data

        for name, (compute, draw) in DRAWN_FROM_DATA.items():
            data = compute(runs)
            drawn = draw(data, out / "figures")
            if drawn:  # PR curves: only from records that keep them
                written += drawn + [save_data(out / "figures", name, data, {"detection": str(folder)})]
        chosen = runs.loc[runs.groupby(FACTORS)["val_map"].transform("mean").idxmax()]
        run_dir = Path(folder) / chosen["run"]
        if (run_dir / BEST_FILE).exists():
            written.append(detections_figure(run_dir, out / "figures" / "detections"))
    return written
