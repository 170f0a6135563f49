"""Euler–Maruyama on the reverse SDE (Song et al. 2021, eq. 6), any process on the core."""

from __future__ import annotations

import torch

from .base import (
    CountingScore,
    check_nfe,
    final_denoise,
    noise_like,
    sampler,
    steps_for_budget,
    time_grid,
)


def euler_maruyama_step(process, z, s, dtau: float, generator):
    """One reverse step over Δτ = ∫b: z − Δτ (A z − Q s) + sqrt(Δτ Q_kk) ξ on the noised block."""
    z = z - dtau * process.reverse_drift_per_tau(z, s)
    z[:, -1] += (dtau * process.noise_scale) ** 0.5 * noise_like(z[:, -1], generator)
    return z


@sampler("em")
@torch.no_grad()
def euler_maruyama(
    process, score_fn, prior_z, *, nfe: int, generator=None, denoise: bool | str = True, grid: str = "uniform"
):
    """z ← z − Δτ (A z − Q s) + sqrt(Δτ Q_kk) ε on the noised block, with Δτ = ∫ b over the step.

    Using the exact integral of b (not b(t)·h) keeps the step consistent for time-varying schedules.
    """
    score = CountingScore(score_fn)
    n = steps_for_budget(check_nfe(nfe), 1, denoise)
    ts = time_grid(process, n, grid)
    taus = process.tau(ts)
    z = prior_z
    for i in range(n):
        dtau = float(taus[i] - taus[i + 1])
        z = euler_maruyama_step(process, z, score(z, float(ts[i])), dtau, generator)
    if denoise:
        z = final_denoise(process, score, z, float(ts[-1]), denoise)
    return z, score.count
