"""Score networks. They take (B, k·C, ...) phase-space inputs and a time batch (B,), return (B, C, ...).

Networks know nothing about processes (no import from ``momentum_diffusion.processes``).
"""

from momentum_diffusion.networks.backbone import ScoreUNet
from momentum_diffusion.networks.ddpmpp import DDPMpp
from momentum_diffusion.networks.embeddings import GaussianFourierEmbedding, SinusoidalEmbedding
from momentum_diffusion.networks.mlp import MLP
from momentum_diffusion.networks.ncsnpp import NCSNpp
from momentum_diffusion.networks.unet import UNet

__all__ = ["MLP", "UNet", "DDPMpp", "NCSNpp", "ScoreUNet", "GaussianFourierEmbedding", "SinusoidalEmbedding"]
