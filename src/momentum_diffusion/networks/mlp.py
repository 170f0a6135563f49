"""Time-conditioned MLP for vector data (toy 2-D mixtures, low-dimensional benchmarks).

Time conditioning: each hidden layer receives its own projection of a shared time feature, *added* to the
pre-activation (the additive injection DDPM uses in its residual blocks, Ho et al. 2020). We prefer this
over concatenating t to the input once: every layer stays time-aware however deep the net, and the hidden
width does not depend on the embedding size.
"""

from __future__ import annotations

import torch
from torch import nn

from momentum_diffusion.networks.embeddings import broadcast_time, make_time_embedding
from momentum_diffusion.networks.layers import linear

__all__ = ["MLP"]

_ACTIVATIONS = {"silu": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh}


class MLP(nn.Module):
    """``forward(x: (B, in_dim), t: (B,)) → (B, out_dim)``; ``depth`` hidden layers of width ``hidden``.

    ``in_dim`` is (process order k) × (data dim); ``out_dim`` the data dim. The output layer is
    zero-initialised, so the untrained network outputs 0.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: int = 256,
        depth: int = 3,
        time_embedding: str = "fourier",
        embed_dim: int = 64,
        activation: str = "silu",
        fourier_scale: float = 16.0,
    ):
        super().__init__()
        if depth < 1:
            raise ValueError(f"MLP depth must be >= 1, got {depth}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        self.in_dim, self.out_dim = in_dim, out_dim
        self.act = _ACTIVATIONS[activation]()
        self.time_embed = make_time_embedding(time_embedding, embed_dim, fourier_scale)
        self.time_mlp = nn.Sequential(linear(embed_dim, hidden), _ACTIVATIONS[activation]())
        self.layers = nn.ModuleList([linear(in_dim if i == 0 else hidden, hidden) for i in range(depth)])
        self.time_proj = nn.ModuleList([linear(hidden, hidden) for _ in range(depth)])
        self.out = linear(hidden, out_dim, init_scale=0.0)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"MLP expects input (B, {self.in_dim}), got {tuple(x.shape)}")
        temb = self.time_mlp(self.time_embed(broadcast_time(t, x.shape[0])))
        h = x
        for layer, proj in zip(self.layers, self.time_proj):
            h = self.act(layer(h) + proj(temb))
        return self.out(h)
