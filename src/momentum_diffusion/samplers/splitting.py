"""Splitting integrators of the reverse SDE: SSCS (CLD paper, Sec. 3.3) and Lie–Trotter (HOLD paper).

In reverse time the SDE splits into
  linear part   dz = b Ã z ds + sqrt(b) B dW,   Ã = Σ∞ Aᵀ Σ∞⁻¹  (the drift with the score of the stationary
                Gaussian; solved exactly by the core's kernel, `LinearSDE.time_reversed_linear_part`)
  remainder     dz_k = b Q_kk (s(z, t) + (Σ∞⁻¹ z)_k) ds   (Euler, 1 NFE).
For CLD this is the paper's split (A: exact OU/Hamiltonian part, S: v ← v + 2Γβ(s + M⁻¹v)h); for HOLD the
linear part is the two reversed rotations plus the OU step on s, solved jointly.
SSCS / Strang: half linear step, remainder at the midpoint, half linear step. Lie–Trotter: remainder at t,
then a full linear step (first order). With the default Euler remainder both are first order overall
(the remainder depends on z_k: its Euler step has O(h²) local error); ``remainder='heun'`` (2 NFE per step)
makes the Strang composition second order. Both use Δτ = ∫b, so they are
correct for time-varying b(t).
"""

from __future__ import annotations

import torch

from ..processes.core import apply_blocks, psd_sqrt
from .base import (
    CountingScore,
    SamplerConfigError,
    check_nfe,
    final_denoise,
    has_stationary_law,
    noise_like,
    sampler,
    steps_for_budget,
    time_grid,
)


class ExactLinearFlow:
    """Exact transitions of the reverse linear part over Δτ (cached per Δτ; uniform grids reuse them)."""

    def __init__(self, process):
        self.sde = process.sde.time_reversed_linear_part()
        self.cache: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, z, dtau: float, generator):
        key = round(dtau, 15)
        if key not in self.cache:
            Phi, Sigma = self.sde.transition(torch.tensor(dtau, dtype=torch.float64))
            self.cache[key] = (Phi, psd_sqrt(Sigma))
        Phi, root = self.cache[key]
        return apply_blocks(Phi, z) + apply_blocks(root, noise_like(z, generator))


def score_remainder_step(process, score, z, t: float, dtau: float, remainder: str, precision_row: torch.Tensor):
    """The remainder flow dz_k = Q_kk (s(z, t) + (Σ∞⁻¹ z)_k) dτ over Δτ at frozen t: Euler (1 NFE) or Heun
    (2 NFE; with the Strang composition the whole step is then second order). ``precision_row`` = (Σ∞⁻¹)_k."""

    def velocity(y):
        return process.noise_scale * (score(y, t) + torch.einsum("i,bi...->b...", precision_row, y))

    k1 = velocity(z)
    out = z.clone()
    out[:, -1] += dtau * k1
    if remainder == "heun":
        out = z.clone()
        predicted = z.clone()
        predicted[:, -1] += dtau * k1
        out[:, -1] += 0.5 * dtau * (k1 + velocity(predicted))
    return out


def _splitting(process, score_fn, prior_z, nfe, generator, denoise, grid, symmetric, remainder="euler"):
    if remainder not in REMAINDERS:
        raise SamplerConfigError(f"unknown remainder '{remainder}'; choose {' or '.join(REMAINDERS)}")
    score = CountingScore(score_fn)
    n = steps_for_budget(check_nfe(nfe), REMAINDERS[remainder], denoise)
    ts = time_grid(process, n, grid)
    linear = ExactLinearFlow(process)
    precision_row = torch.linalg.inv(process.sde.stationary_cov)[-1].to(prior_z.dtype)
    z = prior_z
    for i in range(n):
        t, t_next = float(ts[i]), float(ts[i + 1])
        dtau = float(process.tau(t) - process.tau(t_next))
        if symmetric:
            t_mid = 0.5 * (t + t_next)
            z = linear(z, float(process.tau(t) - process.tau(t_mid)), generator)
            z = score_remainder_step(process, score, z, t_mid, dtau, remainder, precision_row)
            z = linear(z, float(process.tau(t_mid) - process.tau(t_next)), generator)
        else:
            z = score_remainder_step(process, score, z, t, dtau, remainder, precision_row)
            z = linear(z, dtau, generator)
    if denoise:
        z = final_denoise(process, score, z, float(ts[-1]), denoise)
    return z, score.count


REMAINDERS = {"euler": 1, "heun": 2}  # NFE per step
REQUIREMENT = "splitting needs a stationary Gaussian law (Hurwitz A): vp, cld, hold, langevin<n>"


@sampler("sscs", supports=has_stationary_law, requirement=REQUIREMENT)
@torch.no_grad()
def sscs(
    process,
    score_fn,
    prior_z,
    *,
    nfe: int,
    generator=None,
    denoise: bool | str = True,
    grid: str = "uniform",
    remainder: str = "euler",
):
    """Symmetric splitting score-based sampler (Strang): 1 NFE per step (2 with ``remainder='heun'``)."""
    return _splitting(process, score_fn, prior_z, nfe, generator, denoise, grid, True, remainder)


@sampler("lie_trotter", supports=has_stationary_law, requirement=REQUIREMENT)
@torch.no_grad()
def lie_trotter(
    process,
    score_fn,
    prior_z,
    *,
    nfe: int,
    generator=None,
    denoise: bool | str = True,
    grid: str = "uniform",
    symmetric: bool = False,
    remainder: str = "euler",
):
    """Lie–Trotter splitting (first order), or its Strang-symmetric variant with ``symmetric=True``."""
    return _splitting(process, score_fn, prior_z, nfe, generator, denoise, grid, symmetric, remainder)
