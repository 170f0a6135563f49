"""Euler–Maruyama on the reverse SDE (Song et al. 2021, eq. 6), any process on the core."""

from __future__ import annotations

import torch

from .base import FixedStepRun, noise_like, sampler


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
    run = FixedStepRun(process, score_fn, nfe, 1, denoise, grid)
    ts, taus = run.ts, process.tau(run.ts)
    z = prior_z
    for i in range(run.n):
        dtau = float(taus[i] - taus[i + 1])
        z = euler_maruyama_step(process, z, run.score(z, float(ts[i])), dtau, generator)
    return run.finish(z)
