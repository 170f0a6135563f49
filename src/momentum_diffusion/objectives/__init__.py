"""Objectives: ``loss(model, process, x0) -> per-example loss``; the ScoreModel parametrisation."""

from .bcsm import BCSM
from .dsm import DSM
from .hsm import HSM
from .noise_prediction import NoisePredictionObjective, ObjectiveConfigError
from .score_model import ScoreModel

__all__ = ["BCSM", "DSM", "HSM", "NoisePredictionObjective", "ObjectiveConfigError", "ScoreModel"]
