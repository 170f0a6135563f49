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

from ..choices import check_choice
from ..processes.core import apply_blocks, combine_blocks, like, psd_sqrt
from .base import FixedStepRun, SamplerConfigError, has_stationary_law, noise_like, sampler


class ExactLinearFlow:
    """Exact transitions of the reverse linear part for a list of Δτ (host float64, batched, built before the
    loop and moved to the state's device once): ``flow(z, j, generator)`` applies the j-th."""

    def __init__(self, process, dtaus: list[float]):
        sde = process.sde.time_reversed_linear_part()
        Phi, Sigma = sde.transition(torch.tensor(dtaus, dtype=torch.float64))
        self.Phi, self.root = Phi, psd_sqrt(Sigma)

    def to(self, z: torch.Tensor) -> ExactLinearFlow:
        self.Phi, self.root = like(self.Phi, z), like(self.root, z)
        return self

    def __call__(self, z, j: int, generator):
        return apply_blocks(self.Phi[j], z) + apply_blocks(self.root[j], noise_like(z, generator))


def score_remainder_step(process, score, z, t: float, dtau: float, remainder: str, precision_row: torch.Tensor):
    """The remainder flow dz_k = Q_kk (s(z, t) + (Σ∞⁻¹ z)_k) dτ over Δτ at frozen t: Euler (1 NFE) or Heun
    (2 NFE; with the Strang composition the whole step is then second order). ``precision_row`` = (Σ∞⁻¹)_k."""

    def velocity(y):
        return process.noise_scale * (score(y, t) + combine_blocks(precision_row, y))

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
    check_choice("sampler.remainder", remainder, REMAINDERS, SamplerConfigError)
    run = FixedStepRun(process, score_fn, nfe, REMAINDERS[remainder], denoise, grid)
    score, ts, n = run.score, run.ts.tolist(), run.n
    # the linear sub-steps in the order they are taken: two half steps (Strang) or one full step per step
    t_mid = [0.5 * (t + t_next) for t, t_next in zip(ts[:-1], ts[1:])]
    taus, tau_mid = process.tau(torch.tensor(ts)).tolist(), process.tau(torch.tensor(t_mid)).tolist()
    if symmetric:
        dtaus = [d for i in range(n) for d in (taus[i] - tau_mid[i], tau_mid[i] - taus[i + 1])]
    else:
        dtaus = [taus[i] - taus[i + 1] for i in range(n)]
    linear = ExactLinearFlow(process, dtaus).to(prior_z)
    precision_row = like(torch.linalg.inv(process.sde.stationary_cov)[-1], prior_z)
    z = prior_z
    for i in range(n):
        dtau = taus[i] - taus[i + 1]
        if symmetric:
            z = linear(z, 2 * i, generator)
            z = score_remainder_step(process, score, z, t_mid[i], dtau, remainder, precision_row)
            z = linear(z, 2 * i + 1, generator)
        else:
            z = score_remainder_step(process, score, z, ts[i], dtau, remainder, precision_row)
            z = linear(z, i, generator)
    return run.finish(z)


REMAINDERS = {"euler": 1, "heun": 2}  # NFE per step
REQUIREMENT = "splitting needs a stationary Gaussian law (Hurwitz A): vp, cld, hold, langevin<n>"


def _splitting_sampler(name: str, symmetric: bool, doc: str, retired: dict | None = None):
    """Declare a splitting sampler; the two differ only in the order of their sub-steps (``_splitting``)."""

    def run(
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
        return _splitting(process, score_fn, prior_z, nfe, generator, denoise, grid, symmetric, remainder)

    run.__name__ = run.__qualname__ = name  # the module attribute: Hydra targets and pickling find it
    run.__doc__ = doc
    declare = sampler(name, supports=has_stationary_law, requirement=REQUIREMENT, retired=retired)
    return declare(torch.no_grad()(run))


sscs = _splitting_sampler(
    "sscs", True, "Symmetric splitting score-based sampler (Strang): 1 NFE per step (2 with ``remainder='heun'``)."
)
lie_trotter = _splitting_sampler(
    "lie_trotter",
    False,
    "Lie–Trotter splitting (first order; HOLD paper): 1 NFE per step (2 with ``remainder='heun'``).",
    retired={"symmetric": (False, "the symmetric (Strang) splitting is sampler=sscs")},
)
