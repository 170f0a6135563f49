"""What every sampler shares: NFE counting and budgets, time grids, support declarations, final denoising.

Sampler contract (k-diffusion style pure functions):
    samples_z, nfe_used = sampler(process, score_fn, prior_z, *, nfe | tolerances, generator, ...)
``score_fn(z, t)`` returns the score of the noised block (shape of ``z[:, -1]``) for a float time t.
A score function may also be a ``NoisePredictingScore`` (objectives.ScoreModel): it then gives the noise ε̂ its
score is computed from, in its noise factor K_t, and samplers that work in ε use it (``predicted_noise``).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch

from ..choices import check_choice
from ..processes.core import Process
from ..processes.noise_factor import NoiseFactor, data_posterior_mean, gddim_factor
from . import calibrated_grids

ScoreFn = Callable[[torch.Tensor, float], torch.Tensor]


@runtime_checkable
class NoisePredictingScore(Protocol):
    """A score function s(z, t) = −c_tᵀ ε̂(z, t) that also gives ε̂, the noise of z_t = Φ z̄_0 + K_t ε for its
    ``noise_factor`` K_t (processes/noise_factor.py): (B, noise_factor.blocks(process), *data)."""

    noise_factor: NoiseFactor

    def __call__(self, z: torch.Tensor, t) -> torch.Tensor: ...

    def predict_noise(self, z: torch.Tensor, t) -> torch.Tensor: ...


def predicted_noise(score_fn, noise_factor: NoiseFactor) -> Callable | None:
    """``score_fn``'s own ε̂ when it predicts noise in ``noise_factor``; None otherwise (ε from the score)."""
    if isinstance(score_fn, NoisePredictingScore) and score_fn.noise_factor == noise_factor:
        return score_fn.predict_noise
    return None


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


_NOTHING = object()  # a retired option without a harmless old default


def sampler(
    name: str, supports: Callable[[Process], bool] = lambda p: True, requirement: str = "", retired: dict | None = None
):
    """Declare a sampler function: its name, which processes it supports and its retired options, all checked
    before any work. ``retired``: {option: what to use instead} (any value is an error that says so), or
    {option: (old default, what to use instead)}: the old default is dropped, since checkpoints store it in
    their sampler config, and any other value is that error."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(process, score_fn, prior_z, **kwargs):
            check_support(run, process)
            for option, rule in (retired or {}).items():
                old_default, instead = rule if isinstance(rule, tuple) else (_NOTHING, rule)
                if option in kwargs and kwargs.pop(option) != old_default:
                    raise SamplerConfigError(f"sampler '{name}' has no option {option} any more: {instead}")
            check_options(run, kwargs)
            return fn(process, score_fn, prior_z, **kwargs)

        run.sampler_name, run.supports, run.requirement = name, supports, requirement
        run.retired = dict(retired or {})
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


def sampler_options(fn) -> list[str]:
    """The options a declared sampler function takes: its keyword-only parameters but the run-time generator."""
    params = inspect.signature(fn).parameters.values()  # functools.wraps: the declared function's own
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name != "generator"]


def check_options(sampler, options: dict | None = None) -> None:
    """One line for an option the sampler does not take (a typo, or another sampler's option), before any work;
    ``options`` default to the partial's own. Retired options are the decorator's (it says what replaced them)."""
    fn, given = unwrap(sampler)
    known = {*sampler_options(fn), *fn.retired, "generator"}
    unknown = sorted(set(given if options is None else options) - known)
    if unknown:
        raise SamplerConfigError(
            f"sampler '{fn.sampler_name}' has no option {', '.join(unknown)}; "
            f"its options: {', '.join(sampler_options(fn))}"
        )


def configure(sampler, **overrides) -> functools.partial:
    """A flat functools.partial of the sampler function with its options (Hydra partials included)."""
    fn, options = unwrap(sampler)
    return functools.partial(fn, **{**options, **overrides})


def check_support(sampler, process: Process) -> None:
    """The one "does this sampler run on this process" check (config time, module construction, call time)."""
    fn, _ = unwrap(sampler)
    if not fn.supports(process):
        from . import valid_samplers  # the package's list of samplers (base is imported by each of them)

        raise SamplerConfigError(
            f"sampler '{fn.sampler_name}' does not support diffusion '{process.name}' ({fn.requirement}); "
            f"valid samplers for {process.name}: {', '.join(valid_samplers(process))}"
        )


def check_nfe(nfe, minimum: int = 1) -> int:
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < minimum:
        raise SamplerConfigError(f"sampler.nfe must be an integer >= {minimum}, got {nfe!r}")
    return nfe


def has_stationary_law(process: Process) -> bool:
    return process.sde.stationary_cov is not None


GRIDS = ("uniform", "quadratic", "edm", "logsnr", "logsnr_band", "calibrated")
# EDM's noise range σ̃ ∈ [0.002, 80] (Karras et al. 2022, §5) as a logSNR band: outside it the posterior mean of
# unit-scale data is (nearly) constant in the step, which x̂_0-steps integrate exactly
LOGSNR_BAND = (-2 * math.log(80.0), -2 * math.log(0.002))


def time_grid(process: Process, n_steps: int, kind: str = "uniform", rho: float = 7.0) -> torch.Tensor:
    """n_steps + 1 times from t_max down to t_min (float64).

    uniform: equal steps in t.  quadratic: denser near t_min (DDIM's quadratic schedule).
    logsnr: equal steps in the position block's true logSNR λ(t) = log(φ_t² / σ_t²) (``log_snr``), the grid of
    DPM-Solver for VP, here from each process's own mean map and marginal covariance.
    edm: EDM's ρ-polynomial (Karras et al. 2022, eq. 5) in the equivalent VE noise level σ̃ = σ_t / φ_t = e^{−λ/2}.
    logsnr_band: equal steps in λ inside ``LOGSNR_BAND``, and one step from t_max into it / from it to t_min
    where the process's path extends beyond it.
    calibrated: the process's grid optimised once on the calibration mixture (calibrated_grids.py).
    """
    t0, t1 = process.t_min, process.t_max
    u = torch.linspace(0.0, 1.0, n_steps + 1, dtype=torch.float64)
    if kind == "uniform":
        return t1 + (t0 - t1) * u
    if kind == "quadratic":
        return t0 + (t1 - t0) * (1 - u) ** 2
    if kind in ("edm", "logsnr", "logsnr_band"):
        if process.t_min <= 0:
            raise SamplerConfigError(f"time grid '{kind}' needs t_min > 0")
        return _grid_in_log_snr(process, u, kind, rho)
    if kind == "calibrated":
        if process.name not in calibrated_grids.KNOTS:
            raise SamplerConfigError(
                f"time grid 'calibrated' has no grid for diffusion '{process.name}' "
                f"(calibrated: {', '.join(calibrated_grids.KNOTS)}; scripts/calibrate_grid.py makes one)"
            )
        return calibrated_grids.calibrated_grid(t0, t1, n_steps, calibrated_grids.KNOTS[process.name])
    check_choice("sampler.grid", kind, GRIDS, SamplerConfigError)  # raises: kind is none of them


def log_snr(process: Process, t: torch.Tensor) -> torch.Tensor:
    """The position block's logSNR λ(t) = log(φ_t² / σ_t²), φ_t = Φ(τ_t)_11 the mean factor of x_0 and σ_t² the
    marginal variance of z_t's data block given x_0 (the kernel's, auxiliary blocks' initial law included).
    VP: λ = log(α²/(1 − α²)), α = exp(−τ/2); VE: −log σ²(t). For order > 1 σ_t² comes from the gDDIM factor
    (R Rᵀ = Σ_t, integrated from an accurate start): the stationary-form kernel has ~1e-16·Σ∞ absolute
    roundoff, which floors σ_t² near 1e-10 for CLD/HOLD, where their data-block variance is ~τ³ / τ⁵."""
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    phi = process.mean_factor(t)[:, 0]
    if process.order == 1:
        var = process.kernel(t)[1][:, 0, 0]
    else:  # a float64 ODE solve, cached per process
        var = gddim_factor(process).factor(t)[:, 0, :].square().sum(-1)
    return (phi.square() / var).log()


def equivalent_sigma(process: Process, t: torch.Tensor) -> torch.Tensor:
    """σ̃(t) = e^{−λ(t)/2} = σ_t / φ_t, the position block's noise-to-signal ratio (EDM's σ; VE: σ itself), for
    times of any shape."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return (-0.5 * log_snr(process, t)).exp().reshape(t.shape)


def _grid_in_log_snr(process: Process, u: torch.Tensor, kind: str, rho: float) -> torch.Tensor:
    # λ(t) is strictly decreasing for every process here (φ_t > 0 falls, σ_t² grows). Tabulated on a log-spaced
    # t grid and inverted by interpolating log t linearly in λ (λ ≈ −log(c t^m) near t_min: linear in log t).
    log_t = torch.linspace(math.log(process.t_min), math.log(process.t_max), 8193, dtype=torch.float64)
    fine = log_t.exp()
    fine[0], fine[-1] = process.t_min, process.t_max
    neg = -log_snr(process, fine)  # increasing in t: −λ = 2 log σ̃
    lo, hi = neg[0], neg[-1]
    if kind == "edm":
        s_lo, s_hi = (0.5 * lo).exp(), (0.5 * hi).exp()
        target = 2 * (s_hi ** (1 / rho) + u * (s_lo ** (1 / rho) - s_hi ** (1 / rho))).log() * rho
    elif kind == "logsnr_band":
        band_lo, band_hi = max(lo, -LOGSNR_BAND[1]), min(hi, -LOGSNR_BAND[0])
        first, last = bool(hi > band_hi), bool(lo < band_lo)  # the path leaves the band: one step outside
        n = len(u) - 1
        if n - first - last < 1:
            first = last = False
            band_lo, band_hi = lo, hi
        inner = torch.linspace(band_hi, band_lo, n + 1 - first - last, dtype=torch.float64)
        target = torch.cat([hi.reshape(1)] * first + [inner] + [lo.reshape(1)] * last)
    else:
        target = hi + u * (lo - hi)
    idx = torch.searchsorted(neg.contiguous(), target.clamp(lo, hi)).clamp(1, len(fine) - 1)
    w = (target - neg[idx - 1]) / (neg[idx] - neg[idx - 1]).clamp_min(1e-300)
    grid = (log_t[idx - 1] + w.clamp(0, 1) * (log_t[idx] - log_t[idx - 1])).exp()
    grid[0], grid[-1] = process.t_max, process.t_min
    return grid


def noise_like(z: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)


DENOISE_CHOICES = (True, False, "tweedie", "euler")


def check_denoise(denoise):
    if denoise not in DENOISE_CHOICES or isinstance(denoise, int) and not isinstance(denoise, bool):
        raise SamplerConfigError(f"sampler.denoise must be true, false, tweedie or euler, got {denoise!r}")
    return denoise


def final_denoise(process: Process, score: ScoreFn, z: torch.Tensor, t: float, method=True) -> torch.Tensor:
    """One noise-free step to t = 0 (1 NFE), shared by every sampler (``sampler.denoise``).

    ``tweedie``: the data block becomes E[x_0 | z_t], for every order (order 1: (z + σ_t² s) / α_t; order > 1:
    the phase-space Tweedie formula from the noised-block score, processes/noise_factor.py).
    ``euler``: CLD's final step, a noise-free Euler step of the reverse SDE from t to 0.
    ``true``: the papers' choice, Tweedie for order 1 and CLD's final step for order > 1.
    """
    check_denoise(method)
    s = score(z, t)
    if method == "tweedie" or (method is True and process.order == 1):
        out = z.clone()
        out[:, 0] = data_posterior_mean(process, z, s, t).to(z.dtype)
        return out
    return z - float(process.tau(t)) * process.reverse_drift_per_tau(z, s)


def steps_for_budget(nfe: int, per_step: int, denoise: bool) -> int:
    """Largest number of steps whose cost (plus the final denoising NFE) fits the budget."""
    n = (nfe - int(check_denoise(denoise) is not False)) // per_step
    if n < 1:
        raise SamplerConfigError(
            f"sampler.nfe={nfe} is too small: each step costs {per_step} NFE"
            + (" and the final denoising step 1 more" if denoise is not False else "")
        )
    return n


class FixedStepRun:
    """What every fixed-step sampler does around its loop: count NFE, fit the steps into the budget ``nfe``
    (``per_step`` NFE each, plus the final denoising step), lay out the time grid, and finish with the
    optional denoising step (``sampler.denoise``)."""

    def __init__(self, process: Process, score_fn: ScoreFn, nfe, per_step: int, denoise, grid: str):
        self.process, self.denoise = process, denoise
        self.score = CountingScore(score_fn)
        self.n = steps_for_budget(check_nfe(nfe), per_step, denoise)
        self.ts = time_grid(process, self.n, grid)

    def finish(self, z: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(samples, NFE used) after the last step."""
        if self.denoise:
            z = final_denoise(self.process, self.score, z, float(self.ts[-1]), self.denoise)
        return z, self.score.count
