"""Critically-damped Langevin diffusion (Dockhorn, Vahdat, Kreis 2022, arXiv 2112.07068, eq. 5).

    dx = M⁻¹ v β dt,   dv = (−x − Γ M⁻¹ v) β dt + sqrt(2Γβ) dW,    critical damping Γ² = 4M.

Paper constants: M⁻¹ = 4, Γ = 1, β = 4, v_0 ~ N(0, γ M I) with γ = 0.04, t ∈ [ε, 1], ε = 1e-5 (training).
Stationary law N(0, I) ⊗ N(0, M I).
"""

import math

import torch

from .core import LinearSDE, Process
from .schedules import ConstantSchedule


def cld_matrices(m_inv: float, gamma_damping: float) -> tuple[torch.Tensor, torch.Tensor]:
    A = torch.tensor([[0.0, m_inv], [-1.0, -gamma_damping * m_inv]], dtype=torch.float64)
    Q = torch.tensor([[0.0, 0.0], [0.0, 2.0 * gamma_damping]], dtype=torch.float64)
    return A, Q


def cld(
    m_inv: float = 4.0,
    gamma_damping: float | None = None,
    beta: float = 4.0,
    init_velocity_scale: float = 0.04,
    t_min: float = 1e-5,
    t_max: float = 1.0,
) -> Process:
    """``gamma_damping=None`` picks critical damping Γ = 2 sqrt(M) (Γ = 1 for M⁻¹ = 4)."""
    mass = 1.0 / m_inv
    if gamma_damping is None:
        gamma_damping = 2.0 * math.sqrt(mass)
    A, Q = cld_matrices(m_inv, gamma_damping)
    return Process(
        name="cld",
        sde=LinearSDE(A, Q),
        schedule=ConstantSchedule(beta),
        initial_cov=[[0.0, 0.0], [0.0, init_velocity_scale * mass]],
        prior_cov=[[1.0, 0.0], [0.0, mass]],
        t_min=t_min,
        t_max=t_max,
    )
