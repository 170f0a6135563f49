"""Probability-flow ODE (Song et al. 2021, eq. 13): dz = b [A z − ½ Q s] dt, integrated from T to t_min.

Adaptive: torchdiffeq's dopri5 with rtol/atol (reports the NFE it used). Fixed-step: Euler or Heun
(Heun's last step is a full Heun step since t_min > 0)."""

from __future__ import annotations

import torch
from torchdiffeq import odeint

from ..choices import check_choice
from .base import (
    CountingScore,
    SamplerConfigError,
    check_nfe,
    final_denoise,
    sampler,
    steps_for_budget,
    time_grid,
)

ADAPTIVE_METHODS = ("dopri5", "bosh3", "adaptive_heun")  # torchdiffeq's, steered by rtol/atol
FIXED_METHODS = ("euler", "heun")  # steps sized by the budget nfe


def pf_ode_velocity(process, score, z, t: float):
    """dz/dt of the probability-flow ODE."""
    return float(process.b(t)) * process.reverse_drift_per_tau(z, score(z, t), probability_flow=True)


@sampler("ode")
@torch.no_grad()
def probability_flow(
    process,
    score_fn,
    prior_z,
    *,
    nfe: int = 100,
    generator=None,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    denoise: bool | str = True,
    grid: str = "uniform",
):
    """``method``: dopri5, bosh3, adaptive_heun (adaptive: the cost follows rtol/atol, and ``nfe``, the NFE knob
    shared with every sampler, is not used: the returned count is what the solve took) or euler, heun (fixed
    steps within the budget ``nfe``)."""
    check_choice("sampler.method", method, ADAPTIVE_METHODS + FIXED_METHODS, SamplerConfigError)
    score = CountingScore(score_fn)
    z = prior_z
    if method in ADAPTIVE_METHODS:
        t_span = torch.tensor([process.t_max, process.t_min], dtype=torch.float64)
        shape = z.shape

        def f(t, y):  # clamp: torchdiffeq's initial-step heuristic may probe beyond t_min
            t = min(max(float(t), process.t_min), process.t_max)
            return pf_ode_velocity(process, score, y.reshape(shape), t).reshape(-1)

        z = odeint(f, z.reshape(-1), t_span.to(device=z.device, dtype=z.dtype), rtol=rtol, atol=atol, method=method)[
            -1
        ].reshape(shape)
        t_end = process.t_min
    else:
        per_step = 1 if method == "euler" else 2
        n = steps_for_budget(check_nfe(nfe), per_step, denoise)
        ts = time_grid(process, n, grid)
        for i in range(n):
            t, t_next = float(ts[i]), float(ts[i + 1])
            h = t_next - t
            d = pf_ode_velocity(process, score, z, t)
            if method == "euler":
                z = z + h * d
            else:
                z_pred = z + h * d
                z = z + 0.5 * h * (d + pf_ode_velocity(process, score, z_pred, t_next))
        t_end = float(ts[-1])
    if denoise:
        z = final_denoise(process, score, z, t_end, denoise)
    return z, score.count
