"""Using a finished run outside training: load it, predict on images, evaluate it elsewhere, export it."""

from da.deploy.load import ExportedModel, FinishedRun, RunNotUsable, load_exported, load_run

__all__ = ["ExportedModel", "FinishedRun", "RunNotUsable", "load_exported", "load_run"]
