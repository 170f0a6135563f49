"""What every sampler shares: NFE counting and budgets, time grids, support declarations, final denoising.

Sampler contract (k-diffusion style pure functions):
    samples_z, nfe_used = sampler(process, score_fn, prior_z, *, nfe | tolerances, generator, ...)
``score_fn(z, t)`` returns the score of the noised block (shape of ``z[:, -1]``) for a float time t.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from ..processes.core import Process, apply_blocks

ScoreFn = Callable[[torch.Tensor, float], torch.Tensor]


class SamplerConfigError(ValueError):
    """A sampler cannot run with this process or these options; raised before any work."""


class CountingScore:
    """Wraps a score function and counts its evaluations (one NFE = one call on the whole batch)."""

    def __init__(self, score_fn: ScoreFn):
        self.score_fn = score_fn
        self.count = 0

    def __call__(self, z: torch.Tensor, t: float) -> torch.Tensor:
        self.count += 1
        return self.score_fn(z, float(t))


def sampler(name: str, supports: Callable[[Process], bool] = lambda p: True, requirement: str = ""):
    """Declare a sampler function: its name and which processes it supports (checked before any work)."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(process, score_fn, prior_z, **kwargs):
            check_support(run, process)
            return fn(process, score_fn, prior_z, **kwargs)

        run.sampler_name, run.supports, run.requirement = name, supports, requirement
        return run

    return wrap


def unwrap(sampler) -> tuple[Callable, dict]:
    """The declared sampler function under (nested) partials, and the merged keyword options."""
    fn, layers = sampler, []
    while not hasattr(fn, "sampler_name") and hasattr(fn, "func"):
        layers.append(dict(getattr(fn, "keywords", None) or {}))
        fn = fn.func
    if not hasattr(fn, "sampler_name"):
        raise SamplerConfigError(f"{sampler!r} is not a sampler (declare it with @sampler)")
    options = {}
    for kw in reversed(layers):  # outer partials override inner ones
        options.update(kw)
    return fn, options


def configure(sampler, **overrides) -> functools.partial:
    """A flat functools.partial of the sampler function with its options (Hydra partials included)."""
    fn, options = unwrap(sampler)
    return functools.partial(fn, **{**options, **overrides})


def check_support(sampler, process: Process) -> None:
    fn, _ = unwrap(sampler)
    if not fn.supports(process):
        raise SamplerConfigError(
            f"sampler '{fn.sampler_name}' does not support diffusion '{process.name}' ({fn.requirement})"
        )


def check_nfe(nfe, minimum: int = 1) -> int:
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < minimum:
        raise SamplerConfigError(f"sampler.nfe must be an integer >= {minimum}, got {nfe!r}")
    return nfe


def has_stationary_law(process: Process) -> bool:
    return process.sde.stationary_cov is not None


def time_grid(process: Process, n_steps: int, kind: str = "uniform", rho: float = 7.0) -> torch.Tensor:
    """n_steps + 1 times from t_max down to t_min (float64).

    uniform: equal steps in t.  quadratic: denser near t_min (DDIM's quadratic schedule).
    edm: EDM's ρ-polynomial (Karras et al. 2022, eq. 5) applied to the kernel's noised-block std.
    logsnr: uniform in log of the kernel's noised-block variance (phase-space analogue of log-SNR).
    """
    t0, t1 = process.t_min, process.t_max
    u = torch.linspace(0.0, 1.0, n_steps + 1, dtype=torch.float64)
    if kind == "uniform":
        return t1 + (t0 - t1) * u
    if kind == "quadratic":
        return t0 + (t1 - t0) * (1 - u) ** 2
    if kind in ("edm", "logsnr"):
        return _grid_in_noise_level(process, u, kind, rho)
    raise SamplerConfigError(f"unknown time grid '{kind}'; choose uniform, quadratic, edm or logsnr")


def _grid_in_noise_level(process: Process, u: torch.Tensor, kind: str, rho: float) -> torch.Tensor:
    # σ(t): noised-block std of the kernel, monotone in t for all processes here; invert by bisection.
    fine = torch.linspace(process.t_min, process.t_max, 4097, dtype=torch.float64)
    sigma = process.kernel(fine)[1][:, -1, -1].sqrt()
    s_lo, s_hi = sigma[0], sigma[-1]
    if kind == "edm":
        target = (s_hi ** (1 / rho) + u * (s_lo ** (1 / rho) - s_hi ** (1 / rho))) ** rho
    else:
        target = torch.exp(torch.log(s_hi) + u * (torch.log(s_lo) - torch.log(s_hi)))
    idx = torch.searchsorted(sigma.contiguous(), target.clamp(s_lo, s_hi)).clamp(1, len(fine) - 1)
    w = (target - sigma[idx - 1]) / (sigma[idx] - sigma[idx - 1]).clamp_min(1e-300)
    grid = fine[idx - 1] + w.clamp(0, 1) * (fine[idx] - fine[idx - 1])
    grid[0], grid[-1] = process.t_max, process.t_min
    return grid


def noise_like(z: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)


def final_denoise(process: Process, score: ScoreFn, z: torch.Tensor, t: float) -> torch.Tensor:
    """One noise-free step to t = 0 (1 NFE).

    Order 1: Tweedie, E[x_0 | z_t] = (z + σ_t² s) / α_t. Order > 1: the score is known only on the noised
    block, so take CLD's final step, a noise-free Euler step of the reverse SDE from t to 0.
    """
    s = score(z, t)
    if process.order == 1:
        Phi, cov, _ = process.kernel(torch.tensor(t, dtype=torch.float64))
        return (z + float(cov[0, 0]) * s.unsqueeze(1)) / float(Phi[0, 0])
    return z - float(process.tau(t)) * drift_per_tau(process, z, s)


def drift_per_tau(process: Process, z, s, probability_flow: bool = False):
    """Reverse drift divided by b(t): A z − w Q s on the noised block (w = ½ for the PF-ODE)."""
    drift = apply_blocks(process.sde.A, z)
    drift[:, -1] -= (0.5 if probability_flow else 1.0) * process.noise_scale * s
    return drift


def steps_for_budget(nfe: int, per_step: int, denoise: bool) -> int:
    """Largest number of steps whose cost (plus the final denoising NFE) fits the budget."""
    n = (nfe - int(denoise)) // per_step
    if n < 1:
        raise SamplerConfigError(
            f"sampler.nfe={nfe} is too small: each step costs {per_step} NFE"
            + (" and the final denoising step 1 more" if denoise else "")
        )
    return n
