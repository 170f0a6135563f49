"""Exact law and score of Gaussian data N(m, s² I) diffused by any linear phase-space process (test helper).

If x_0 ~ N(m, s² I) and the auxiliary blocks start at N(0, Σ_0,aux) given x_0 (``process.initial_cov``),
every data coordinate j of z_t is an independent k-vector with law

    N( Φ(τ(t)) (m, 0, …, 0),  Φ diag(s², Σ_0,aux) Φᵀ + Σ(τ(t)) ),

which is exactly ``process.kernel(t, initial_cov=Σ_0 with [0, 0] = s²)`` (the kernel given x_0 has a point
mass in the data row; replacing it by s² marginalises x_0). The score is −P (z − μ) with P the inverse of
that k×k covariance; samplers and objectives only need its last (noised) block.
"""

from __future__ import annotations

import math

import torch

F64 = torch.float64


def marginal(process, t, mean: float = 0.0, std: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-coordinate law of z_t for data N(mean, std² I): μ (*t, k) and covariance (*t, k, k), float64."""
    t = torch.as_tensor(t, dtype=F64)
    initial = process.initial_cov.clone()
    initial[0, 0] = std**2
    Phi, cov, _ = process.kernel(t, initial_cov=initial)
    return Phi[..., :, 0] * mean, cov


def _broadcast(v: torch.Tensor, z: torch.Tensor, batched: bool) -> torch.Tensor:
    """(k,) or (B, k) → broadcastable against z (B, k, *data)."""
    v = v.to(device=z.device, dtype=z.dtype)
    extra = [1] * (z.dim() - 2)
    return v.reshape(-1, v.shape[-1], *extra) if batched else v.reshape(v.shape[-1], *extra)


def full_score(process, z: torch.Tensor, t, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """∇_z log p_t(z) for every block, shape of z (B, k, *data); ``t`` a scalar or a (B,) tensor."""
    t = torch.as_tensor(t, dtype=F64)
    mu, cov = marginal(process, t, mean, std)
    precision = torch.linalg.inv(cov)
    batched = t.dim() > 0
    diff = z - _broadcast(mu, z, batched)
    P = precision.to(device=z.device, dtype=z.dtype)
    eq = "bij,bj...->bi..." if batched else "ij,bj...->bi..."
    return -torch.einsum(eq, P, diff)


def noised_score(process, z: torch.Tensor, t, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """∇_{z_k} log p_t(z): the score of the noised (last) block, shape of z[:, -1]."""
    return full_score(process, z, t, mean, std)[:, -1]


def score_row(process, t, std: float = 1.0) -> torch.Tensor:
    """Coefficients c (k,) (or (*t, k)) of the noised-block score for zero-mean data: s_k(z) = −c · z."""
    _, cov = marginal(process, t, 0.0, std)
    return torch.linalg.inv(cov)[..., -1, :]


def score_fn(process, mean: float = 0.0, std: float = 1.0):
    """The exact noised-block score as a sampler's ``score_fn(z, t)`` (t a float)."""

    def fn(z: torch.Tensor, t: float) -> torch.Tensor:
        return noised_score(process, z, float(t), mean, std)

    return fn


def rotated_score_fn(process, U, variances):
    """The exact noised-block score of data N(0, U diag(variances) Uᵀ) over the flattened data dims, as a
    sampler's ``score_fn(z, t)``: the process acts coordinate-wise, so in the eigenbasis (y = Uᵀx per block)
    coordinate i is Gaussian data of variance variances[i]; its k×k law comes from the kernel with that
    variance in the data row (as :func:`marginal`), its score row from the inverse; rotate back with U."""
    U = torch.as_tensor(U, dtype=F64)
    lam = torch.as_tensor(variances, dtype=F64)

    def fn(z: torch.Tensor, t: float) -> torch.Tensor:
        B, k = z.shape[:2]
        initial = process.initial_cov.expand(len(lam), k, k).clone()
        initial[:, 0, 0] = lam
        _, cov, _ = process.kernel(torch.tensor(float(t), dtype=F64), initial_cov=initial)
        rows = torch.linalg.inv(cov)[:, -1, :]  # (D, k)
        y = z.reshape(B, k, -1) @ U  # eigen coordinates
        return (-(y * rows.T).sum(1) @ U.T).reshape(B, *z.shape[2:])

    return fn


def law_errors(out: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> tuple[float, float]:
    """How far n samples ``out`` (n, k) are from the law N(mean, cov): the largest mean error in standard errors
    and the largest covariance error in standard deviations of the sample covariance (≈ √(2/n) per entry)."""
    n, scale = out.shape[0], cov.diagonal().sqrt()
    mean_err = float(((out.mean(0) - mean).abs() / (scale / math.sqrt(n))).max())
    cov_err = float(((torch.cov(out.T) - cov).abs() / torch.outer(scale, scale)).max() / math.sqrt(2 / n))
    return mean_err, cov_err


class ZeroBlocks(torch.nn.Module):
    """A zero network predicting ``blocks`` blocks of ε (1, or k for the gDDIM noise factor): with the mixed
    score and data_std = std, the exact model of Gaussian data N(0, std²)."""

    def __init__(self, order: int, blocks: int):
        super().__init__()
        self.order, self.blocks = order, blocks

    def forward(self, z_flat: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros(z_flat.shape[0], self.blocks * z_flat.shape[1] // self.order, dtype=z_flat.dtype)
