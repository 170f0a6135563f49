"""The noise factor K_t of the ε-parametrisation, a process-level choice shared by objectives and samplers.

A network predicts a noise vector ε (per data coordinate) with z_t = Φ z̄_0 + K_t ε, K_t K_tᵀ = Σ_t (the
kernel covariance); the noised-block score is then s = −c_tᵀ ε with c_t the last row of K_t⁻ᵀ (gDDIM,
Zhang, Tao & Chen 2022, arXiv 2206.05564, eq. 12). Two choices (``kt``):

``cholesky``  K = L_t, lower triangular: c_t = (0, …, 0, ℓ_t), ℓ_t = 1/L_kk, so only the noised block's ε
    enters the score and the network predicts that block alone (CLD's HSM, HOLD's BCSM, DSM).
``gddim``     K = R_t, dR/dt = b (A + ½ Q Σ_t⁻¹) R with R Rᵀ = Σ_t (gDDIM eq. 15): R carries the kernel's
    own probability flow, so for point-mass data ε is constant along every PF-ODE trajectory and can be
    extrapolated over long steps. Every component of c_t is non-zero: the network predicts all k blocks.

For order 1 both are σ_t. R is integrated once per process (DOP853, rtol 1e-12, in log t) in the form
dR = b (A R + ½ Q R⁻ᵀ) dt, forward from R(t_min) = chol(Σ_{t_min}) with Σ_{t_min} by quadrature: a
backward solve from T would amplify errors like exp(2|Re λ(A)|τ) (the Van Loan trap of DESIGN.md §1), and
the core's stationary form Σ∞ − ΦΣ∞Φᵀ loses the tiny data-row entries to cancellation at t_min.

``NoiseFactor`` is the typed choice: the one validation of ``kt`` (``NoiseFactorError``), carried by the score
model (``ScoreModel.noise_factor``) and compared by samplers (samplers/base.py ``predicted_noise``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.integrate import solve_ivp

from ..choices import check_choice
from .core import F64, combine_blocks
from .memo import cached, process_key
from .quadrature import integrate

KT_CHOICES = ("cholesky", "gddim")


class NoiseFactorError(ValueError):
    """Unknown K_t choice, or one the process cannot support."""


def times(t) -> torch.Tensor:
    return torch.as_tensor(t, dtype=F64).reshape(-1).cpu()


def accurate_kernel_cov(process, t: float) -> torch.Tensor:
    """Φ Σ_0 Φᵀ + ∫_0^τ Φ(r) Q Φ(r)ᵀ dr at one time, by quadrature (relatively accurate for small τ)."""
    tau = float(process.tau(times(t))[0])
    Phi = process.sde.transition(torch.tensor(tau, dtype=F64))[0]

    def integrand(r):
        col = process.sde.transition(r)[0][:, :, -1]
        return process.noise_scale * torch.einsum("mi,mj->mij", col, col)

    cov = Phi @ process.initial_cov @ Phi.T + integrate(integrand, [0.0, tau])
    return 0.5 * (cov + cov.T)


class GDDIMFactor:
    """R_t of gDDIM eq. 15 on [t_min, t_max], as a dense ODE solution (see the module docstring)."""

    def __init__(self, process):
        if process.t_min <= 0:
            raise NoiseFactorError("kt='gddim' needs t_min > 0 (the kernel covariance is singular at t = 0)")
        self.process, k = process, process.order
        A, Q = process.sde.A.numpy(), process.sde.Q.numpy()

        def rhs(u, y):  # dR/du = t b (A R + ½ Q R⁻ᵀ): Σ⁻¹R = R⁻ᵀ, so the kernel is never inverted
            t, R = math.exp(u), y.reshape(k, k)
            return (t * float(process.b(t)) * (A @ R + 0.5 * Q @ np.linalg.inv(R).T)).reshape(-1)

        cov_min = accurate_kernel_cov(process, process.t_min)
        r_min, info = torch.linalg.cholesky_ex(cov_min)
        if info:  # high orders: Σ's data row ~ τ^(2k−1) underflows; start from the jittered kernel as L_t does
            r_min = torch.linalg.cholesky(cov_min + process.kernel_jitter * torch.eye(k, dtype=F64))
        span = (math.log(process.t_min), math.log(process.t_max) + 1e-9)
        self.solution = solve_ivp(
            rhs, span, r_min.numpy().reshape(-1), method="DOP853", rtol=1e-12, atol=1e-16, dense_output=True
        )
        if not self.solution.success:
            raise RuntimeError(f"gDDIM factor R_t: ODE solve failed ({self.solution.message})")

    def factor(self, t) -> torch.Tensor:
        """R_t, (m, k, k) float64."""
        t = times(t).clamp(self.process.t_min, self.process.t_max)
        k = self.process.order
        values = self.solution.sol(np.log(t.numpy()))  # (k·k, m)
        return torch.from_numpy(np.ascontiguousarray(values.T)).reshape(-1, k, k)


def gddim_factor(process) -> GDDIMFactor:
    return cached(("gddim_factor", process_key(process)), lambda: GDDIMFactor(process))


@dataclass(frozen=True)
class NoiseFactor:
    """The noise factor K_t of the ε-parametrisation (module docstring): ``kind`` 'cholesky' (L_t) or 'gddim' (R_t).

    Part of the score-function contract: a score model that predicts ε carries one, and a sampler that works
    in ε uses the model's ε̂ directly only when the two are equal."""

    kind: str = "cholesky"

    def __post_init__(self):
        check_choice("kt", self.kind, KT_CHOICES, NoiseFactorError)

    @classmethod
    def of(cls, kt: str | NoiseFactor, option: str = "kt") -> NoiseFactor:
        """``kt`` (a config string or a NoiseFactor) as a NoiseFactor; ``option`` names the key in the error."""
        if isinstance(kt, NoiseFactor):
            return kt
        return cls(check_choice(option, kt, KT_CHOICES, NoiseFactorError))

    def __str__(self) -> str:
        return self.kind

    def blocks(self, process) -> int:
        """How many blocks of ε a network predicts: those with a non-zero entry in c_t."""
        return 1 if self.kind == "cholesky" else process.order

    def matrix(self, process, t) -> torch.Tensor:
        """K_t for a tensor of times: (m, k, k) float64 (Cholesky: the kernel's, jitter included)."""
        if self.kind == "cholesky":
            return process.kernel(times(t))[2]
        return gddim_factor(process).factor(t)

    def score_rows(self, process, t) -> torch.Tensor:
        """c_t restricted to the predicted blocks: s = −Σ_j c_j ε_j, (m, blocks) float64."""
        if self.kind == "cholesky":
            return process.score_scale(times(t))[:, None]
        return torch.linalg.inv(self.matrix(process, t)).transpose(-1, -2)[:, -1, :]


def tweedie_projection(process, t) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """R_t⁻¹, p_t = last row of Σ_t⁻¹ = R⁻ᵀR⁻¹ and φ_t = Φ(τ_t) e_1 for a tensor of times: (m, k, k), (m, k), (m, k),
    host float64 (see ``data_posterior_mean``). p_t from the gDDIM factor stays accurate near t_min, where Σ_t
    is nearly singular."""
    t = times(t)
    r_inv = torch.linalg.inv(gddim_factor(process).factor(t))
    p = torch.einsum("mi,mij->mj", r_inv[:, :, -1], r_inv)
    phi = process.mean_factor(t)
    return r_inv, p, phi


def data_posterior_mean(process, z: torch.Tensor, s: torch.Tensor, t: float, projection=None) -> torch.Tensor:
    """E[x_0 | z_t] from the noised-block score s (phase-space Tweedie; float64, on z's device).

    The kernel's noised-block score is linear in x_0: s = −p_tᵀ(z − φ_t E[x_0|z]) with p_t the last row of
    Σ_t⁻¹ and φ_t = Φ(τ_t) e_1, so E[x_0|z] = (s + p_tᵀz) / p_tᵀφ_t (p_tᵀφ_t ≠ 0 for every process here).
    ``projection``: (R_t⁻¹, p_t, φ_t) at this one time if the caller already has them (e.g. a sampler's plan).
    For order 1 this is Tweedie's formula (z + σ_t² s) / α_t, from the kernel itself (no R_t to integrate).
    """
    if projection is None and process.order == 1:
        Phi, cov, _ = process.kernel(times(t))
        projection = (None, 1.0 / cov[0, 0], Phi[0, :, 0])
    elif projection is None:
        projection = [x[0] for x in tweedie_projection(process, t)]
    _, p, phi = projection
    z64 = z.to(F64)
    return (s.to(F64) + combine_blocks(p, z64)) / (p @ phi)  # a 0-dim host or same-device divisor
