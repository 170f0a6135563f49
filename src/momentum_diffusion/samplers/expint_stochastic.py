"""Stochastic exponential-integrator steps (λ > 0) of ``sampler=expint``, in the data prediction x̂_0 = E[x_0|z].

With the phase-space Tweedie form of the noised-block score, s = −p_tᵀ(z − φ_t x̂_0) (p_t the last row of Σ_t⁻¹,
φ_t = Φ(τ_t) e_1; processes/noise_factor.py), the reverse dynamics of expint.py are linear in z with an
x̂_0 forcing term:

    dz = M(t) z dt − ½(1 + λ²) b q (p_tᵀφ_t) x̂_0 e_k dt + λ sqrt(b) B dW̄,    M(t) = b (A + ½(1 + λ²) q e_k p_tᵀ).

A step t → t' < t replaces x̂_0 by its Lagrange polynomial through the last values and solves the rest
exactly:  z' = Ψ z + Σ_j V_j x̂_0,j + C^{1/2} ξ,  with Ψ = Ψ(t', t) the transition of M,

    V_j = ∫_{t'}^{t} Ψ(t', s) e_k ½(1 + λ²) b q (p_sᵀφ_s) ℓ_j(s) ds,
    C = ∫_{t'}^{t} λ² b q Ψ(t', s) e_k e_kᵀ Ψ(t', s)ᵀ ds.

For point-mass data x̂_0 is constant, so the step is exact in law for every λ and step size. Extrapolating
ε instead (the deterministic path) is not: with λ > 0 the injected noise makes ε relax at a rate ~λ² b q
(Σ_t⁻¹)_kk, unbounded near t = 0, and ε-steps diverged below ~50 NFE on CLD/HOLD (measured). At λ = 0,
Ψ(t', t) = R_{t'} R_t⁻¹ (gDDIM). Ψ(t', s), V and C are integrated together in s from t' to t
(∂_s Ψ(t', s) = −Ψ(t', s) M(s), Ψ(t', t') = I), DOP853 in log s, rtol 1e-11.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.integrate import solve_ivp
from scipy.linalg import expm

from ..processes.core import psd_sqrt
from ..processes.noise_factor import gddim_factor

F64 = torch.float64


def lagrange_weights(nodes: np.ndarray, x: float) -> np.ndarray:
    """ℓ_j(x) at one point: the scalar numpy twin of expint.lagrange_basis, for the ODE's right-hand side."""
    out = np.ones(len(nodes))
    for j, xj in enumerate(nodes):
        for m, xm in enumerate(nodes):
            if m != j:
                out[j] *= (x - xm) / (xj - xm)
    return out


def stochastic_step(process, t: float, t_next: float, history: torch.Tensor, noise: float, variable) -> dict:
    """Ψ (k, k), V (p, k) and the PSD root of C for the step t → t_next with x̂_0 known at ``history``."""
    k, q, lam2 = process.order, process.noise_scale, noise**2
    A = process.sde.A.numpy()
    factor = gddim_factor(process)
    nodes = variable(history).numpy()
    p_count = len(nodes)

    def rhs(u, y):
        s = math.exp(u)
        s_t = torch.tensor([s], dtype=F64)
        b = float(process.b(s_t)[0])
        r_inv = np.linalg.inv(factor.factor(s_t)[0].numpy())
        p = r_inv[:, -1] @ r_inv  # last row of Σ⁻¹ = R⁻ᵀR⁻¹
        phi = expm(float(process.tau(s_t)[0]) * A)[:, 0]
        M = b * A.copy()
        M[-1] += 0.5 * (1 + lam2) * b * q * p
        Psi = y[: k * k].reshape(k, k)
        col = Psi[:, -1]
        ell = lagrange_weights(nodes, float(variable(s_t)[0]))
        dV = np.outer(ell, col) * (0.5 * (1 + lam2) * b * q * (p @ phi))
        dC = lam2 * b * q * np.outer(col, col)
        return s * np.concatenate([(-Psi @ M).reshape(-1), dV.reshape(-1), dC.reshape(-1)])

    y0 = np.concatenate([np.eye(k).reshape(-1), np.zeros(p_count * k + k * k)])
    sol = solve_ivp(rhs, (math.log(t_next), math.log(t)), y0, method="DOP853", rtol=1e-11, atol=1e-14)
    if not sol.success:
        raise RuntimeError(f"stochastic expint step {t:.3g} → {t_next:.3g}: ODE solve failed ({sol.message})")
    y = torch.from_numpy(sol.y[:, -1].copy())
    C = y[k * k + p_count * k :].reshape(k, k)
    return {
        "Psi": y[: k * k].reshape(k, k),
        "V": y[k * k : k * k + p_count * k].reshape(p_count, k),
        "root": psd_sqrt(0.5 * (C + C.T)),
    }
