"""Figures of an ablation (seaborn): accuracy by method, gain, confusion matrices, validators, loss curves,
predicted class shares, per-class heatmap, training curves, t-SNE; each with its data (a JSON beside it)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.lines  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

PDF_META = {"CreationDate": None}  # reproducible PDFs: no timestamp


def save_figure(fig, out_dir: Path, name: str) -> list[Path]:
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


# factors a figure shows in its own way (x label, hue, column) or averages over (the seeds)
SHOWN = {"method", "prior", "target_labeled_fraction", "stages", "cls_loss", "split_seed", "seed"}


def config_labels(runs: pd.DataFrame) -> pd.Series:
    """Each run's configuration as a figure names it: :func:`variant`, then every other factor that varies
    in ``runs`` (``mcc_weight 0.5``): runs of different settings are never averaged into one bar or line."""
    from da import settings as declared
    from da.results.tables import varying_factors

    extra = [f for f in varying_factors(runs) if f not in SHOWN]

    def label(r) -> str:  # a method's own setting is named only on the runs of a method that reads it
        own = [f for f in extra if f not in declared.USED_BY or declared.used_by(f, str(r["method"]).split("+"))]
        return ", ".join([variant(r), *(f"{f} {r[f]}" for f in own)])

    return runs.apply(label, axis=1) if len(runs) else pd.Series(dtype=str)


def palette(n: int) -> list:
    """n colours that stay distinct: the colour-blind palette up to its 10, evenly spaced hues beyond."""
    return sns.color_palette("colorblind", n) if n <= 10 else sns.color_palette("husl", n)


def _order(labels) -> list[str]:
    """Source-only first, then the reference, then the rest by name."""
    return sorted(set(labels), key=lambda v: (not v.startswith("source_only"), not v.startswith("reference"), v))


def accuracy_by_method(runs: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Target accuracy per configuration (bars from 0; error bars: s.d. over the runs of one configuration),
    with source-only's and the reference's means as dashed lines across each panel."""
    data = runs.assign(setting=_setting(runs), variant=config_labels(runs))
    order = _order(data["variant"])
    cols = sorted(data["cls_loss"].unique())
    settings = sorted(data["setting"].unique())
    grid = sns.catplot(data=data, kind="bar", x="variant", y="target_acc", hue="setting", col="cls_loss",
                       col_order=cols, order=order, hue_order=settings, errorbar="sd", capsize=0.15, height=3.6,
                       aspect=max(1.0, len(order) / 6), palette=palette(len(settings)))
    grid.set_axis_labels("configuration", f"{_target(runs)} test accuracy (%)")
    if len(order) > 6 or sum(len(v) for v in order) > 8 * len(order):
        for ax in grid.axes.flat:
            ax.tick_params(axis="x", labelrotation=60)
            plt.setp(ax.get_xticklabels(), ha="right")
    grid.set_titles("classification loss: {col_name}")
    grid.set(ylim=(0, 100))  # bars start at zero: their lengths are the accuracies
    for ax, col in zip(grid.axes.flat, cols):
        part = data[data["cls_loss"] == col]
        for prefix, style in (("source_only", ":"), ("reference", "--")):
            rows = part[part["variant"].str.match(rf"{prefix}( \(target labels\))?(,|$)")]  # no prior variant
            if len(rows) and len(settings) == 1:  # one line per panel is readable with one setting only
                ax.axhline(rows["target_acc"].mean(), color="0.3", linestyle=style, linewidth=1,
                           label=prefix.replace("_", "-"))
    grid.legend.set_title("")
    spread = "seeds and split seeds" if data["split_seed"].nunique() > 1 else "seeds"
    grid.figure.suptitle(f"Target accuracy at the epoch each run selected\n(mean; error bars: s.d. over {spread}; "
                         f"dotted: source-only, dashed: reference)", y=1.08)
    return save_figure(grid.figure, out_dir, "accuracy_by_method")


def tsne_panels(runs: pd.DataFrame) -> tuple[list[pd.Series], list[str]]:
    """The runs a t-SNE figure shows (one seed, the lowest): source-only, the label-free configuration with the
    best mean target accuracy and the reference, each where it exists; and the configurations left out."""
    data = runs.assign(label=config_labels(runs))
    means = data.groupby("label")["target_acc"].mean()
    free = [lab for lab in means.index if not lab.startswith(("source_only", "reference"))
            and not (data.loc[data["label"] == lab, "target_labeled_fraction"] > 0).any()]
    best = max(free, key=lambda lab: means[lab]) if free else None
    wanted = [lab for lab in _order(means.index) if lab.startswith(("source_only", "reference"))]
    wanted = [w for w in wanted if w.startswith("source_only")][:1] + ([best] if best else []) + \
        [w for w in wanted if w.startswith("reference")][:1]
    chosen = []
    for lab in wanted:
        g = data[data["label"] == lab]
        chosen.append(g[g["seed"] == g["seed"].min()].iloc[0])
    return chosen, [lab for lab in _order(means.index) if lab not in wanted]


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
    return save_figure(fig, out_dir, "per_class_heatmap")


def training_curves(runs: pd.DataFrame, out_dir: Path) -> list[Path]:
    rows = []
    for _, r in runs.assign(label=config_labels(runs)).iterrows():
        for e in r["record"]["epochs"]:
            for split, name in (("source_val", "source validation"), ("target_test", "target test")):
                if e[split] is not None:
                    rows.append({"epoch": e["epoch"], "accuracy": 100 * e[split]["accuracy"], "split": name,
                                 "method": r["label"], "setting": f"{'two' if r['stages'] == 2 else 'one'}-stage",
                                 "seed": r["seed"]})
    data = pd.DataFrame(rows)
    grid = sns.relplot(data=data, kind="line", x="epoch", y="accuracy", hue="method", style="split", col="setting",
                       errorbar="sd", height=3.6, aspect=1.2, palette=palette(data["method"].nunique()), markers=True)
    grid.set_axis_labels("epoch", "accuracy (%)")
    grid.set_titles("{col_name}")
    grid.figure.suptitle("Training curves (mean, band: s.d. over seeds and classification losses)", y=1.04)
    for ax in grid.axes.flat:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    return save_figure(grid.figure, out_dir, "training_curves")


def tsne(features: dict[str, dict], classes: list[str], out_dir: Path, per_domain: int = 500, seed: int = 0,
         left_out: list[str] = ()) -> list[Path]:
    """t-SNE of source and target bottleneck features, one column per run (:func:`tsne_panels` chooses them),
    coloured by domain and by class; the suptitle names what was left out."""
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
    fig.suptitle("Bottleneck features of source validation and target test images (t-SNE)"
                 + (f"; not shown: {', '.join(left_out)}" if left_out else ""), wrap=True)
    fig.tight_layout()
    return save_figure(fig, out_dir, "tsne")


def learning_curves(runs: pd.DataFrame, out_dir: Path, name: str = "learning_curves") -> list[Path]:
    """One column per stage-2 budget (``epochs``): above, target test accuracy per epoch of each method (mean,
    band: s.d. over seeds), with the source-only and reference runs; below, every validator's score per epoch,
    rescaled within each run to [0, 1] (0: the run's lowest epoch, 1: its highest) and averaged over the
    adaptation methods' runs, beside the target accuracy rescaled the same way: where a validator peaks
    against where the accuracy does."""
    from da.selection import scored_validator_names

    acc_rows, score_rows = [], []
    for _, r in runs.iterrows():
        epochs = r["record"]["epochs"]
        budget = f"{len(epochs)} epochs"
        for e in epochs:
            acc_rows.append({"budget": budget, "epoch": e["epoch"], "method": variant(r), "seed": r["seed"],
                             "accuracy": 100 * e["target_test"]["accuracy"]})
        if r["method"] == "source_only" or len(epochs) < 2:
            continue
        # a validator newer than the record has no scores in it
        series = {v: [e["scores"][v] for e in epochs] for v in scored_validator_names() if v in epochs[0].get("scores", {})}
        series["target accuracy (uses labels)"] = [e["target_test"]["accuracy"] for e in epochs]
        for v, values in series.items():
            values = np.asarray(values, dtype=float)
            span = np.nanmax(values) - np.nanmin(values)
            scaled = (values - np.nanmin(values)) / span if span > 0 else np.full_like(values, 0.5)
            score_rows += [{"budget": budget, "epoch": i + 1, "validator": v, "score": s} for i, s in enumerate(scaled)]
    acc, scores = pd.DataFrame(acc_rows), pd.DataFrame(score_rows)
    budgets = sorted(acc["budget"].unique(), key=lambda b: int(b.split()[0]))
    methods = sorted(acc["method"].unique(), key=lambda v: (v != "source_only", not v.startswith("reference"), v))
    fig, axes = plt.subplots(2, len(budgets), figsize=(4.2 * len(budgets), 7.4), squeeze=False,
                             sharey="row", gridspec_kw={"height_ratios": [1.3, 1]})
    colours = dict(zip(methods, palette(len(methods))))
    validators = sorted(scores["validator"].unique(), key=lambda v: (v.startswith("target"), v)) if len(scores) else []
    vpalette = dict(zip(validators[:-1], sns.color_palette("tab10", max(1, len(validators) - 1))))
    for j, budget in enumerate(budgets):
        sns.lineplot(data=acc[acc["budget"] == budget], x="epoch", y="accuracy", hue="method", hue_order=methods,
                     palette=colours, errorbar="sd", marker="o", ax=axes[0, j], legend=j == len(budgets) - 1)
        axes[0, j].set_title(f"stage 2: {budget} (cosine)")
        axes[0, j].set_ylabel(f"{_target(runs)} test accuracy (%)")
        if len(scores):
            part = scores[scores["budget"] == budget]
            truth = part["validator"].str.startswith("target")
            sns.lineplot(data=part[~truth], x="epoch", y="score", hue="validator", hue_order=validators[:-1],
                         palette=vpalette, errorbar=None, ax=axes[1, j], legend=j == len(budgets) - 1)
            means = part[truth].groupby("epoch")["score"].mean()
            axes[1, j].plot(means.index, means.to_numpy(), color="black", linestyle="--", linewidth=2,
                            label=validators[-1])
            if j == len(budgets) - 1:
                axes[1, j].legend()
        axes[1, j].set_ylabel("score, rescaled within each run")
        for i in range(2):
            axes[i, j].xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    for i in range(2):
        if axes[i, -1].get_legend():
            sns.move_legend(axes[i, -1], "center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, title="")
    fig.suptitle("Learning curves: target accuracy per epoch at each budget (above) and the validators' scores "
                 "(below, adaptation methods' runs)", y=1.0)
    fig.tight_layout()
    return save_figure(fig, out_dir, name)


# ------------------------------------------------------------------ figures with their data beside them
# Each of these draws from a small dict (``*_data(runs)``) that tables.py writes next to the figure as
# ``<name>.json`` with the command's source (runs folder, sweeps, selection rule), so a test can recompute
# the data of every committed figure from the committed records.

def json_number(x, digits: int = 2):
    """A float for a figure's JSON: rounded, NaN as null."""
    return None if x is None or not np.isfinite(x) else round(float(x), digits)


def save_data(out_dir: Path, name: str, data: dict, source: dict) -> Path:
    import json

    from da.utils.io import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    atomic_write_text(path, json.dumps({"figure": name, "source": source, "data": data}, indent=1, allow_nan=False) + "\n")
    return path


# what a configuration's label and the pairing carry: every other varying factor splits the runs into groups
LABELLED = {"method", "prior", "target_labeled_fraction", "split_seed", "seed"}


def _other_factors(runs: pd.DataFrame) -> list[str]:
    """The varying factors that tell comparable groups apart (a budget, a strategy, one or two stages, the
    classification loss): not the method, its prior, its target labels or its own settings, which are what a
    figure compares within a group.  A group holds one run per configuration, split seed and seed."""
    from da import settings as declared
    from da.results.tables import varying_factors

    return [f for f in varying_factors(runs) if f not in LABELLED and f not in declared.USED_BY]


def _groups(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    others = _other_factors(runs)
    if not others:
        return [("", runs)]
    return [(", ".join(f"{f} {v}" for f, v in zip(others, key if isinstance(key, tuple) else (key,))), g)
            for key, g in runs.groupby(others, sort=True)]


def accuracy_data(runs: pd.DataFrame) -> dict:
    """The numbers of :func:`accuracy_by_method`: per configuration and setting, mean and s.d. of target accuracy."""
    data = runs.assign(setting=_setting(runs), variant=config_labels(runs))
    rows = data.groupby(["cls_loss", "setting", "variant"], sort=True)["target_acc"]
    return {"bars": [{"cls_loss": c, "setting": s, "configuration": v, "mean": json_number(g.mean()),
                      "sd": json_number(g.std(ddof=1)) if len(g) > 1 else None, "runs": int(len(g))}
                     for (c, s, v), g in rows]}


def gain_data(runs: pd.DataFrame) -> dict:
    """Per group of comparable runs (:func:`_groups`): each configuration's gain over source-only, paired per
    seed and split seed (mean, 95 % paired t interval), and the share of the gap to the reference it closes
    (mean gain over the reference's mean gain)."""
    from da.results.gap import is_reference, is_source_only
    from da.results.paired import paired

    panels = []
    for group, g in _groups(runs.assign(label=config_labels(runs))):
        base = g[is_source_only(g)]
        if base.empty:
            continue
        ref = g[is_reference(g)]
        ref_gain = paired(ref, base).mean if len(ref) else float("nan")
        bars = []
        for label, c in g[~is_source_only(g) & ~is_reference(g)].groupby("label", sort=True):
            p = paired(c, base)
            low, high = p.interval()
            bars.append({"configuration": label, "uses_target_labels": bool((c["target_labeled_fraction"] > 0).any()),
                         "gain": json_number(p.mean), "interval": [json_number(low), json_number(high)], "pairs": p.n,
                         "gap_closed": json_number(100 * p.mean / ref_gain, 1) if np.isfinite(ref_gain) and ref_gain else None})
        bars.sort(key=lambda b: -(b["gain"] if b["gain"] is not None else -np.inf))
        panels.append({"group": group, "source_only": json_number(base["target_acc"].mean()),
                       "reference_gain": json_number(ref_gain), "bars": bars})
    return {"panels": panels}


def gain_chart(data: dict, out_dir: Path, target: str) -> list[Path]:
    """Horizontal bars: each configuration's paired gain over source-only (error bars: the 95 % paired t
    interval), source-only at 0 and the reference's gain as a dashed line, a top axis in % of the gap."""
    panels = [p for p in data["panels"] if p["bars"]]
    if not panels:
        return []
    height = max(len(p["bars"]) for p in panels)
    cols = min(3, len(panels))  # wrapped: a folder of many groups (stages x losses) stays readable
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7.5 * cols, (0.38 * height + 1.9) * rows), squeeze=False,
                             sharex=True)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, p in zip(axes.flat, panels):
        bars = p["bars"][::-1]  # the largest gain on top
        y = np.arange(len(bars))
        gains = np.array([b["gain"] if b["gain"] is not None else np.nan for b in bars])
        low = np.array([b["interval"][0] if b["interval"][0] is not None else np.nan for b in bars])
        high = np.array([b["interval"][1] if b["interval"][1] is not None else np.nan for b in bars])
        colours = ["0.7" if b["uses_target_labels"] else sns.color_palette("colorblind")[0] for b in bars]
        ax.barh(y, gains, color=colours)
        ax.errorbar(gains, y, xerr=[gains - low, high - gains], fmt="none", ecolor="black", capsize=3, linewidth=1)
        ax.set_yticks(y, [b["configuration"] + (" (uses target labels)" if b["uses_target_labels"] else "")
                          for b in bars], fontsize=8)
        ax.axvline(0, color="0.3", linestyle=":", linewidth=1)
        ref = p["reference_gain"]
        if ref:
            ax.axvline(ref, color="0.3", linestyle="--", linewidth=1)
            ax.secondary_xaxis("top", functions=(lambda g, r=ref: 100 * g / r, lambda c, r=ref: c * r / 100)
                               ).set_xlabel("gap to the reference closed (%)")
        ax.set_xlabel("gain over source-only (points)")
        ax.set_title(f"{p['group'] or target}: source-only {p['source_only']:.1f} %", fontsize=9)
    fig.tight_layout()
    fig.suptitle(f"Gain over source-only on {target}, paired per seed", y=1.0, va="bottom")
    fig.text(0.5, 0.0, "bars: mean gain; error bars: 95 % paired t interval; dotted: source-only; dashed: the reference "
             "(trained with target labels) = 100 % of the gap", ha="center", va="top", fontsize=8)
    return save_figure(fig, out_dir, "gain")


def _panel_labels(runs: pd.DataFrame) -> list[str]:
    """Source-only, the label-free configuration with the best mean target accuracy and the reference, those
    two from the best one's group (the same budget, strategy, ...), each where it exists."""
    from da.results.gap import is_reference, is_source_only

    data = runs.assign(label=config_labels(runs))
    free = data[~is_source_only(data) & (data["target_labeled_fraction"] == 0)]
    if free.empty:
        return []
    best = free.groupby("label")["target_acc"].mean().idxmax()
    others = _other_factors(runs)
    row = data[data["label"] == best].iloc[0]
    same = data[np.logical_and.reduce([data[f] == row[f] for f in others] or [np.ones(len(data), bool)])]
    labels = []
    for pick in (is_source_only(same), None, is_reference(same)):
        if pick is None:
            labels.append(best)
        elif pick.any():
            labels.append(same.loc[pick, "label"].iloc[0])
    return labels


def confusion_data(runs: pd.DataFrame) -> dict:
    """Row-normalised target-test confusion matrices (%, at each run's reported epoch) averaged over the seeds of
    source-only, the best label-free configuration and the reference (:func:`_panel_labels`)."""
    from da.results.gap import row_rates
    from da.results.load import reported_confusion

    data = runs.assign(label=config_labels(runs))
    panels = []
    for label in _panel_labels(runs):
        rows = data[data["label"] == label]
        rates = [row_rates(reported_confusion(r)) for _, r in rows.iterrows()]
        panels.append({"configuration": label, "runs": int(len(rows)),
                       "matrix": [[json_number(v, 1) for v in line] for line in np.mean(rates, axis=0)]})
    return {"classes": list(runs["record"].iloc[0]["classes"]), "panels": panels}


def confusion_matrices(data: dict, out_dir: Path, target: str) -> list[Path]:
    """One annotated heatmap per panel of :func:`confusion_data`: rows the true class, columns the predicted."""
    panels, classes = data["panels"], data["classes"]
    if not panels:
        return []
    size = 0.62 * len(classes) + 1.6
    fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size), squeeze=False)
    for ax, p in zip(axes[0], panels):
        sns.heatmap(np.array(p["matrix"], dtype=float), annot=True, fmt=".0f", cmap="Blues", vmin=0, vmax=100,
                    xticklabels=classes, yticklabels=classes, cbar=False, ax=ax, annot_kws={"fontsize": 7})
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"{p['configuration']} ({p['runs']} runs)", fontsize=9)
    fig.suptitle(f"{target} test images: share (%) of each true class predicted as each class, at the reported "
                 f"epoch, mean over runs", y=1.02)
    fig.tight_layout()
    return save_figure(fig, out_dir, "confusion_matrices")


def validator_data(runs: pd.DataFrame) -> dict:
    """Every epoch of every run: each validator's score and the target accuracy (%), pooled, with the Spearman
    rank correlation of the validator table (da.results.selection.validator_table); ``rank`` and ``last``,
    which score nothing of their own, are left out."""
    from scipy.stats import spearmanr

    from da.results.selection import MixedVersions, check_versions, epoch_scores
    from da.selection import scored_validator_names, selection_scores

    validators = []
    for name in scored_validator_names():
        if not all(all(name in (e.get("scores") or {}) for e in r["epochs"]) for r in runs["record"]):
            continue  # a record made before this validator existed
        try:
            check_versions(runs, name)
        except MixedVersions:
            continue  # two versions of its score: never pooled, left out as in the validator table
        points = [(float(s), 100 * e["target_test"]["accuracy"], variant(r))
                  for _, r in runs.iterrows()
                  for s, e in zip(selection_scores(epoch_scores(r["record"]), name), r["record"]["epochs"])]
        finite = [(s, a, m) for s, a, m in points if np.isfinite(s)]
        rho = spearmanr([p[0] for p in finite], [p[1] for p in finite]).statistic if len({p[0] for p in finite}) > 1 else np.nan
        validators.append({"validator": name, "points": len(finite), "spearman": json_number(rho, 3),
                           "score": [json_number(p[0], 4) for p in finite], "accuracy": [json_number(p[1], 2) for p in finite],
                           "method": [p[2] for p in finite]})
    return {"validators": validators}


def validator_scores(data: dict, out_dir: Path, target: str) -> list[Path]:
    """One panel per validator: its score against target accuracy at every epoch of every run, coloured by method."""
    shown = [v for v in data["validators"] if v["points"]]
    if not shown:
        return []
    methods = sorted({m for v in shown for m in v["method"]}, key=lambda m: (m != "source_only", m))
    colours = dict(zip(methods, palette(len(methods))))
    cols = min(4, len(shown))
    rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False, sharey=True)
    for ax, v in zip(axes.flat, shown):
        frame = pd.DataFrame({"score": v["score"], "accuracy": v["accuracy"], "method": v["method"]})
        sns.scatterplot(data=frame, x="score", y="accuracy", hue="method", hue_order=methods, palette=colours, s=12,
                        linewidth=0, ax=ax, legend=ax is axes.flat[0])
        ax.set_title(f"{v['validator']} (Spearman {v['spearman']})" if v["spearman"] is not None else v["validator"],
                     fontsize=9)
        ax.set_xlabel("score")
        ax.set_ylabel(f"{target} test accuracy (%)")
    for ax in list(axes.flat)[len(shown):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if axes.flat[0].get_legend():
        axes.flat[0].get_legend().remove()
    fig.tight_layout()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(4, len(labels)), fontsize=8,
               markerscale=1.5, frameon=False)
    fig.suptitle("Label-free validators against target accuracy, every epoch of every run (Spearman: pooled, as in "
                 "tables/validators.md)", y=1.0, va="bottom")
    return save_figure(fig, out_dir, "validator_scores")


def class_gain_data(runs: pd.DataFrame) -> dict:
    """Per group of comparable runs (:func:`_groups`) and configuration: each target class's recall minus
    source-only's, paired per seed and split seed (mean over the pairs, points), at each run's reported epoch;
    the rows a per-class view of the gain chart, where a class that a method gives away shows."""
    from da.results.gap import is_source_only, row_rates
    from da.results.load import reported_confusion
    from da.results.paired import paired

    classes = list(runs["record"].iloc[0]["classes"])
    recalls = np.stack([np.diag(row_rates(reported_confusion(r))) for _, r in runs.iterrows()])
    data = runs.assign(label=config_labels(runs), **{f"recall_{i}": recalls[:, i] for i in range(len(classes))})
    panels = []
    for group, g in _groups(data):
        base = g[is_source_only(g)]
        if base.empty:
            continue
        rows = []
        for label in _order(g.loc[~is_source_only(g), "label"]):
            c = g[g["label"] == label]
            diffs = [paired(c, base, f"recall_{i}") for i in range(len(classes))]
            rows.append({"configuration": label, "pairs": diffs[0].n, "difference": [json_number(d.mean, 1) for d in diffs]})
        panels.append({"group": group, "source_only": [json_number(v, 1) for v in base[[f"recall_{i}" for i in range(len(classes))]].mean()],
                       "rows": rows})
    return {"classes": classes, "panels": panels}


def class_gain(data: dict, out_dir: Path, target: str) -> list[Path]:
    """One heatmap per group: configurations x classes, the paired change in recall against source-only (points;
    red: lost, blue: gained); source-only's own recall in the column labels."""
    panels = [p for p in data["panels"] if p["rows"]]
    if not panels:
        return []
    classes = data["classes"]
    height = sum(0.32 * len(p["rows"]) + 1.4 for p in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(0.9 * len(classes) + 4.5, height), squeeze=False,
                             gridspec_kw={"height_ratios": [len(p["rows"]) + 2 for p in panels]})
    for ax, p in zip(axes[:, 0], panels):
        values = np.array([[np.nan if v is None else v for v in r["difference"]] for r in p["rows"]], dtype=float)
        bound = max(5.0, float(np.nanmax(np.abs(values)))) if np.isfinite(values).any() else 5.0
        sns.heatmap(values, annot=True, fmt="+.0f", cmap="RdBu", vmin=-bound, vmax=bound, center=0, ax=ax,
                    xticklabels=[f"{c}\n({s:.0f})" for c, s in zip(classes, p["source_only"])],
                    yticklabels=[f"{r['configuration']} ({r['pairs']})" for r in p["rows"]],
                    cbar_kws={"label": "recall - source-only's (points)"}, annot_kws={"fontsize": 7})
        ax.set_title(p["group"] or "", fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(f"{target} test: per-class recall minus source-only's, paired per seed (mean; in brackets the pairs; "
                 f"under each class source-only's recall, %)", y=1.0, va="bottom", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out_dir, "class_gain")


def loss_data(runs: pd.DataFrame) -> dict:
    """Per configuration (:func:`config_labels`) and loss term of the records (``total``, ``cls``, each method's
    own terms): the mean and s.d. over seeds of its per-epoch training value."""
    data = runs.assign(label=config_labels(runs))
    terms = sorted({t for rec in runs["record"] for e in rec["epochs"] for t in (e.get("loss") or {})},
                   key=lambda t: (t != "total", t != "cls", t))
    panels = []
    for term in terms:
        lines = []
        for label in _order(data["label"]):
            per_run = [[e["loss"][term] for e in r["epochs"]] for r in data.loc[data["label"] == label, "record"]
                       if all(term in (e.get("loss") or {}) for e in r["epochs"])]
            if not per_run or len({len(v) for v in per_run}) != 1:
                continue  # a term this configuration has no value of (or runs of different lengths)
            values = np.array(per_run, dtype=float)
            lines.append({"configuration": label, "runs": len(per_run),
                          "mean": [json_number(v, 4) for v in values.mean(axis=0)],
                          "sd": [json_number(v, 4) for v in values.std(axis=0, ddof=1)] if len(per_run) > 1 else None})
        if lines:
            panels.append({"term": term, "lines": lines})
    return {"panels": panels}


def loss_curves(data: dict, out_dir: Path, target: str) -> list[Path]:
    """One panel per loss term (own y axis: the terms differ in scale), one line per configuration (band: s.d.
    over seeds), colours that stay distinct past ten configurations."""
    panels = data["panels"]
    if not panels:
        return []
    labels = _order({line["configuration"] for p in panels for line in p["lines"]})
    colours = dict(zip(labels, palette(len(labels))))
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, p in zip(axes.flat, panels):
        for line in p["lines"]:
            mean = np.array(line["mean"], dtype=float)
            epochs = np.arange(1, len(mean) + 1)
            ax.plot(epochs, mean, marker="o", ms=3, color=colours[line["configuration"]], label=line["configuration"])
            if line["sd"] is not None:
                sd = np.array(line["sd"], dtype=float)
                ax.fill_between(epochs, mean - sd, mean + sd, color=colours[line["configuration"]], alpha=0.15, lw=0)
        ax.set_title(p["term"], fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss (epoch mean)")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles = [matplotlib.lines.Line2D([], [], color=colours[l], marker="o", ms=3) for l in labels]
    fig.tight_layout()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(4, len(labels)), fontsize=8,
               frameon=False)
    fig.suptitle(f"Training losses per term (stage 2, {target}; mean over seeds, band: s.d.)", y=1.0, va="bottom")
    return save_figure(fig, out_dir, "loss_curves")


def prior_data(runs: pd.DataFrame) -> dict:
    """Per configuration, at each run's reported epoch, mean over seeds: the share (%) of the target test images
    predicted as each class (no label read), the true class shares of the target test split (its labels: shown,
    never used), the source's class shares, and, for runs with ``--prior``, the estimated target prior and its L1
    error against the true test prior."""
    from da.results.load import reported_confusion

    data = runs.assign(label=config_labels(runs))
    first = runs["record"].iloc[0]
    source = np.asarray(first["source_val"]["confusion"], dtype=float).sum(axis=1)
    configurations = []
    truth = None
    for label in _order(data["label"]):
        rows = data[data["label"] == label]
        confusions = [np.asarray(reported_confusion(r), dtype=float) for _, r in rows.iterrows()]
        predicted = np.mean([100 * c.sum(axis=0) / c.sum() for c in confusions], axis=0)
        truth = np.mean([100 * c.sum(axis=1) / c.sum() for c in confusions], axis=0)
        priors = [r["record"]["epochs"][int(r["selected_epoch"]) - 1].get("prior") for _, r in rows.iterrows()]
        estimate = l1 = None
        if all(priors):
            estimate = [json_number(100 * v, 1) for v in np.mean([p["estimate"] for p in priors], axis=0)]
            l1 = json_number(float(np.mean([p["l1_error"] for p in priors])), 3)
        configurations.append({"configuration": label, "runs": int(len(rows)),
                               "predicted": [json_number(v, 1) for v in predicted], "prior_estimate": estimate,
                               "prior_l1_error": l1})
    return {"classes": list(first["classes"]), "target_test_shares": [json_number(v, 1) for v in truth],
            "source_shares": [json_number(v, 1) for v in 100 * source / source.sum()], "configurations": configurations}


def prior_shares(data: dict, out_dir: Path, target: str) -> list[Path]:
    """Left: each configuration's predicted class shares against the true target test shares (black) and the
    source's (grey); right: the L1 error of each prior estimate (runs with --prior)."""
    classes, configs = data["classes"], data["configurations"]
    estimated = [c for c in configs if c["prior_l1_error"] is not None]
    fig, axes = plt.subplots(1, 2 if estimated else 1, figsize=(13 if estimated else 9, 4.2), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1]} if estimated else None)
    ax = axes[0][0]
    x = np.arange(len(classes))
    colours = palette(len(configs))
    width = 0.8 / max(len(configs), 1)
    for i, c in enumerate(configs):
        ax.bar(x - 0.4 + (i + 0.5) * width, c["predicted"], width, color=colours[i], label=c["configuration"])
    ax.scatter(x, data["target_test_shares"], marker="_", s=600, color="black", zorder=3, label="true target test shares")
    ax.scatter(x, data["source_shares"], marker="_", s=600, color="grey", zorder=3, label="source shares")
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set_ylabel("share of target test images (%)")
    ax.set_title("Predicted class shares (bars) against the true prior", fontsize=9)
    ax.legend(fontsize=7, ncol=3, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    if estimated:
        ax2 = axes[0][1]
        ax2.barh([c["configuration"] for c in estimated], [c["prior_l1_error"] for c in estimated],
                 color=[colours[configs.index(c)] for c in estimated])
        ax2.invert_yaxis()
        ax2.set_xlabel("L1 error of the prior estimate")
        ax2.set_title("Prior estimate (--prior)", fontsize=9)
    fig.suptitle(f"{target}: predicted class shares at the reported epoch, mean over seeds", y=1.0, va="bottom")
    fig.tight_layout()
    return save_figure(fig, out_dir, "prior_shares")


# figure name -> (what its JSON holds, what draws it from that): experiments/tables.py writes both
DRAWN_FROM_DATA = {"gain": (gain_data, gain_chart), "validator_scores": (validator_data, validator_scores),
                   "confusion_matrices": (confusion_data, confusion_matrices), "loss_curves": (loss_data, loss_curves),
                   "class_gain": (class_gain_data, class_gain), "prior_shares": (prior_data, prior_shares)}
# figure name -> what its JSON holds, recomputed by the tests
DATA = {"accuracy_by_method": accuracy_data, **{name: compute for name, (compute, _) in DRAWN_FROM_DATA.items()}}
