"""An independent route to the data-prediction plan of samplers/expint_plan.py, for tests only: Ψ(t', s), V and C
integrated together as one ODE in r (∂_s Ψ(t', s) = −Ψ(t', s) M(s), Ψ(t', t') = I) by DOP853 at rtol 1e-11, in the
original coordinates (no whitening, no closed form). It was the λ ∈ (0, 1) plan before the Magnus steps (about
20× slower at 1,000 steps)."""

from __future__ import annotations

import torch
from scipy.integrate import solve_ivp

from momentum_diffusion.processes.core import F64, psd_sqrt
from momentum_diffusion.samplers.expint_plan import StepIntervals, forcing, split_weights


def ode_steps(process, steps: StepIntervals, lam: float) -> dict:
    """Ψ, the PSD root of C, V and V_corr of the n steps (module docstring)."""
    k, q, lam2, n = process.order, process.noise_scale, lam**2, steps.n
    A, e_k = process.sde.A, torch.eye(k, dtype=F64)[-1]
    sizes = [times.shape[1] for times, _ in steps.nodes]
    split = [k * k, sum(sizes) * k, k * k]

    def rhs(r, y):
        s = steps.s(torch.tensor([r], dtype=F64))  # (n, 1)
        _, p, g = forcing(process, s, lam2)
        b, p, g, s = process.b(s[:, 0]), p[:, 0], g[:, 0], s[:, 0]
        M = b[:, None, None] * A + (0.5 * (1 + lam2) * q * b)[:, None, None] * e_k[:, None] * p[:, None, :]
        Psi = torch.from_numpy(y).reshape(n, -1)[:, : k * k].reshape(n, k, k)
        col = Psi[:, :, -1]
        ell = torch.cat(steps.weights(s[:, None]), dim=-1)[:, 0]  # (n, sets·p), ds/dr included
        rate = (s * steps.log_len)[:, None, None]
        dV = ell[:, :, None] * col[:, None, :] * g[:, None, None]
        dC = (lam2 * q * b)[:, None, None] * col[:, :, None] * col[:, None, :] * rate
        out = torch.cat([(-Psi @ M * rate).reshape(n, -1), dV.reshape(n, -1), dC.reshape(n, -1)], dim=1)
        return out.reshape(-1).numpy()

    y0 = torch.cat([torch.eye(k, dtype=F64).reshape(1, -1).expand(n, -1), torch.zeros(n, sum(split[1:]), dtype=F64)], 1)
    sol = solve_ivp(rhs, (0.0, 1.0), y0.reshape(-1).numpy(), method="DOP853", rtol=1e-11, atol=1e-14)
    if not sol.success:
        raise RuntimeError(f"expint data-prediction plan: ODE solve failed ({sol.message})")
    Psi, V, C = torch.from_numpy(sol.y[:, -1].copy()).reshape(n, -1).split(split, dim=1)
    return {
        "Psi": Psi.reshape(n, k, k),
        "root": psd_sqrt(C.reshape(n, k, k)),
        **split_weights(V.reshape(n, -1, k), steps),
    }
