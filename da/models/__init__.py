"""Models: backbones split into stages, the head, weights (offline too), fine-tuning strategies, optimisers."""

from da.models.backbones import (IMAGENET_MEAN, IMAGENET_STD, OFFLINE_BACKBONE, OFFLINE_WEIGHTS, OfflineWeightsError,
                                 torchvision_backbones)
from da.models.head import Head
from da.models.model import WEIGHT_CHOICES, DAModel, build_model
from da.models.optim import LARS, OPTIMIZERS, build_optimizer, param_groups
from da.models.strategies import (STRATEGY_FORMS, GradualUnfreezer, apply_strategy, frozen_prefix_length,
                                  parse_strategy)
from da.models.weights import LoadReport, WeightsError, load_weights_file, map_in_order

__all__ = [
    "DAModel", "build_model", "Head", "WEIGHT_CHOICES",
    "apply_strategy", "frozen_prefix_length", "parse_strategy", "GradualUnfreezer", "STRATEGY_FORMS",
    "param_groups", "build_optimizer", "LARS", "OPTIMIZERS",
    "LoadReport", "WeightsError", "OfflineWeightsError", "load_weights_file", "map_in_order",
    "torchvision_backbones", "IMAGENET_MEAN", "IMAGENET_STD", "OFFLINE_BACKBONE", "OFFLINE_WEIGHTS",
]
