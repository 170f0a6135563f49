"""``sampler.deterministic_from_logsnr`` (samplers/expint_plan.py ``late_steps_deterministic``): λ until the position
block's logSNR reaches c, the PF-ODE (λ = 0) after. Which steps switch, exactness in law across the switch,
convergence on Gaussian data, and its configuration errors."""

import dataclasses

import pytest
import torch

from gaussian import law_errors, marginal, score_fn
from momentum_diffusion.processes import cld, hold, vp
from momentum_diffusion.samplers import expint_plan
from momentum_diffusion.samplers.base import SamplerConfigError, log_snr, time_grid
from momentum_diffusion.samplers.expint import exponential_integrator
from momentum_diffusion.samplers.expint_plan import late_steps_deterministic

F64 = torch.float64
MEAN, STD = 0.5, 0.3


@pytest.mark.parametrize("make", [vp, cld, hold])
def test_steps_from_the_threshold_on_are_the_deterministic_plan(make):
    """Steps starting below c keep the λ = 1 plan (noise root ≠ 0), steps starting at logSNR ≥ c are the λ = 0
    plan row for row (root = 0); an inverted or shifted mask fails one of the two halves."""
    process = make()
    ts = time_grid(process, 10, "quadratic")
    steps = expint_plan.StepIntervals(ts, 2, lambda t: t, corrector=True)
    sde = expint_plan.data_prediction_steps(process, steps, 1.0)
    ode = expint_plan.data_prediction_steps(process, steps, 0.0)
    start = log_snr(process, ts[:-1])
    threshold = float(start[4])  # step 4 is the first deterministic one
    mixed = late_steps_deterministic(process, steps, sde, threshold)
    assert set(mixed) == set(sde)
    for name in sde:
        torch.testing.assert_close(mixed[name][:4], sde[name][:4], rtol=0, atol=0, msg=name)
        torch.testing.assert_close(mixed[name][4:], ode[name][4:], rtol=0, atol=0, msg=name)
    assert (mixed["root"][:4].flatten(1).abs().amax(1) > 0).all() and (mixed["root"][4:] == 0).all()
    assert late_steps_deterministic(process, steps, sde, None) is sde
    assert late_steps_deterministic(process, steps, sde, float(start.max()) + 1.0) is sde


@pytest.mark.parametrize("make", [vp, cld, hold])
def test_extreme_thresholds_are_the_pure_samplers(make):
    """c above every step's logSNR is λ = 1 throughout; c below all of them is λ = 0 throughout (same seed,
    same samples): the option adds no other change to the sampler."""
    process = make()
    fn, n = score_fn(process, MEAN, STD), 64

    def sample(**options):
        gen = torch.Generator().manual_seed(2)
        z = process.sample_prior((n, 2), generator=gen, dtype=F64)
        return exponential_integrator(process, fn, z, nfe=8, generator=gen, **options)[0]

    switch = dict(stochasticity=1.0)  # λ before the switch (HOLD's default is 0.5)
    pure_sde, pure_ode = sample(stochasticity=1.0), sample(stochasticity=0.0)
    torch.testing.assert_close(sample(deterministic_from_logsnr=1e6, **switch), pure_sde, rtol=0, atol=0)
    torch.testing.assert_close(sample(deterministic_from_logsnr=-1e6, **switch), pure_ode, rtol=0, atol=0)
    assert not torch.equal(sample(deterministic_from_logsnr=0.0, **switch), pure_sde)


@pytest.mark.parametrize("make", [vp, cld, hold])
def test_switched_steps_are_exact_in_law_for_point_mass_data(make):
    """Both plans are exact in law for point-mass data, so a path that switches mid-way must land on the exact
    marginal N(φ_t m, Σ_t): a mismatched Ψ / V / C pair at the switch would move mean or covariance."""
    process = dataclasses.replace(make(), t_min=0.1)
    n, k = 40_000, process.order
    ts = time_grid(process, 4, "quadratic")
    threshold = float(log_snr(process, ts[2:3]))  # steps 0–1 stochastic, 2–3 deterministic
    gen = torch.Generator().manual_seed(5)
    Phi, cov, chol = process.kernel(torch.tensor([process.t_max, process.t_min], dtype=F64))
    z_T = Phi[0][:, 0] * MEAN + torch.randn(n, k, dtype=F64, generator=gen) @ chol[0].T
    out, _ = exponential_integrator(
        process, score_fn(process, MEAN, 0.0), z_T[:, :, None], nfe=4, order=2, grid="quadratic", denoise=False,
        generator=gen, deterministic_from_logsnr=threshold,
    )  # fmt: skip
    errors = law_errors(out[:, :, 0], Phi[1][:, 0] * MEAN, cov[1])
    assert max(errors) < 5, errors


@pytest.mark.parametrize("make", [vp, cld, hold])
def test_the_switch_converges_on_gaussian_data(make):
    """Non-degenerate data N(MEAN, STD²), switch at SNR = 1: at 64 steps the exact marginal at t_end (Monte Carlo
    error bounds); at 4 steps the same path is visibly off, so the check can fail."""
    process = dataclasses.replace(make(), t_min=0.05)
    n = 40_000
    mean_T, cov_T = marginal(process, process.t_max, MEAN, STD)
    mean, cov = marginal(process, process.t_min, MEAN, STD)
    errors = {}
    for nfe in (4, 64):
        gen = torch.Generator().manual_seed(11)
        z_T = mean_T + torch.randn(n, process.order, dtype=F64, generator=gen) @ torch.linalg.cholesky(cov_T).T
        out, _ = exponential_integrator(
            process, score_fn(process, MEAN, STD), z_T[:, :, None], nfe=nfe, grid="quadratic", denoise=False,
            generator=gen, deterministic_from_logsnr=0.0,
        )  # fmt: skip
        errors[nfe] = law_errors(out[:, :, 0], mean, cov)
    assert max(errors[64]) < 5, errors
    assert max(errors[4]) > 10, errors


@pytest.mark.parametrize(
    "options, named",
    [
        (dict(deterministic_from_logsnr="late"), "deterministic_from_logsnr"),
        (dict(deterministic_from_logsnr=True), "deterministic_from_logsnr"),
        (dict(deterministic_from_logsnr=float("nan")), "deterministic_from_logsnr"),
        (dict(deterministic_from_logsnr=0.0, prediction="noise", stochasticity=0.0), "prediction=data"),
    ],
)
def test_bad_thresholds_are_config_errors(options, named):
    process = cld()
    z = process.sample_prior((4, 2), generator=torch.Generator().manual_seed(0))
    with pytest.raises(SamplerConfigError, match=named):
        exponential_integrator(process, score_fn(process), z, nfe=10, **options)
