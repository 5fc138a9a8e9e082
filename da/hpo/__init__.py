"""Hyperparameter search without target labels: Optuna studies whose objective is a label-free validator of
the trials' selected epochs, run by Slurm array tasks sharing one journal file (``da-hpo``).

``space`` parses a search space, ``study`` a study file and its storage, ``worker`` runs trials,
``submit`` submits workers, ``report`` reads a study back (--status); the study table is
``da.results.study``.
"""

from da.hpo.space import Param, SearchSpace, SpaceError, parse_space
from da.hpo.study import StudySpec, load_study_spec, open_study, study_dir

__all__ = ["Param", "SearchSpace", "SpaceError", "parse_space", "StudySpec", "load_study_spec", "open_study",
           "study_dir"]
