"""DSM: denoising score matching with ε-prediction for order-1 SDEs (Song et al. 2021; Ho et al. 2020)."""

from .noise_prediction import NoisePredictionObjective


class DSM(NoisePredictionObjective):
    name = "dsm"
    orders = (1, 1)
