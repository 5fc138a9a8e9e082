"""Losses: feature alignment (CORAL, MK-MMD, adversarial), classification (focal, OHEM, class weights), information maximisation."""

from da.losses.adversarial import DomainAdversarialLoss, grad_reverse
from da.losses.class_weights import class_weights
from da.losses.coral import CORAL
from da.losses.factory import build_classification_loss
from da.losses.focal import FocalLoss
from da.losses.information import InformationMaximization
from da.losses.mcc import MinimumClassConfusion
from da.losses.mmd import MMD
from da.losses.ohem import OHEM

__all__ = ["CORAL", "MMD", "DomainAdversarialLoss", "grad_reverse", "FocalLoss", "OHEM", "InformationMaximization", "MinimumClassConfusion", "class_weights",
           "build_classification_loss"]
