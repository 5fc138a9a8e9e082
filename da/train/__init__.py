"""Training: the engine (one loop for both stages), checkpoints, the frozen-prefix cache, two stages."""

from da.rundir import run_dir_for
from da.train.engine import NonFiniteLossError, train_stage
from da.train.stages import run_experiment

__all__ = ["NonFiniteLossError", "run_dir_for", "train_stage", "run_experiment"]
