"""Figures of an ablation (seaborn): accuracy by method, per-class heatmap, training curves, t-SNE."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

PDF_META = {"CreationDate": None}  # reproducible PDFs: no timestamp


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(paths[1], bbox_inches="tight", metadata=PDF_META)
    plt.close(fig)
    return paths


def variant(row) -> str:
    """A run's method as a figure names it: the method, its prior estimator, its target labels."""
    label = row["method"]
    if row.get("prior", ""):
        label += f" + prior ({row['prior']})"
    fraction = row.get("target_labeled_fraction", 0.0)
    if fraction >= 1:
        label = "reference (target labels)" if row["method"] == "source_only" else label + " + target labels"
    elif fraction > 0:
        label += f" + {100 * fraction:.0f}% target labels"
    return label


def _variants(runs: pd.DataFrame) -> pd.Series:
    return runs.apply(variant, axis=1) if len(runs) else pd.Series(dtype=str)


def _target(runs: pd.DataFrame) -> str:
    return "/".join(sorted(runs["target"].unique())) if "target" in runs else "target"


def _setting(runs: pd.DataFrame) -> pd.Series:
    return runs["stages"].map({1: "one-stage", 2: "two-stage"}).fillna(runs["stages"].astype(str))


def accuracy_by_method(runs: pd.DataFrame, out_dir: Path) -> list[Path]:
    data = runs.assign(setting=_setting(runs), variant=_variants(runs))
    # source-only, then the reference, then the rest by name
    order = sorted(data["variant"].unique(), key=lambda v: (v != "source_only", not v.startswith("reference"), v))
    cols = sorted(data["cls_loss"].unique())
    grid = sns.catplot(data=data, kind="bar", x="variant", y="target_acc", hue="setting", col="cls_loss",
                       col_order=cols, order=order, errorbar="sd", capsize=0.15, height=3.6,
                       aspect=max(1.0, len(order) / 6), palette="colorblind")
    grid.set_axis_labels("adaptation method", f"{_target(runs)} test accuracy (%)")
    if len(order) > 6:
        for ax in grid.axes.flat:
            ax.tick_params(axis="x", labelrotation=60)
            plt.setp(ax.get_xticklabels(), ha="right")
    grid.set_titles("classification loss: {col_name}")
    lo = max(0.0, data["target_acc"].min() - 10)
    grid.set(ylim=(lo, min(100.0, data["target_acc"].max() + 5)))
    grid.legend.set_title("")
    grid.figure.suptitle("Target accuracy at the epoch selected without target labels (mean, error bars: s.d. over seeds)", y=1.04)
    return _save(grid.figure, out_dir, "accuracy_by_method")


def per_class_heatmap(runs: pd.DataFrame, out_dir: Path, classes: list[str]) -> list[Path]:
    rows = []
    for _, r in runs.iterrows():
        label = f"{'2' if r['stages'] == 2 else '1'}-stage {variant(r)} / {r['cls_loss']}"
        for c in classes:
            rows.append({"setting": label, "class": c, "acc": 100 * r["record"]["target_test"]["per_class"][c]})
    table = pd.DataFrame(rows).pivot_table(index="setting", columns="class", values="acc", aggfunc="mean")
    table = table[classes]
    fig, ax = plt.subplots(figsize=(1.0 * len(classes) + 3, 0.42 * len(table) + 1.5))
    sns.heatmap(table, annot=True, fmt=".0f", cmap="viridis", vmin=0, vmax=100, ax=ax,
                cbar_kws={"label": "per-class test accuracy (%)"})
    ax.set_xlabel("target class")
    ax.set_ylabel("setting / classification loss")
    ax.set_title("Per-class target accuracy (mean over seeds)")
    return _save(fig, out_dir, "per_class_heatmap")


def training_curves(runs: pd.DataFrame, out_dir: Path) -> list[Path]:
    rows = []
    for _, r in runs.iterrows():
        for e in r["record"]["epochs"]:
            for split, name in (("source_val", "source validation"), ("target_test", "target test")):
                if e[split] is not None:
                    rows.append({"epoch": e["epoch"], "accuracy": 100 * e[split]["accuracy"], "split": name,
                                 "method": variant(r), "setting": f"{'two' if r['stages'] == 2 else 'one'}-stage",
                                 "seed": r["seed"]})
    data = pd.DataFrame(rows)
    grid = sns.relplot(data=data, kind="line", x="epoch", y="accuracy", hue="method", style="split", col="setting",
                       errorbar="sd", height=3.6, aspect=1.2, palette="colorblind", markers=True)
    grid.set_axis_labels("epoch", "accuracy (%)")
    grid.set_titles("{col_name}")
    grid.figure.suptitle("Training curves (mean, band: s.d. over seeds and classification losses)", y=1.04)
    for ax in grid.axes.flat:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    return _save(grid.figure, out_dir, "training_curves")


def tsne(features: dict[str, dict], classes: list[str], out_dir: Path, per_domain: int = 500, seed: int = 0) -> list[Path]:
    """t-SNE of source and target bottleneck features, one column per method, coloured by domain and by class."""
    names = list(features)
    fig, axes = plt.subplots(2, len(names), figsize=(4.2 * len(names), 8.2), squeeze=False)
    rng = np.random.default_rng(seed)
    for j, name in enumerate(names):
        f = features[name]
        pick_s = rng.choice(len(f["source"]), min(per_domain, len(f["source"])), replace=False)
        pick_t = rng.choice(len(f["target"]), min(per_domain, len(f["target"])), replace=False)
        x = np.concatenate([f["source"][pick_s], f["target"][pick_t]]).astype(np.float32)
        emb = TSNE(n_components=2, init="pca", perplexity=30, random_state=seed).fit_transform(x)
        domain = np.r_[["source"] * len(pick_s), ["target"] * len(pick_t)]
        label = np.r_[f["source_labels"][pick_s], f["target_labels"][pick_t]]
        frame = pd.DataFrame({"x": emb[:, 0], "y": emb[:, 1], "domain": domain,
                              "class": [classes[i] for i in label]})
        sns.scatterplot(data=frame, x="x", y="y", hue="domain", s=6, linewidth=0, ax=axes[0, j], palette="Set1")
        sns.scatterplot(data=frame, x="x", y="y", hue="class", style="domain", s=8, linewidth=0, ax=axes[1, j],
                        palette="tab10", hue_order=classes)
        for i in range(2):
            axes[i, j].set_xlabel("t-SNE 1")
            axes[i, j].set_ylabel("t-SNE 2")
            if j < len(names) - 1:
                axes[i, j].get_legend().remove()
            else:
                axes[i, j].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, markerscale=2)
        axes[0, j].set_title(f"{name}: by domain")
        axes[1, j].set_title(f"{name}: by class")
    fig.suptitle("Bottleneck features of source validation and target test images (t-SNE)")
    fig.tight_layout()
    return _save(fig, out_dir, "tsne")
