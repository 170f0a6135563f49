"""Composite Gauss–Legendre quadrature in float64 for tensor-valued integrands, refined until converged.

Used by the exponential integrator (samplers/expint.py) for its per-step weight matrices and by the gDDIM
noise factor (noise_factor.py) for the kernel near t = 0, so that no process needs
its integrals derived by hand. An n-point panel is exact for polynomials of degree 2n − 1; all panels are
evaluated in one batched call, and every panel is halved until the composite rule agrees with its
refinement to ``rtol`` relative to the largest entry of the integral.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch

from .core import F64


@lru_cache(maxsize=8)
def gauss_legendre(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights of the n-point Gauss–Legendre rule on [−1, 1] (float64)."""
    x, w = np.polynomial.legendre.leggauss(n)
    return torch.from_numpy(x), torch.from_numpy(w)


def composite(f: Callable[[torch.Tensor], torch.Tensor], edges: torch.Tensor, n: int) -> torch.Tensor:
    """Σ over panels [edges_i, edges_{i+1}] of the n-point rule; f maps (m,) nodes to (m, *shape)."""
    x, w = gauss_legendre(n)
    half, mid = 0.5 * (edges[1:] - edges[:-1]), 0.5 * (edges[1:] + edges[:-1])
    values = f((mid[:, None] + half[:, None] * x).reshape(-1))
    values = values.reshape(len(mid), n, *values.shape[1:])
    return torch.einsum("p,n,pn...->...", half, w, values)


def integrate(
    f: Callable[[torch.Tensor], torch.Tensor],
    edges,
    n: int = 16,
    rtol: float = 1e-12,
    floor_rtol: float = 1e-8,
    max_refinements: int = 6,
) -> torch.Tensor:
    """∫ f over [edges[0], edges[-1]], starting from the panels given by ``edges`` (ascending).

    Converged when halving every panel changes the result by ≤ ``rtol`` (relative to its largest entry).
    Integrands built from the core's kernel carry float64 roundoff of up to ~1e-9 relative near t = 0
    (the stationary form Σ∞ − ΦΣ∞Φᵀ cancels there), which no rule can beat: after ``max_refinements``
    the result is accepted if it is stable to ``floor_rtol``; otherwise this raises.
    """
    edges = torch.as_tensor(edges, dtype=F64)
    coarse, change = composite(f, edges, n), float("inf")
    for _ in range(max_refinements):
        edges = torch.cat([torch.stack([edges[:-1], 0.5 * (edges[:-1] + edges[1:])], 1).reshape(-1), edges[-1:]])
        fine = composite(f, edges, n)
        change = float((fine - coarse).abs().max()) / (float(fine.abs().max()) + 1e-300)
        if change <= rtol:
            return fine
        coarse = fine
    if change <= floor_rtol:
        return coarse
    raise RuntimeError(f"quadrature did not converge: relative change {change:.1e} > {floor_rtol:g}")


def lagrange_basis(nodes: torch.Tensor, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Lagrange basis ℓ_j(x) of the interpolation nodes (…, p) at points x (…, m): (…, m, p).

    ``valid`` (…, p) marks the nodes in use (fewer on an integrator's first steps); ℓ_j of an unused node is
    0 and unused nodes do not enter the other factors. The exponential integrators' polynomials
    (samplers/expint_plan.py) all use this one function."""
    valid = torch.ones_like(nodes, dtype=torch.bool) if valid is None else valid
    diff_x = x[..., :, None] - nodes[..., None, :]  # (…, m, p): x − x_m
    diff_nodes = nodes[..., :, None] - nodes[..., None, :]  # (…, p, p): x_j − x_m
    p = nodes.shape[-1]
    skip = torch.eye(p, dtype=torch.bool) | ~valid[..., None, :] | ~valid[..., :, None]  # factor 1 (no 0/0)
    factors = torch.where(skip[..., None, :, :], 1.0, diff_x[..., :, None, :] / diff_nodes[..., None, :, :])
    return torch.where(valid[..., None, :], factors.prod(-1), 0.0)


def geometric_edges(a: float, b: float, ratio: float = 2.0) -> torch.Tensor:
    """Panel edges a = e_0 < … < e_m = b with e_{i+1} ≤ ratio · e_i (for 0 < a): each panel is at least its own
    width away from 0, where the kernel of every process is singular, so Gauss–Legendre converges fast."""
    if a <= 0:
        return torch.tensor([a, b], dtype=F64)
    m = max(1, int(np.ceil(np.log(b / a) / np.log(ratio))))
    return torch.from_numpy(np.geomspace(a, b, m + 1))
