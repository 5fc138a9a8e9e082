"""Results: run records -> one DataFrame -> ablation tables (Markdown, LaTeX) and figures."""

from da.results.load import load_runs, load_runs_of
from da.results.tables import ablation_table, oracle_table, render_latex, render_markdown

__all__ = ["load_runs", "load_runs_of", "ablation_table", "oracle_table", "render_latex", "render_markdown"]
