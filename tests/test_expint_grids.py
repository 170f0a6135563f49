"""Time grids in the true logSNR (samplers/base.py ``log_snr``) and the per-process expint defaults: checks
that fail if the math is wrong (a hand-derived VP value, uniformity in the true logSNR for every process, an
independent small-t covariance), and convergence of each process's default on Gaussian data with exact scores."""

import math

import pytest
import torch

from gaussian import score_fn
from momentum_diffusion.processes import cld, critically_damped_chain, hold, ve, vp
from momentum_diffusion.processes.noise_factor import accurate_kernel_cov
from momentum_diffusion.samplers.base import equivalent_sigma, log_snr, time_grid
from momentum_diffusion.samplers.expint import exponential_integrator
from momentum_diffusion.samplers.expint_defaults import DEFAULTS_SWITCH

F64 = torch.float64
PROCESSES = [vp, ve, cld, hold]


def chain4():
    return critically_damped_chain(order=4)


def test_vp_log_snr_is_the_hand_derived_value():
    """VP (β_min 0.1, β_max 20): τ = 0.1 t + 9.95 t², α² = e^−τ, σ² = 1 − e^−τ, so λ = −τ − log(1 − e^−τ)."""
    t = torch.tensor([1e-4, 0.1, 0.5, 1.0], dtype=F64)
    tau = 0.1 * t + 0.5 * (20.0 - 0.1) * t**2
    expected = -tau - torch.log(-torch.expm1(-tau))
    torch.testing.assert_close(log_snr(vp(), t), expected, rtol=1e-10, atol=1e-10)
    # t = 0.5 by hand: τ = 0.05 + 2.4875 = 2.5375, e^−τ = 0.07907, λ = −2.5375 + 0.08237 = −2.45514
    assert abs(float(log_snr(vp(), torch.tensor([0.5], dtype=F64))[0]) + 2.45514) < 1e-4


def test_ve_log_snr_is_minus_log_variance():
    process = ve()
    t = torch.tensor([1e-3, 0.3, 1.0], dtype=F64)
    var = process.kernel(t)[1][:, 0, 0]  # φ = 1 for VE
    torch.testing.assert_close(log_snr(process, t), -var.log(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("make", [cld, hold])
def test_phase_space_log_snr_uses_the_mean_factor_and_an_accurate_variance(make):
    """Order > 1: λ = log(Φ_11² / Σ_11). Large t: against the kernel (φ ≪ 1 there, so ignoring the mean factor
    would be off by 2 log φ); t_min: against an independent quadrature of the covariance."""
    process = make()
    t = torch.tensor([0.3, 0.7, 1.0], dtype=F64)
    Phi, cov, _ = process.kernel(t)
    torch.testing.assert_close(log_snr(process, t), (Phi[:, 0, 0] ** 2 / cov[:, 0, 0]).log(), rtol=1e-6, atol=1e-6)
    assert float(Phi[-1, 0, 0].abs().log()) < -2  # the mean factor matters at t_max
    small = accurate_kernel_cov(process, process.t_min)[0, 0]
    phi = process.transition(0.0, process.t_min)[0].reshape(process.order, -1)[0, 0]
    expected = math.log(float(phi) ** 2 / float(small))
    assert abs(float(log_snr(process, torch.tensor([process.t_min], dtype=F64))[0]) - expected) < 1e-6


@pytest.mark.parametrize("make", [*PROCESSES, chain4])
def test_logsnr_grid_is_uniform_in_the_true_log_snr(make):
    process = make()
    ts = time_grid(process, 12, "logsnr")
    lam = log_snr(process, ts)
    steps = lam.diff()
    assert (ts.diff() < 0).all() and (steps > 0).all()
    torch.testing.assert_close(steps, steps.mean().expand_as(steps), rtol=1e-4, atol=0)
    assert float(ts[0]) == process.t_max and float(ts[-1]) == process.t_min


@pytest.mark.parametrize("make", [*PROCESSES, chain4])
def test_edm_grid_is_the_rho_polynomial_in_the_equivalent_ve_sigma(make):
    """σ̃ = e^{−λ/2} = σ_t / φ_t; EDM eq. 5: σ̃^{1/ρ} equally spaced."""
    process, rho = make(), 7.0
    sigma = (-0.5 * log_snr(process, time_grid(process, 10, "edm", rho=rho))).exp()
    root = sigma ** (1 / rho)
    steps = root.diff()
    torch.testing.assert_close(steps, steps.mean().expand_as(steps), rtol=1e-4, atol=0)


# the DEFAULTS_SWITCH rows (no default; the switch itself is covered by test_expint_switch.py) run with -m slow
@pytest.mark.parametrize(
    "make, table",
    [(make, "default") for make in PROCESSES]
    + [pytest.param(make, "switch", marks=pytest.mark.slow) for make in PROCESSES],
)
def test_the_default_converges_on_gaussian_data(make, table):
    """``sampler=expint`` with no options (the process's defaults, expint_defaults.defaults_for; and the process's
    ``DEFAULTS_SWITCH`` row: calibrated grid, λ = 0 late in the path), exact scores of data
    N(0.5, 0.3²), from the exact prior draw: the data block's mean and std approach the data law as NFE grows,
    and at 1000 NFE sit within Monte Carlo error (no plateau, no blow-up of long end steps; in standard
    errors: the final denoising step shrinks the std by a relative ~σ²_{t_min}/0.09, far below one)."""
    process, n, mean, std = make(), 5_000, 0.5, 0.3
    errors = {}
    for nfe in (8, 1000):
        gen = torch.Generator().manual_seed(5)
        z = process.sample_prior((n, 1), generator=gen, dtype=F64)
        options = DEFAULTS_SWITCH[process.name] if table == "switch" else {}
        out, used = exponential_integrator(process, score_fn(process, mean, std), z, nfe=nfe, generator=gen, **options)
        x = out[:, 0, 0]
        assert used == nfe and x.isfinite().all()
        mean_err = abs(float(x.mean()) - mean) / (std / math.sqrt(n))
        std_err = abs(float(x.std()) - std) / (std / math.sqrt(2 * n))
        errors[nfe] = max(mean_err, std_err)
    assert errors[1000] < 4, errors
    assert errors[8] > errors[1000], errors


@pytest.mark.parametrize("make", PROCESSES)
def test_phase_space_defaults_spend_every_nfe_on_a_step(make):
    """CLD and HOLD take no final denoising step by default (their position block reaches t_min with σ̃ ≈ 1e-5,
    VP's with 1e-3): at a budget of N the score is evaluated at the N step starts of the N-step grid, none at
    t_min. VP / VE keep the step: N − 1 steps and one evaluation at t_min. For CLD / HOLD the extra step is the
    better use of that NFE at a tight budget on Gaussian data N(0.5, 0.3²) (the std's relative error at 6 NFE,
    same prior draw; mode-KL on the benchmark mixtures: docs/fast_sampling.md)."""
    process, n, mean, std = make(), 20_000, 0.5, 0.3
    sigma_at_t_min = float((-0.5 * log_snr(process, torch.tensor([process.t_min], dtype=F64))).exp())
    phase_space = process.order > 1
    assert (sigma_at_t_min < 1e-4) == phase_space
    times, exact = [], score_fn(process, mean, std)

    def score(z, t):
        times.append(t)
        return exact(z, t)

    errors = {}
    for denoise in (None, True):
        times.clear()
        gen = torch.Generator().manual_seed(5)
        z = process.sample_prior((n, 1), generator=gen, dtype=F64)
        out, used = exponential_integrator(process, score, z, nfe=6, generator=gen, denoise=denoise)
        steps = 6 if denoise is None and phase_space else 5
        assert used == len(times) == 6
        torch.testing.assert_close(torch.tensor(times[:steps], dtype=F64), time_grid(process, steps, "quadratic")[:-1])
        assert (times[-1] == process.t_min) == (steps == 5)
        errors[denoise] = abs(float(out[:, 0, 0].std()) / std - 1)
    if phase_space:
        assert errors[None] < errors[True], errors


def test_process_defaults_are_options_and_picked_by_process_name():
    from momentum_diffusion.samplers.expint import resolve_options
    from momentum_diffusion.samplers.expint_defaults import DEFAULTS, PROCESS_DEFAULTS, defaults_for

    assert set(PROCESS_DEFAULTS) == {"vp", "ve", "cld", "hold"}
    assert all(set(rule) <= set(DEFAULTS) for rule in PROCESS_DEFAULTS.values())
    assert defaults_for("langevin4") == DEFAULTS  # a process without a row: the common rule
    for name in PROCESS_DEFAULTS:
        resolved = resolve_options(dict.fromkeys(DEFAULTS), name)
        assert resolved == {**defaults_for(name), "stochasticity": float(defaults_for(name)["stochasticity"])}


def test_a_step_much_longer_than_the_last_is_first_order():
    """logsnr_band at 200 steps: the last step is ~7× the one before. Its predictor weights must be the order-1
    weights (Σ_j V_j, the Lagrange basis summing to 1): equal to an order-1 plan's for the same step."""
    from momentum_diffusion.samplers.expint import integrator_plan
    from momentum_diffusion.samplers.expint_defaults import DEFAULTS

    process = vp()
    ts = time_grid(process, 200, "logsnr_band")
    h = ts.diff().abs()
    assert float(h[-1] / h[-2]) > 3
    options = {**DEFAULTS, "grid": "logsnr_band"}
    high = integrator_plan(process, ts, options)
    low = integrator_plan(process, ts, {**options, "order": 1, "corrector": False})
    assert float(high["V"][-1, 1:].abs().max()) == 0.0
    torch.testing.assert_close(high["V"][-1, 0], low["V"][-1, 0], rtol=1e-7, atol=1e-12)
    assert float(high["V"][-2, 1:].abs().max()) > 0  # ordinary steps keep their order


@pytest.mark.parametrize("make", [*PROCESSES, chain4])
def test_logsnr_band_grid_steps_evenly_inside_the_band(make):
    """Endpoints, strictly decreasing for any n, and equal λ-steps inside EDM's band (one step outside it on
    each side the path leaves it)."""
    from momentum_diffusion.samplers.base import LOGSNR_BAND

    process = make()
    for n in (1, 2, 7, 50, 333):
        ts = time_grid(process, n, "logsnr_band")
        assert ts.shape == (n + 1,) and float(ts[0]) == process.t_max and float(ts[-1]) == process.t_min
        assert (ts.diff() < 0).all(), n
    lam = log_snr(process, time_grid(process, 40, "logsnr_band"))
    inside = lam[(lam >= LOGSNR_BAND[0] - 1e-6) & (lam <= LOGSNR_BAND[1] + 1e-6)]
    steps = inside.diff()
    torch.testing.assert_close(steps, steps.mean().expand_as(steps), rtol=1e-3, atol=0)
    assert len(lam) - len(inside) == int(float(lam[0]) < LOGSNR_BAND[0]) + int(float(lam[-1]) > LOGSNR_BAND[1])


@pytest.mark.parametrize("make", PROCESSES)
def test_the_default_tolerates_a_network_like_score_error_at_low_nfe(make):
    """A trained network's ε̂ is off by O(0.1) everywhere; at λ ≈ −10 its x̂_0 = (z − σε̂)/φ carries that ×σ/φ ≈ 100.
    With the exact Gaussian score plus such an error (score − 0.1 u / σ_t, u a fixed random direction), the
    default at 10 NFE must stay near the data (|x − 0.5| < 3 for 99.9 % of samples, data std 0.3). The logSNR
    grids, which spend their first evaluations at λ < −8.7, fail this for VP (digits VP FD 1.4e6 at 10 NFE)."""
    process, n = make(), 2000
    exact = score_fn(process, 0.5, 0.3)
    u = torch.randn((n, 4), generator=torch.Generator().manual_seed(7), dtype=F64)

    def noisy(z, t):
        sigma = float(process.kernel(torch.tensor([t], dtype=F64))[2][0, -1, -1])
        return exact(z, t) - 0.1 * u / sigma

    def spread(**options):
        gen = torch.Generator().manual_seed(3)
        z = process.sample_prior((n, 4), generator=gen, dtype=F64)
        x = exponential_integrator(process, noisy, z, nfe=10, generator=gen, **options)[0][:, 0]
        return float((x - 0.5).abs().flatten().quantile(0.999))

    assert spread() < 3.0
    if make is vp:
        # the failure this guards against, as measured (with the final denoising step of the time; without it
        # the 10-step band grid stays at 1.9 here)
        assert spread(grid="logsnr_band", order=3, denoise=True) > 3.0


def test_equivalent_sigma_is_ve_sigma_and_the_noise_to_signal_ratio():
    """σ̃ = e^{−λ/2}: for VE the kernel's own std, sqrt(σ(t)² − σ_min²) with σ(t) = σ_min (σ_max/σ_min)^t (score_sde's
    perturbation from t = 0); for every process σ_t / φ_t from the kernel (independent small-t covariance), of any
    shape."""
    t = torch.tensor([[0.01, 0.3], [0.7, 1.0]], dtype=F64)
    process = ve()
    sigma_min, sigma_max = process.schedule.sigma_min, process.schedule.sigma_max
    expected = (sigma_min**2 * ((sigma_max / sigma_min) ** (2 * t) - 1)).sqrt()
    torch.testing.assert_close(equivalent_sigma(process, t), expected, rtol=1e-6, atol=0)
    for make in (cld, hold):
        process = make()
        for time in (0.01, 0.5):
            var = float(accurate_kernel_cov(process, time)[0, 0])
            phi = float(process.mean_factor(torch.tensor([time], dtype=F64))[0, 0])
            got = float(equivalent_sigma(process, torch.tensor(time, dtype=F64)))
            assert got == pytest.approx(math.sqrt(var) / phi, rel=1e-6)


@pytest.mark.parametrize("make", [cld, hold])
def test_extrapolating_in_sigma_fixes_the_mode_width_at_20_nfe(make):
    """For CLD / HOLD the data block's noise σ̃ grows like t^{3/2} / t^{5/2}: x̂_0, smooth in σ̃ for Gaussian data, is
    far from a low-degree polynomial in t across the mode's transition (σ̃ ≈ its width). Exact scores of
    N(0, 0.1²), 20 NFE, the process's default otherwise: the std's relative error is several times smaller with
    extrapolate='sigma' than with 't' (measured +10 % / +12 % against +1.5 % / −3.7 %; docs/fast_sampling.md, session
    21), and 'sigma' still converges at 1000 NFE."""
    process, n = make(), 20_000
    errors = {
        (variable, nfe): std_error(process, n, nfe, variable)
        for variable, nfe in (("t", 20), ("sigma", 20), ("sigma", 1000))
    }
    assert errors[("t", 20)] > 0.06 and errors[("sigma", 20)] < 0.5 * errors[("t", 20)], errors
    assert errors[("sigma", 1000)] < 4 / math.sqrt(2 * n), errors


def std_error(process, n: int, nfe: int, extrapolate: str | None, std: float = 0.1) -> float:
    """|sample std / std − 1| of the data block: expint (the process's default, ``extrapolate`` set) from the exact
    prior draw with exact scores of N(0, std²)."""
    gen = torch.Generator().manual_seed(3)
    z = process.sample_prior((n, 1), generator=gen, dtype=F64)
    out, _ = exponential_integrator(process, score_fn(process, 0.0, std), z, nfe=nfe, generator=gen,
                                    extrapolate=extrapolate)  # fmt: skip
    return abs(float(out[:, 0, 0].std()) / std - 1)


def test_cld_default_extrapolates_in_log1p_sigma_and_narrows_the_mode():
    """CLD's default polynomial variable is log(1 + σ̃): at 20 NFE on N(0, 0.1²) with exact scores its std error is
    well below that of the same sampler in t (measured +4.3 % against +10.5 %, n = 400,000)."""
    from momentum_diffusion.samplers.expint_defaults import defaults_for

    assert defaults_for("cld")["extrapolate"] == "log1p_sigma"
    errors = {variable: std_error(cld(), 20_000, 20, variable) for variable in (None, "t")}
    assert errors["t"] > 0.06 and errors[None] < 0.7 * errors["t"], errors
