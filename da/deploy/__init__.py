"""Using a finished run outside training: load it, predict on images, evaluate it elsewhere, export it."""

from da.deploy.load import FinishedRun, RunNotUsable, load_run

__all__ = ["FinishedRun", "RunNotUsable", "load_run"]
