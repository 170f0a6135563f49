"""High-order Langevin dynamics (HOLD; Shi & Liu, arXiv 2404.12814) and its n-th order generalisation.

Order 3, state (q, p, s) = (data, velocity, acceleration):

    A = [[0, 1, 0], [−1, 0, γ], [0, −γ, −ξ]],   Q = diag(0, 0, 2ξ/L),   b(t) = β (constant)

i.e. one OU process on s plus two Hamiltonian rotations, (q, p) and (p, s). A + Aᵀ = −2ξ E₃₃, so
Σ∞ = L⁻¹ I solves the Lyapunov equation: the prior is N(0, L⁻¹ I) on every block.

Critical damping (a single eigenvalue of multiplicity n, the fastest uniform decay for the chain) follows
the HOLD++ construction (Sterling & Bugallo, arXiv 2409.07697 / 2506.21741): with λ* = −sqrt(2n − 3),
    γ_i = sqrt(2n − 3) · sqrt((n² − j²) / (4 j² − 1)),  j = n − i   (i = 1 … n−1),    ξ = n sqrt(2n − 3).
n = 3 gives γ = (1, 2√2), ξ = 3√3 (triple eigenvalue −√3); n = 2 gives A = [[0, 1], [−1, −2]], Q = diag(0, 4/L),
which is CLD with M = 1, Γ = 2 (critical) when L = 1.

Choices the paper leaves open (documented, configurable): L⁻¹ = 1 (data scale = prior scale); auxiliary
blocks start at N(0, α L⁻¹ I) with α = 0.04 (CLD's γ); b = β = 8 on t ∈ [ε, 1], so τ(T) = 8: the kernel
of any x_0 ∈ [−1, 1]^d is within 1e-3 of the prior (tested).
"""

from __future__ import annotations

import math

import torch

from .core import LinearSDE, Process
from .schedules import ConstantSchedule


def critical_chain_constants(order: int) -> tuple[list[float], float]:
    """(γ_1 … γ_{n−1}, ξ) of the critically-damped n-th order chain; eigenvalue −sqrt(2n−3), multiplicity n."""
    if order < 2:
        raise ValueError(f"a Langevin chain needs order >= 2, got {order}")
    rate = math.sqrt(2 * order - 3)
    j = [order - i for i in range(1, order)]
    gammas = [rate * math.sqrt((order**2 - jj**2) / (4 * jj**2 - 1)) for jj in j]
    return gammas, order * rate


def chain_matrices(gammas: list[float], xi: float, inv_l: float) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(gammas) + 1
    A = torch.zeros(n, n, dtype=torch.float64)
    for i, g in enumerate(gammas):
        A[i, i + 1], A[i + 1, i] = g, -g
    A[-1, -1] = -xi
    Q = torch.zeros(n, n, dtype=torch.float64)
    Q[-1, -1] = 2.0 * xi * inv_l
    return A, Q


def critically_damped_chain(
    order: int = 3,
    inv_l: float = 1.0,
    init_aux_scale: float = 0.04,
    beta: float = 8.0,
    gammas: list[float] | None = None,
    xi: float | None = None,
    t_min: float = 1e-5,
    t_max: float = 1.0,
    name: str | None = None,
) -> Process:
    """n-th order Langevin chain; ``gammas``/``xi`` override the critical constants (e.g. the HOLD paper's)."""
    crit_g, crit_xi = critical_chain_constants(order)
    gammas = crit_g if gammas is None else [float(g) for g in gammas]
    xi = crit_xi if xi is None else float(xi)
    if len(gammas) != order - 1:
        raise ValueError(f"order {order} needs {order - 1} couplings gammas, got {len(gammas)}")
    A, Q = chain_matrices(gammas, xi, inv_l)
    initial = torch.eye(order, dtype=torch.float64) * init_aux_scale * inv_l
    initial[0, 0] = 0.0
    return Process(
        name=name or ("hold" if order == 3 else f"langevin{order}"),
        sde=LinearSDE(A, Q),
        schedule=ConstantSchedule(beta),
        initial_cov=initial,
        prior_cov=torch.eye(order, dtype=torch.float64) * inv_l,
        t_min=t_min,
        t_max=t_max,
    )


def hold(**kwargs) -> Process:
    """Third-order HOLD with critical damping γ = 2√2, ξ = 3√3 (q–p coupling 1)."""
    kwargs.setdefault("order", 3)
    if kwargs["order"] == 3:
        kwargs.setdefault("gammas", [1.0, 2.0 * math.sqrt(2.0)])
        kwargs.setdefault("xi", 3.0 * math.sqrt(3.0))
    return critically_damped_chain(**kwargs)
