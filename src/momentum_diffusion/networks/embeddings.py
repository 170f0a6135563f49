"""Time embeddings: map a batch of diffusion times ``t`` of shape (B,) to features of shape (B, dim).

Two families are used by the score-based literature:

- Random Fourier features (Tancik et al. 2020, "Fourier Features Let Networks Learn High Frequency
  Functions"), used by NCSN++ in Song et al. 2021 ("Score-Based Generative Modeling through SDEs"):
  ``[sin(2π t w), cos(2π t w)]`` with fixed ``w ~ N(0, scale²)``.
- Sinusoidal positional encodings (Vaswani et al. 2017), used by DDPM (Ho et al. 2020) and DDPM++:
  ``[sin(t ω_i), cos(t ω_i)]`` with geometric frequencies ``ω_i = max_period^(-i / (half - 1))``.

Networks never interpret ``t``: whichever scalar the caller feeds (t ∈ [0, 1], log σ, ...) is embedded.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from momentum_diffusion.choices import check_choice

__all__ = ["GaussianFourierEmbedding", "SinusoidalEmbedding", "make_time_embedding", "broadcast_time"]


def broadcast_time(t: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Return ``t`` as a float tensor of shape (batch_size,); a scalar or (1,) time is shared by the batch."""
    return t.reshape(-1).to(torch.float32).expand(batch_size)


class GaussianFourierEmbedding(nn.Module):
    """Random Fourier features of ``t`` (score_sde's NCSN++ embedding; Song et al. 2021, App. H).

    ``scale`` is the standard deviation of the frequencies: 16 for NCSN++ on CIFAR-10 (the value CLD uses).
    The frequencies are a persistent buffer: they are random, so a checkpoint must carry them.
    """

    def __init__(self, dim: int, scale: float = 16.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"GaussianFourierEmbedding needs an even dim, got {dim}")
        self.dim = dim
        self.scale = scale
        self.register_buffer("freqs", torch.randn(dim // 2) * scale)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = (2 * math.pi) * t.float()[:, None] * self.freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)


class SinusoidalEmbedding(nn.Module):
    """DDPM's sinusoidal timestep embedding (Ho et al. 2020, App. B; Vaswani et al. 2017, §3.5).

    DDPM indexes integer steps 0…999; for continuous ``t ∈ [0, 1]`` we multiply by ``time_scale``
    (default 1000, as score_sde does with ``t · 999`` for continuous DDPM++) so the frequency range matches.
    """

    def __init__(self, dim: int, max_period: float = 10_000.0, time_scale: float = 1000.0):
        super().__init__()
        if dim % 2 or dim < 4:
            raise ValueError(f"SinusoidalEmbedding needs an even dim >= 4, got {dim}")
        self.dim = dim
        self.time_scale = time_scale
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / (half - 1))
        # Deterministic, so not saved: checkpoints stay valid if max_period is changed deliberately.
        self.register_buffer("freqs", freqs.float(), persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = (self.time_scale * t.float())[:, None] * self.freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)


def make_time_embedding(kind: str, dim: int, fourier_scale: float = 16.0) -> nn.Module:
    """Build the embedding named by ``kind`` ('fourier' or 'positional'); a plain choice, not a registry."""
    if check_choice("time_embedding", kind, ("fourier", "positional")) == "fourier":
        return GaussianFourierEmbedding(dim, scale=fourier_scale)
    return SinusoidalEmbedding(dim)
