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
(∂_s Ψ(t', s) = −Ψ(t', s) M(s), Ψ(t', t') = I), DOP853 in log s, rtol 1e-11 — for all steps of a grid in one
solve: each step's interval is mapped onto r ∈ [0, 1] (log s = log t' + r log(t/t')), so the right-hand side
is evaluated for every step at once in batched float64 tensor algebra (the plan for 1000 steps costs about
what one step cost when solved alone).
"""

from __future__ import annotations

import torch
from scipy.integrate import solve_ivp

from ..processes.core import psd_sqrt
from ..processes.noise_factor import gddim_factor
from ..processes.quadrature import lagrange_basis

F64 = torch.float64


def stochastic_steps(process, ts: torch.Tensor, order: int, noise: float, variable) -> dict[str, torch.Tensor]:
    """Ψ (n, k, k), V (n, order, k) and the PSD root of C (n, k, k) for the n steps of the grid ``ts``
    (descending), x̂_0 known at the last ≤ ``order`` grid times (fewer on the first steps: zero rows of V)."""
    k, q, lam2, n = process.order, process.noise_scale, noise**2, len(ts) - 1
    A, e_k = process.sde.A, torch.eye(k, dtype=F64)[-1]
    factor = gddim_factor(process)
    t_hi, t_lo = ts[:-1], ts[1:]
    log_lo, log_len = torch.log(t_lo), torch.log(t_hi / t_lo)
    index = torch.arange(n)[:, None] - torch.arange(order)[None, :]  # history t_i, t_{i−1}, …
    valid = index >= 0
    nodes = variable(ts[index.clamp_min(0)])  # (n, order)
    split = [k * k, order * k, k * k]

    def rhs(r, y):
        s = torch.exp(log_lo + r * log_len)  # (n,)
        r_inv = torch.linalg.inv(factor.factor(s))
        p = torch.einsum("ni,nij->nj", r_inv[:, :, -1], r_inv)  # last row of Σ⁻¹ = R⁻ᵀR⁻¹
        phi = torch.linalg.matrix_exp(process.tau(s)[:, None, None] * A)[:, :, 0]
        b = process.b(s)
        M = b[:, None, None] * A + (0.5 * (1 + lam2) * q * b)[:, None, None] * e_k[:, None] * p[:, None, :]
        Psi, _, _ = torch.from_numpy(y).reshape(n, -1).split(split, dim=1)
        Psi = Psi.reshape(n, k, k)
        col = Psi[:, :, -1]
        ell = lagrange_basis(nodes, variable(s)[:, None], valid)[:, 0]  # (n, order)
        dV = ell[:, :, None] * col[:, None, :] * (0.5 * (1 + lam2) * q * b * (p * phi).sum(-1))[:, None, None]
        dC = (lam2 * q * b)[:, None, None] * col[:, :, None] * col[:, None, :]
        rate = (s * log_len)[:, None]  # d(log s)/dr · ds/d(log s)
        out = torch.cat([(-Psi @ M).reshape(n, -1), dV.reshape(n, -1), dC.reshape(n, -1)], dim=1) * rate
        return out.reshape(-1).numpy()

    y0 = torch.cat([torch.eye(k, dtype=F64).reshape(1, -1).expand(n, -1), torch.zeros(n, sum(split[1:]), dtype=F64)], 1)
    sol = solve_ivp(rhs, (0.0, 1.0), y0.reshape(-1).numpy(), method="DOP853", rtol=1e-11, atol=1e-14)
    if not sol.success:
        raise RuntimeError(f"stochastic expint plan: ODE solve failed ({sol.message})")
    Psi, V, C = torch.from_numpy(sol.y[:, -1].copy()).reshape(n, -1).split(split, dim=1)
    C = C.reshape(n, k, k)
    return {"Psi": Psi.reshape(n, k, k), "V": V.reshape(n, order, k), "root": psd_sqrt(0.5 * (C + C.transpose(-1, -2)))}
