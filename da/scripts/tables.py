"""Regenerate the ablation tables (results/tables/) and figures (results/figures/) from run records.

    da-tables --runs results/runs --out results
    da-tables --runs results/runs --sweep main --sweep label_shift --out results/label_shift

Tables: mean +- std over seeds of target accuracy and macro F1 at the selected epoch (source-validation
accuracy, or another label-free rule with --selection, re-selected from the per-epoch scores in the
records), the gain over the matching source-only row, best in bold (Markdown and LaTeX); the oracle
(best target-test epoch) in its own table; the proxy A-distance of the bottleneck features; and, when
the records hold validator scores, the validator table (each rule's selected accuracy, gap to the
oracle and rank correlation with target accuracy).  (``python experiments/tables.py`` in a checkout is
the same program.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from da.launch import load_sweep
from da.launch.sweep import SWEEPS_DIR, known_names
from da.results import ablation_table, load_runs, oracle_table, render_latex, render_markdown
from da.records import RecordError
from da.results.selection import render_validator_table, reselect, validator_table
from da.results.gap import (confusion_pairs, confusion_table, gap_table, is_reference, is_source_only,
                            with_known_confusions)
from da.results.harm import harm_table, render_harm_table
from da.results.paired import paired_table, render_paired_table
from da.results.tables import (baseline_comparison, prediction_shares, render_baseline_comparison, summarise,
                               varying_factors)
from da.selection import DEFAULT, validator_names
from da.utils.io import atomic_write_text


BOLD_NOTE = (" Bold: the best value of a column, only where its per-seed paired 95 % interval against the "
             "runner-up excludes 0 (tables/paired.md).")


def write_table(out: Path, name: str, table, factors, caption: str) -> None:
    if any(c.endswith("_values") for c in table.columns) and not caption.endswith(BOLD_NOTE):
        caption += BOLD_NOTE
    atomic_write_text(out / f"{name}.md", render_markdown(table, factors, caption))
    atomic_write_text(out / f"{name}.tex", render_latex(table, factors, caption, label=f"tab:{name}"))


def write_validator_tables(runs, tables: Path, what: str) -> None:
    vt = validator_table(runs)
    caption = (f"Label-free validators on {what}: target test accuracy (%) of the epoch each selects (mean ± "
               "s.d. over runs), its mean gap to the oracle epoch, how often it picks the oracle epoch, the "
               "Spearman correlation of its score with target accuracy over all epochs of all runs, and, per run, "
               "its selected accuracy minus the last epoch's (mean and 95 % paired t interval). The two controls "
               "come first: source accuracy, the classic rule, and the last epoch, which selects nothing. Bold: the best "
               "selected accuracy, only where its per-run paired 95 % interval against the runner-up excludes 0.")
    if vt.attrs["left_out"]:
        caption += (f" Left out: {', '.join(vt.attrs['left_out'])}, which some of these records have no score for "
                    f"(they were made before it); rerun them to include it.")
    if vt.attrs["versions"]:
        caption += " Scores of " + ", ".join(f"{v} are its version {k}" for v, k in vt.attrs["versions"].items()) + \
            " (da.selection; records that keep no versions have version 1 of every validator)."
    if vt.attrs["mixed_versions"]:
        caption += (f" Left out: {', '.join(vt.attrs['mixed_versions'])}, whose scores in these records come from two "
                    f"versions of the validator (da.selection), which are never pooled; rerun the older runs to include it.")
    atomic_write_text(tables / "validators.md", caption + "\n\n" + render_validator_table(vt, "markdown"))
    atomic_write_text(tables / "validators.tex", render_validator_table(vt, "latex"))


def selected_runs(folder: str, sweeps: list[str], selection: str | None, strict: bool):
    """The finished runs under ``folder`` (only those of ``sweeps`` when given), re-selected by ``selection``."""
    runs = load_runs(folder, strict=strict)
    if sweeps:
        wanted = {cfg.config_hash() for name in sweeps for cfg in load_sweep(name).configs()}
        runs = runs[runs["config_hash"].isin(wanted)].reset_index(drop=True)
        if runs.empty:
            raise FileNotFoundError(f"no finished run of sweep(s) {', '.join(sweeps)} under {folder}")
    return reselect(runs, selection) if selection else runs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="results/runs", help="folder of run directories with record.json + DONE")
    ap.add_argument("--out", default="results", help="writes <out>/tables and <out>/figures")
    ap.add_argument("--expected-seeds", type=int, default=None, help="flag rows with fewer seeds (default: the most any row has)")
    ap.add_argument("--sweep", action="append", default=[],
                    help=f"only the runs of this sweep: a sweep shipped with da, by name "
                         f"({', '.join(known_names(SWEEPS_DIR))}), or the path of a sweep YAML file; repeat for several")
    ap.add_argument("--selection", default=None, choices=validator_names(),
                    help="re-select every run's epoch with this label-free rule (default: each run's own)")
    ap.add_argument("--baseline", default=None, help="a runs folder to compare with, group by group "
                    "(tables/vs_baseline.md): did a change of protocol move the results?")
    ap.add_argument("--baseline-sweep", action="append", default=[], help="only these sweeps' runs of --baseline")
    ap.add_argument("--no-figures", action="store_true", help="tables only")
    ap.add_argument("--features-from", help="folder of the same runs' directories as they trained (with features.npz, "
                    "which archived runs do not keep), for the t-SNE figure; default: --runs")
    ap.add_argument("--strict", action="store_true",
                    help="refuse bad records (naming them) instead of leaving them out with a warning")
    ap.add_argument("--study", action="append", default=[], metavar="DIR",
                    help="a study folder of da-hpo (<out>/studies/<name>): write only its study table, "
                         "<out>/tables/study_<name>.md and .tex (the label-free choice vs the default vs the oracle trial); "
                         "records are looked up under --runs, then the study's own runs folder; repeat for several")
    ap.add_argument("--validators-from", action="append", default=[], metavar="DIR",
                    help="runs folders of one pair (repeat for several; --sweep applies to each): write only "
                         "<out>/tables/validators.md/.tex, the validator table over all their runs pooled")
    ap.add_argument("--transfer-a", action="append", default=[], metavar="DIR",
                    help="runs folders of one pair's candidates (repeat for several), with --transfer-b those of the "
                         "other pair: write only <out>/tables/transfer.md and <out>/figures/transfer.png, how one pair's "
                         "ranking of configurations carries to the other (read at --selection, else each run's own epoch)")
    ap.add_argument("--transfer-b", action="append", default=[], metavar="DIR", help="see --transfer-a")
    ap.add_argument("--headline", action="store_true",
                    help="write only <out>/headline.md: both pairs under the protocol, from the committed records "
                         "of the protocol sweeps (the block README.md quotes between its headline markers)")
    ap.add_argument("--update-readme", metavar="FILE", default=None,
                    help="with --headline: also replace the headline block of this README")
    ap.add_argument("--detection", metavar="DIR", default=None,
                    help="a folder of da-detect runs (det-*): write only <out>/tables/detection.md and, when the "
                         "val-chosen run's model is there, <out>/figures/detections.png")
    args = ap.parse_args(argv)
    if args.detection:
        from da.results.detection import write_detection_report

        try:
            paths = write_detection_report(args.detection, args.out, figure=not args.no_figures)
        except (FileNotFoundError, ValueError, KeyError) as err:
            ap.error(str(err))
        for path in paths:
            print(f"written: {path}")
        return 0
    if args.study:
        from da.results.study import study_figure, study_figure_data, study_summary, write_study_table

        for folder in args.study:
            try:
                path = write_study_table(folder, Path(args.out) / "tables" / f"study_{Path(folder).name}.md",
                                         runs=args.runs)
            except (FileNotFoundError, ValueError, RecordError) as err:
                ap.error(str(err))
            print(f"study table written to {path}")
            if not args.no_figures:
                from da.results.figures import save_data

                data = study_figure_data(study_summary(folder, args.runs))
                fig_dir = Path(args.out) / "figures"
                study_figure(data, fig_dir)
                source = {"study": str(folder)} | ({"runs": str(args.runs)} if args.runs else {})
                path = save_data(fig_dir, f"study_{data['name']}", data, source)
                print(f"study figure written to {path.with_suffix('.png')}")
        return 0
    if args.headline:
        from da.results.headline import END, START, headline_markdown

        try:
            block = headline_markdown(".")
        except (FileNotFoundError, ValueError, RecordError) as err:
            ap.error(str(err))
        atomic_write_text(Path(args.out) / "headline.md", block)
        if args.update_readme:
            text = Path(args.update_readme).read_text()
            start, end = text.find(START), text.find(END)
            if start < 0 or end < 0:
                ap.error(f"{args.update_readme} has no {START} ... {END} block to replace")
            atomic_write_text(Path(args.update_readme), text[:start] + block.rstrip("\n") + text[end + len(END):])
        print(f"headline written to {Path(args.out) / 'headline.md'}")
        return 0
    if args.transfer_a or args.transfer_b:
        from da.results.transfer import transfer_figure, transfer_figure_data, transfer_markdown, transfer_of

        if not (args.transfer_a and args.transfer_b):
            ap.error("--transfer-a and --transfer-b go together: the runs folders of each of two pairs")
        try:
            result = transfer_of(args.transfer_a, args.transfer_b, args.selection, args.strict)
        except (FileNotFoundError, ValueError, RecordError) as err:
            ap.error(str(err))
        atomic_write_text(Path(args.out) / "tables" / "transfer.md", transfer_markdown(result))
        print(f"transfer table written to {Path(args.out) / 'tables' / 'transfer.md'}")
        if not args.no_figures:
            from da.results.figures import save_data

            data = transfer_figure_data(result)
            transfer_figure(data, Path(args.out) / "figures")
            save_data(Path(args.out) / "figures", "transfer", data,
                      {"transfer_a": args.transfer_a, "transfer_b": args.transfer_b, "selection": args.selection})
            print(f"transfer figure written to {Path(args.out) / 'figures' / 'transfer.png'}")
        return 0
    if args.validators_from:
        import pandas as pd

        try:
            frames = [load_runs(folder, strict=args.strict) for folder in args.validators_from]
            # a run archived in two folders (a split-seed sweep shares its split-0 runs) counts once
            pooled = pd.concat(frames, ignore_index=True).drop_duplicates(["config_hash", "seed"]).reset_index(drop=True)
            if args.sweep:
                wanted = {cfg.config_hash() for name in args.sweep for cfg in load_sweep(name).configs()}
                pooled = pooled[pooled["config_hash"].isin(wanted)].reset_index(drop=True)
            write_validator_tables(pooled, Path(args.out) / "tables", "these folders: " + ", ".join(args.validators_from))
        except (FileNotFoundError, ValueError, RecordError) as err:
            ap.error(str(err))
        print(f"validator table written to {Path(args.out) / 'tables'}")
        return 0
    try:
        runs = selected_runs(args.runs, args.sweep, args.selection, args.strict)
        baseline = (selected_runs(args.baseline, args.baseline_sweep, args.selection, args.strict)
                    if args.baseline else None)
    except (FileNotFoundError, ValueError, RecordError) as err:
        ap.error(str(err))
    tables = Path(args.out) / "tables"
    rules = set(runs["record"].map(lambda r: r.get("selection", DEFAULT) if r["schema_version"] > 1 else DEFAULT))
    rule = args.selection or (rules.pop() if len(rules) == 1 else "each run's own rule")
    # confusion matrices exist for the epoch selected in training, and for every epoch in runs made since
    kept_epoch_only = args.selection is None or (runs["selected_epoch"] == runs["record"].map(
        lambda r: r["selected_epoch"])).all()
    confusions_known = kept_epoch_only or runs["confusion"].map(lambda c: isinstance(c, list)).all()
    target = "/".join(sorted(runs["target"].unique()))
    chosen = 'on source validation accuracy' if rule == DEFAULT else f'without target labels ({rule})'
    table, factors = ablation_table(runs, args.expected_seeds)
    write_table(tables, "ablation", table, factors,
                f"Target ({target}) test accuracy and macro F1 (%) at the epoch selected {chosen}, "
                f"mean ± s.d. over seeds; gain: accuracy points over the matching source-only row.")
    if is_reference(runs).any():
        table, factors = gap_table(runs, args.expected_seeds)
        write_table(tables, "gap", table, factors,
                    f"Closing the gap on {target}: target test accuracy and macro F1 (%) at the epoch selected {chosen}, "
                    f"mean ± s.d. over seeds. Prior-corrected: the same model's predictions under its estimated "
                    f"target prior (EM after BCTS), with the estimate's L1 error against the true prior of the target "
                    f"training split. Gain and gap closed against plain source-only: gap closed = (acc - source-only) / "
                    f"(reference - source-only). The reference is trained with every target-train label: a yardstick, "
                    f"not a result.")
        # per-class tables over the configurations whose records hold the reported epoch's confusion matrix
        known, left_out = (runs, []) if confusions_known else with_known_confusions(runs)
        if is_source_only(known).any():
            note = "" if not left_out else (
                f" Left out: {'; '.join(left_out)}, whose records keep no confusion matrix at the reported epoch "
                f"(made before the records kept one per epoch, and trained with another selection rule).")
            pairs = confusion_pairs(known)
            table, factors = confusion_table(known, pairs, args.expected_seeds)
            write_table(tables, "confusions", table, factors,
                        f"The confusions the gap is made of: share (%) of the {target} test images of a class "
                        f"predicted as another (the {len(pairs)} largest confusions of source-only), and that class's "
                        f"recall, mean ± s.d. over seeds." + note)
            atomic_write_text(tables / "harm.md", (
                f"Do no harm on {target}: each method against the source-only run of the same split seed and seed: "
                f"runs whose target accuracy is below source-only's, the smallest paired gain, and the largest drop "
                f"of one class's recall (the run, and the class most of its test images went to), at the reported "
                f"epoch.{note}\n\n") + render_harm_table(harm_table(known)))
    if baseline is not None:
        table, factors = baseline_comparison(runs, baseline)
        atomic_write_text(tables / "vs_baseline.md", render_baseline_comparison(
            table, factors, f"Target (RSSCN7) test accuracy (%), these runs ({args.runs}) against the baseline "
                            f"({args.baseline}{', sweep ' + ', '.join(args.baseline_sweep) if args.baseline_sweep else ''}"
                            f"), mean ± s.d. over seeds, the same selection rule on both."))
    table, factors = oracle_table(runs, args.expected_seeds)
    write_table(tables, "oracle", table, factors,
                "ORACLE, not a result: target test accuracy at the best target-test epoch, which looks at target "
                "labels. An upper bound on what model selection could reach, mean ± s.d. over seeds.")
    if kept_epoch_only and runs["record"].map(lambda r: r.get("proxy_a_distance") is not None).all():
        pad_runs = runs.assign(pad=runs["record"].map(lambda r: r["proxy_a_distance"]))
        table, factors = summarise(pad_runs, {"pad": "proxy A-distance"}, args.expected_seeds)
        write_table(tables, "adistance", table, factors,
                    "Proxy A-distance 2(1 - 2 err) between source-validation and target-test bottleneck features "
                    "of the selected model (lower: domains harder to tell apart), mean ± s.d. over seeds.")
    table, factors, source = prediction_shares(runs, args.expected_seeds)
    if kept_epoch_only:
        write_table(tables, "predicted_shares", table, factors,
                    "Share (%) of the target test images predicted as each class (no target label is read), mean ± "
                    "s.d. over seeds. Source class shares: " + ", ".join(f"{c} {v:.1f}" for c, v in source.items()) + ".")
    if runs["split_seed"].nunique() > 1:
        from da.results.splits import render_split_table, split_table

        table, factors = split_table(runs)
        atomic_write_text(tables / "splits.md", render_split_table(table, factors, (
            f"Split seeds on {target} (epoch selected {chosen}): target test accuracy (%) over all runs of a "
            f"configuration (every split seed x training seed), mean ± s.d., and the s.d. that comes from the data "
            f"split and from the training seed (one-way random-effects analysis of variance), the split's share of "
            f"the variance, and the gap closed by the pooled means.")))
    if runs["transductive"].nunique() > 1:
        from da.results.published import render_published_table, published_table

        atomic_write_text(tables / "published.md", (
            f"The published protocol beside ours on {target}: target accuracy (%), mean ± s.d. over seeds; the "
            f"gain is paired per seed with source-only of the same protocol. Rows of the published protocol use "
            f"target labels to choose the epoch (the whole target set is also the test set): they are comparable "
            f"with the papers' numbers, never a label-free result.\n\n") + render_published_table(published_table(runs)))
    pf = [f for f in (varying_factors(runs) or ["method"]) if f != "split_seed"]
    pt = paired_table(runs, pf if "method" in pf else ["method", *pf])
    if not pt.empty:
        atomic_write_text(tables / "paired.md", render_paired_table(pt, (
            f"Paired comparisons on {target} (epoch selected {chosen}): per seed, the target test accuracy of a "
            f"configuration minus that of its source-only partner (same seed and split seed, same other factors), "
            f"and of the best label-free configuration minus the runner-up and each other label-free configuration; their "
            f"mean ± s.d. and the 95 % paired t "
            f"interval. A difference is read as one only where the interval excludes 0.")))
    if runs["strategy"].nunique() > 1:
        from da.results.strategies import BASELINE, render_strategy_table, strategy_table

        if (runs["strategy"] == BASELINE).any():
            atomic_write_text(tables / "strategies.md", render_strategy_table(strategy_table(runs), (
                f"Fine-tuning strategies on {target} (epoch selected {chosen}): target test accuracy (%), mean ± s.d. "
                f"over seeds; the parameters each strategy trains (computed from its config); per seed, the accuracy "
                f"minus that of the same method with {BASELINE} (same seed, split and stage-1 model), its mean ± "
                f"s.d. and 95 % paired t interval. Time and memory: experiments/bench_lora.py.")))
    if runs["weight_ema"].nunique() > 1 and (runs["weight_ema"] == 0).any():
        from da.results.factor import factor_table, render_factor_table

        atomic_write_text(tables / "weight_average.md", render_factor_table(
            factor_table(runs, "weight_ema", 0.0), "weight_ema", 0.0, (
                f"The weight average (--weight-ema) on {target} (epoch selected {chosen}): target test accuracy (%), "
                f"mean ± s.d. over seeds, of the model kept: the average of the trained weights with decay d per step, "
                f"or the trained weights themselves (none); per seed, the accuracy minus that of the same method "
                f"without the average (same seed, split and stage-1 model: the same training), its mean ± s.d. and "
                f"95 % paired t interval."),
            header="weight average (decay)", show=lambda d: "none" if d == 0 else f"{d:g}"))
    if runs["record"].map(lambda r: all("scores" in e for e in r["epochs"])).all():
        try:
            write_validator_tables(runs, tables, "these runs")
        except RecordError as err:
            ap.error(str(err))
    print(f"tables written to {tables}")
    if not args.no_figures:
        from da.results import figures

        fig_dir = Path(args.out) / "figures"
        classes = runs["record"].iloc[0]["classes"]
        source = {"runs": args.runs, "sweeps": args.sweep, "selection": args.selection}
        figures.accuracy_by_method(runs, fig_dir)
        figures.save_data(fig_dir, "accuracy_by_method", figures.accuracy_data(runs), source)
        has_source_only = bool((runs["method"] == "source_only").any())  # gains are over source-only
        drawable = {"gain": has_source_only, "confusion_matrices": confusions_known, "loss_curves": True,
                    "validator_scores": bool(runs["record"].map(lambda r: all("scores" in e for e in r["epochs"])).all()),
                    "class_gain": confusions_known and has_source_only, "prior_shares": confusions_known}
        for name, (compute, draw) in figures.DRAWN_FROM_DATA.items():
            if drawable[name]:
                data = compute(runs)
                if draw(data, fig_dir, target):
                    figures.save_data(fig_dir, name, data, source)
        figures.training_curves(runs, fig_dir)
        if runs["epochs"].nunique() > 1:  # a budget sweep: accuracy and every validator per epoch, per budget
            figures.learning_curves(runs, fig_dir)
        if not kept_epoch_only:  # per-class numbers and features exist for the epoch kept in training only
            print(f"figures written to {fig_dir} (no per-class heatmap or t-SNE under --selection)")
            return 0
        figures.per_class_heatmap(runs, fig_dir, classes)
        top = runs[(runs["stages"] == runs["stages"].max()) & (runs["cls_loss"] == "ce")]
        panels, left_out = figures.tsne_panels(top)
        feats = {}
        for r in panels:
            path = Path(args.features_from or args.runs) / r["run_dir"] / "features.npz"
            if path.exists():
                feats[r["label"]] = dict(np.load(path))
        if feats:
            figures.tsne(feats, classes, fig_dir, left_out=left_out)
        print(f"figures written to {fig_dir}")
    return 0

