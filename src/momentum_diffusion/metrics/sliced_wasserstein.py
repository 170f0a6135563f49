"""Sliced Wasserstein-2 distance between sample sets, and its noise floor (DESIGN.md §6).

    SW2(μ, ν) = ( E_θ W2²(θ#μ, θ#ν) )^{1/2},   θ uniform on the unit sphere S^{d−1}

(Bonneel et al. 2015). The expectation is a fixed Monte-Carlo set of ``n_projections`` unit directions
drawn from ``seed``, so the metric is deterministic and comparable across runs. Each 1-D W2 is exact:
the L2 distance between the two empirical quantile functions (step functions), integrated exactly over
the merged breakpoints i/n ∪ j/m, which also covers unequal sample sizes.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch

from ..processes.core import F64


def projections(dim: int, n_projections: int = 512, seed: int = 0) -> torch.Tensor:
    """Fixed unit directions (dim, n_projections), float64, uniform on the sphere, from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    theta = torch.randn(dim, n_projections, generator=gen, dtype=F64)
    return theta / theta.norm(dim=0, keepdim=True)


def _as_2d(x) -> torch.Tensor:
    x = torch.as_tensor(x).detach().cpu().to(F64)
    if x.dim() == 1:
        x = x[:, None]
    return x.reshape(x.shape[0], -1)


def wasserstein2_1d_squared(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact squared W2 between empirical measures along the last dim: a (P, n), b (P, m) → (P,)."""
    a, _ = torch.sort(a, dim=-1)
    b, _ = torch.sort(b, dim=-1)
    n, m = a.shape[-1], b.shape[-1]
    if n == m:
        return ((a - b) ** 2).mean(-1)
    # quantile functions are constant on ((i−1)/n, i/n] and ((j−1)/m, j/m]: integrate over merged cells
    steps_a, steps_b = torch.arange(1, n + 1, dtype=F64) / n, torch.arange(1, m + 1, dtype=F64) / m
    u = torch.unique(torch.cat([steps_a, steps_b]))
    u[-1] = 1.0
    widths = torch.diff(u, prepend=u.new_zeros(1))
    mid = u - 0.5 * widths
    ia = torch.clamp((mid * n).floor().long(), max=n - 1)
    ib = torch.clamp((mid * m).floor().long(), max=m - 1)
    return ((a[..., ia] - b[..., ib]) ** 2 * widths).sum(-1)


def sliced_wasserstein2(x, y, n_projections: int = 512, seed: int = 0) -> float:
    """SW2 between the rows of x (n, d) and y (m, d) (any trailing shape is flattened); a float."""
    x, y = _as_2d(x), _as_2d(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"dimension mismatch: {x.shape[1]} vs {y.shape[1]}")
    if x.shape[0] == 0 or y.shape[0] == 0:
        raise ValueError("sliced_wasserstein2 needs non-empty sample sets")
    theta = projections(x.shape[1], n_projections, seed)
    # (P, n) layout: each projection contiguous, so the sorts run along the fast axis
    return float(wasserstein2_1d_squared(theta.T @ x.T, theta.T @ y.T).mean().sqrt())


def noise_floor(
    sample_fn: Callable[[int, torch.Generator], torch.Tensor],
    n: int,
    n_pairs: int = 5,
    seed: int = 0,
    n_projections: int = 512,
    projection_seed: int = 0,
) -> float:
    """Median SW2 between ``n_pairs`` pairs of independent data sets of size n: what a perfect sampler scores.

    ``sample_fn(n, generator)`` draws n data points; the sets come from one generator seeded with ``seed``.
    """
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(n_pairs):
        a, b = sample_fn(n, gen), sample_fn(n, gen)
        values.append(sliced_wasserstein2(a, b, n_projections=n_projections, seed=projection_seed))
    return float(statistics.median(values))
