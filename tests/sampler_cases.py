"""The sampler table shared by test_samplers.py (convergence, orders) and test_sampler_contracts.py (NFE
accounting, seeds, purity, configuration errors, grids): every sampler with its test options, the processes, the
exact Gaussian-data start and an independent NFE counter."""

from __future__ import annotations

import torch

import momentum_diffusion.samplers.em as em_module
import momentum_diffusion.samplers.pc as pc_module
import momentum_diffusion.samplers.splitting as splitting_module
from gaussian import marginal, score_fn
from momentum_diffusion.processes import cld, hold, ve, vp
from momentum_diffusion.samplers import euler_maruyama, lie_trotter, predictor_corrector, probability_flow, sscs

F64 = torch.float64
M, S = 0.7, 0.5  # data N(M, S² I)

PROCESSES = {"vp": vp, "ve": ve, "cld": cld, "hold": hold}

# name -> (sampler, options, module holding its noise_like (None: deterministic), NFE per step)
SAMPLERS = {
    "em": (euler_maruyama, {}, em_module, 1),
    # snr = 0.04: the Langevin corrector's step is fixed by snr, not by the budget, so its bias
    # (∝ snr², ≈ +2.6% of the variance at score_sde's 0.16) does not vanish as NFE grows; 0.04 makes it
    # 16× smaller, below the Monte Carlo resolution here.
    "pc": (predictor_corrector, {"snr": 0.04, "predictor": "reverse_diffusion"}, pc_module, 2),
    "ode_dopri5": (probability_flow, {"method": "dopri5"}, None, None),
    "ode_euler": (probability_flow, {"method": "euler"}, None, 1),
    "ode_heun": (probability_flow, {"method": "heun"}, None, 2),
    "sscs": (sscs, {}, splitting_module, 1),
    "lie_trotter": (lie_trotter, {}, splitting_module, 1),
}
FIXED_STEP = [name for name, spec in SAMPLERS.items() if spec[3] is not None]
STOCHASTIC = ["em", "pc", "sscs", "lie_trotter"]


def supported(sampler_name: str, process_name: str) -> bool:
    return not (sampler_name in ("sscs", "lie_trotter") and process_name == "ve")


COMBOS = [(s, p) for s in SAMPLERS for p in PROCESSES if supported(s, p)]


class Counting:
    """Our own NFE counter (independent of the samplers' CountingScore); records the times."""

    def __init__(self, fn):
        self.fn, self.times = fn, []

    def __call__(self, z, t):
        self.times.append(float(t))
        return self.fn(z, t)

    @property
    def count(self):
        return len(self.times)


def exact_start(process, n: int, d: int, generator) -> torch.Tensor:
    """z_T from the exact marginal of the data at t_max, (n, k, d) float64."""
    mu, cov = marginal(process, process.t_max, M, S)
    L = torch.linalg.cholesky(cov)
    eps = torch.randn(n, process.order, d, generator=generator, dtype=F64)
    return mu.reshape(1, -1, 1) + torch.einsum("ij,bjd->bid", L, eps)


def run(name, process, z0, budget, generator, **extra):
    fn, opts, _, _ = SAMPLERS[name]
    opts = {**opts, **extra}
    if name == "ode_dopri5":  # adaptive: the "budget" is a tolerance
        opts.update(rtol=budget, atol=budget)
        budget = 1
    return fn(process, score_fn(process, M, S), z0.clone(), nfe=budget, generator=generator, **opts)
