"""Samplers (DESIGN.md §3) driven by the exact score of Gaussian data N(0.7, 0.5² I) (tests/gaussian.py): convergence
and orders (contracts: test_sampler_contracts.py).

Two kinds of evidence:

* Monte Carlo: run each sampler on many samples and compare data-block mean/variance with the data's.
  Starts from the exact marginal at t_max (not the prior) so the only bias left is discretisation; the
  tolerance at the large budget is 5 standard errors plus the a-posteriori error estimate
  |m(N/2) − m(N)| (for a method of order p ≥ 1 in its asymptotic regime the error at N is at most
  1/(2^p − 1) ≤ 1 times that difference).
* Exact laws, noise-free: with a Gaussian (affine) score every step of EM, PC without corrector, the
  PF-ODE solvers and the splitting samplers is affine in z plus additive Gaussian noise. Running the
  sampler on a batch of probes (the mean of z_T, the mean plus each Cholesky column of Cov(z_T), and, for
  every noise draw j and component i, a row whose noise is e_i at draw j and zero elsewhere — done by
  replacing the module's ``noise_like``) gives the output mean and covariance in float64 exactly. Weak
  errors and convergence orders are then measured without sampling noise.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from gaussian import marginal, score_fn
from momentum_diffusion.processes import cld, hold, ve
from momentum_diffusion.samplers import (
    SamplerConfigError,
    lie_trotter,
)
from sampler_cases import (
    COMBOS,
    F64,
    PROCESSES,
    SAMPLERS,
    STOCHASTIC,
    M,
    S,
    exact_start,
    run,
    supported,
)


def data_stats(z: torch.Tensor):
    """Mean, variance of the data block and their standard errors (from the samples)."""
    x = z[:, 0].reshape(-1)
    n = x.numel()
    m, v = x.mean(), x.var()
    se_m = x.std() / math.sqrt(n)
    se_v = ((x - m) ** 2).std() / math.sqrt(n)
    return m.item(), v.item(), se_m.item(), se_v.item()


def w2(mean: float, var: float) -> float:
    """W2 between N(mean, var) and the data N(M, S²) in one dimension."""
    return math.sqrt((mean - M) ** 2 + (math.sqrt(max(var, 0.0)) - S) ** 2)


# ---------------------------------------------------------------------------------------------------------
# Exact output law of the linear samplers
# ---------------------------------------------------------------------------------------------------------


@functools.cache
def exact_law(name, process_name, nfe, denoise=False, start="marginal", data_std=S, **extra):
    """Output mean (k,) and covariance (k, k) of a sampler for Gaussian data N(M, data_std²), float64, exact
    (see module docstring). ``start``: 'marginal' (exact law at t_max) or 'prior' (the process prior)."""
    fn, opts, module, _ = SAMPLERS[name]
    opts = {**opts, **dict(extra), "denoise": denoise}
    process = PROCESSES_ALL[process_name]()
    k = process.order
    if start == "marginal":
        mu_T, cov_T = marginal(process, process.t_max, M, data_std)
    else:
        mu_T, cov_T = torch.zeros(k, dtype=F64), process.prior_cov
    score = score_fn(process, M, data_std)
    sizes = []

    def record(z, generator):
        sizes.append(z[0].numel())
        return torch.zeros_like(z)

    mp = pytest.MonkeyPatch()
    try:
        if module is not None:
            mp.setattr(module, "noise_like", record)
        fn(process, score, mu_T.reshape(1, k, 1).clone(), nfe=nfe, **opts)
        if name in STOCHASTIC and name != "pc":
            assert sizes, "the sampler drew no noise through noise_like: the probe method does not apply"
        offsets = np.concatenate([[1 + k], 1 + k + np.cumsum(sizes)]).astype(int)
        rows = int(offsets[-1])
        z0 = mu_T.reshape(1, k, 1).repeat(rows, 1, 1)
        z0[1 : 1 + k, :, 0] += torch.linalg.cholesky(cov_T).T  # row 1+i: mean + L[:, i]
        calls = iter(range(len(sizes)))

        def probe(z, generator):
            j = next(calls)
            noise = torch.zeros(z.shape[0], sizes[j], dtype=z.dtype)
            noise[torch.arange(sizes[j]) + int(offsets[j]), torch.arange(sizes[j])] = 1.0
            return noise.reshape(z.shape)

        if module is not None:
            mp.setattr(module, "noise_like", probe)
        out, _ = fn(process, score, z0, nfe=nfe, **opts)
    finally:
        mp.undo()
    out = out[:, :, 0]
    diff = out[1:] - out[0]
    return out[0], diff.T @ diff


PROCESSES_ALL = {**PROCESSES, "cld_stat": lambda: cld(init_velocity_scale=1.0)}


@pytest.mark.parametrize("name", ["em", "pc_no_corrector", "sscs", "lie_trotter"])
def test_exact_law_probe_matches_monte_carlo(name):
    """The probe construction agrees with plain sampling for every stochastic linear sampler, real noise draws
    and the final denoising step included (HOLD, 20k draws of the 3-block state, 5 SE on each mean and
    covariance entry). With it, the noise-free weak-error tests below speak for the sampled laws of the linear
    samplers (the deterministic ones, ODE Euler/Heun, are affine maps of z_T: their probe law is their law), so
    the default Monte Carlo convergence test runs only the samplers without an exact law."""
    sampler_name, extra = ("pc", {"snr": 0.0}) if name == "pc_no_corrector" else (name, {})
    nfe = 20 * SAMPLERS[sampler_name][3] + 1  # 20 steps and the denoising step
    process = hold()
    gen = torch.Generator().manual_seed(0)
    z, _ = run(sampler_name, process, exact_start(process, 2000, 10, gen), nfe, gen, denoise=True, **extra)
    mean, cov = exact_law(sampler_name, "hold", nfe, denoise=True, **extra)
    flat = z.permute(0, 2, 1).reshape(-1, 3)
    n = flat.shape[0]
    c = flat - flat.mean(0)
    se_mean = c.std(0) / math.sqrt(n)
    prod = c[:, :, None] * c[:, None, :]
    assert ((flat.mean(0) - mean).abs() <= 5 * se_mean).all()
    assert ((prod.sum(0) / (n - 1) - cov).abs() <= 5 * prod.std(0) / math.sqrt(n)).all()


# ---------------------------------------------------------------------------------------------------------
# Convergence to the data law (Monte Carlo)
# ---------------------------------------------------------------------------------------------------------

LARGE = {"em": 400, "pc": 800, "ode_euler": 400, "ode_heun": 400, "sscs": 400, "lie_trotter": 400}


def _check_convergence(name, process_name, budgets_small_half_large, n, d):
    process = PROCESSES[process_name]()
    stats = []
    for i, budget in enumerate(budgets_small_half_large):
        gen = torch.Generator().manual_seed(100 + i)
        z, _ = run(name, process, exact_start(process, n, d, gen), budget, gen)
        stats.append(data_stats(z))
    (m_s, v_s, _, _), (m_h, v_h, _, _), (m_l, v_l, se_m, se_v) = stats
    # large budget: within 5 SE + the a-posteriori error estimate
    assert abs(m_l - M) <= 5 * se_m + abs(m_h - m_l), (name, process_name, stats)
    assert abs(v_l - S**2) <= 5 * se_v + abs(v_h - v_l), (name, process_name, stats)
    # and better than the small budget (significantly, when the small budget's error is significant)
    se_w = math.sqrt(se_m**2 + (se_v / (2 * S)) ** 2)
    w_small, w_large = w2(m_s, v_s), w2(m_l, v_l)
    if w_small > 6 * se_w:
        assert w_large < w_small / 2, (name, process_name, w_small, w_large)
    else:
        assert w_large < w_small + 3 * se_w, (name, process_name, w_small, w_large)


@pytest.mark.parametrize("name, process_name", [(s, p) for s, p in COMBOS if s in ("pc", "ode_dopri5")])
def test_sampler_approaches_data_law(name, process_name):
    """The samplers without an exact law (PC's Langevin step depends on ‖ξ‖; dopri5 adapts its steps to the
    batch). The linear ones: exact-law weak errors + test_exact_law_probe_matches_monte_carlo (here under slow)."""
    if name == "ode_dopri5":
        budgets = (1e-2, 1e-5, 1e-6)
    else:
        budgets = (20, LARGE[name] // 2, LARGE[name])
    _check_convergence(name, process_name, budgets, n=800, d=10)


@pytest.mark.slow
@pytest.mark.parametrize("name, process_name", COMBOS)
def test_sampler_approaches_data_law_full(name, process_name):
    """Larger samples (40k) and budgets; the error must shrink along the whole budget ladder."""
    if name == "ode_dopri5":
        budgets = (1e-3, 1e-6, 1e-7)
    else:
        budgets = (50, 2 * LARGE[name], 4 * LARGE[name])
    _check_convergence(name, process_name, budgets, n=4000, d=10)


def test_pc_with_shrinking_snr_converges_where_constant_snr_keeps_its_bias():
    """score_sde's constant snr = 0.16 leaves the corrector's O(snr²) variance bias at any budget; with
    ``snr_steps`` the Langevin step shrinks as 1/steps beyond it and the bias goes with it."""
    process, n, d = ve(), 4000, 10
    variances = {}
    for snr_steps in (None, 25):
        gen = torch.Generator().manual_seed(5)
        z, _ = run("pc", process, exact_start(process, n, d, gen), 1000, gen, snr=0.16, snr_steps=snr_steps)
        _, variances[snr_steps], _, se_v = data_stats(z)
    bias_constant, bias_shrinking = variances[None] - S**2, variances[25] - S**2
    assert bias_constant > 4 * se_v  # the bias this option exists for is visible at this sample size
    assert abs(bias_shrinking) < 3 * se_v + 0.25 * bias_constant, (bias_constant, bias_shrinking, se_v)


# ---------------------------------------------------------------------------------------------------------
# Noise-free weak errors and orders (exact laws)
# ---------------------------------------------------------------------------------------------------------

LINEAR = ["em", "ode_euler", "ode_heun", "sscs", "lie_trotter", "pc_no_corrector"]


def _exact(name, process_name, steps, **kw):
    if name == "pc_no_corrector":
        return exact_law("pc", process_name, 2 * steps, snr=0.0, **kw)
    per_step = SAMPLERS[name][3]
    return exact_law(name, process_name, per_step * steps, **kw)


def _errors(name, process_name, steps, **kw):
    mean, cov = _exact(name, process_name, steps, **kw)
    mu0, cov0 = marginal(PROCESSES_ALL[process_name](), PROCESSES_ALL[process_name]().t_min, M, kw.get("data_std", S))
    return (mean - mu0)[0].item(), (cov - cov0)[0, 0].item()


def _slope(steps, errs):
    return np.polyfit(np.log(steps), np.log(np.abs(errs)), 1)[0]


@pytest.mark.parametrize("name", LINEAR)
@pytest.mark.parametrize("process_name", ["vp", "ve", "cld", "hold"])
def test_exact_law_weak_error_vanishes(name, process_name):
    """Integrating from the exact law at T to t_min (no denoising), the data-block mean and variance errors
    fall with the step count, and the error at the finest grid is within the a-posteriori estimate."""
    if not supported(name, process_name):
        pytest.skip("unsupported combination")
    steps = [50, 100, 200]
    errs = [_errors(name, process_name, n) for n in steps]
    for j in (0, 1):  # mean, variance
        e = [abs(x[j]) for x in errs]
        if max(e) < 1e-12:  # exact (e.g. the VE mean: A = 0 and the score term is unbiased)
            continue
        assert e[2] < e[0] / 2, (name, process_name, errs)
        assert e[2] <= 1.5 * abs(errs[1][j] - errs[2][j]) + 1e-10, (name, process_name, errs)


@pytest.mark.parametrize("process_name", ["cld", "hold"])
def test_lie_trotter_is_first_order_and_sscs_at_least(process_name):
    """Weak error of the data-block variance: log-log slope −1 for Lie–Trotter on CLD and HOLD.

    SSCS (Strang) is asserted to be at least first order only: its score remainder
    z_k += h b Q_kk (s + (Σ∞⁻¹z)_k) is an Euler step of an ODE whose Jacobian in z_k,
    b Q_kk((Σ∞⁻¹)_kk − (Σ_t⁻¹)_kk), is nonzero for data with s ≠ 1, so its local error is O(h²) and the
    global error O(h) for either composition (measured: the data-block variance errors of SSCS and
    Lie–Trotter agree to 3 digits for N ≥ 100 on both)."""
    steps = [100, 200, 400]
    lt = [_errors("lie_trotter", process_name, n)[1] for n in steps]
    st = [_errors("sscs", process_name, n)[1] for n in steps]
    assert -1.1 < _slope(steps, lt) < -0.9, lt
    assert _slope(steps, st) < -0.9, st


@pytest.mark.slow
@pytest.mark.parametrize("process_name", ["cld", "hold"])
def test_lie_trotter_first_order_long_ladder(process_name):
    steps = [100, 200, 400, 800]
    lt = [_errors("lie_trotter", process_name, n)[1] for n in steps]
    assert -1.05 < _slope(steps, lt) < -0.95, lt


def test_strang_is_second_order_when_the_remainder_is_a_forcing():
    """VP with unit-variance data (Σ_t = Σ∞ = 1 for all t): the score remainder no longer depends on z, it is
    a time-dependent forcing, so SSCS is a genuine Strang splitting with exact sub-flows (the forcing is
    integrated by the midpoint rule): the mean error falls like h², Lie–Trotter's (left-point rule) like h.
    The covariance is exact for both (the linear part preserves Σ∞)."""
    steps = [25, 50, 100, 200]
    st = [_errors("sscs", "vp", n, data_std=1.0) for n in steps]
    lt = [_errors("lie_trotter", "vp", n, data_std=1.0) for n in steps]
    assert -2.2 < _slope(steps, [e[0] for e in st]) < -1.8, st
    assert -1.1 < _slope(steps, [e[0] for e in lt]) < -0.9, lt
    assert max(abs(e[1]) for e in st + lt) < 1e-12


@pytest.mark.parametrize("process_name", ["cld", "hold"])
def test_strang_with_heun_remainder_is_second_order(process_name):
    """The first-order error of both compositions is the Euler step of the score remainder: with the remainder
    integrated by Heun (second order at frozen midpoint time) the Strang composition's data-block variance
    error falls like h² (measured: Lie–Trotter with a Heun remainder is also second order on this block)."""
    steps = [50, 100, 200]
    st = [_errors("sscs", process_name, 2 * n, remainder="heun")[1] for n in steps]  # 2 NFE per step
    assert _slope(steps, st) < -1.8, st


@pytest.mark.parametrize("process_name", ["cld", "hold"])
def test_strang_beats_lie_trotter_on_the_noised_block(process_name):
    """On the noised block (velocity / acceleration) the symmetric variant's variance error is smaller at
    every step count and falls faster than Lie–Trotter's (measured slopes ≈ −1.2…−3.9 vs −0.9…−1.1)."""
    process = PROCESSES_ALL[process_name]()
    _, cov0 = marginal(process, process.t_min, M, S)
    steps = [100, 200, 400]
    errors = {
        name: [abs((exact_law(name, process_name, n)[1] - cov0)[-1, -1].item()) for n in steps]
        for name in ("sscs", "lie_trotter")
    }
    assert all(a < b for a, b in zip(errors["sscs"], errors["lie_trotter"])), errors
    assert _slope(steps, errors["sscs"]) < _slope(steps, errors["lie_trotter"]) - 0.2, errors


def test_the_symmetric_splitting_is_sscs_only():
    process = cld()
    z0 = exact_start(process, 4, 2, torch.Generator().manual_seed(1))
    with pytest.raises(SamplerConfigError, match="sampler=sscs"):  # lie_trotter's retired symmetric=true
        lie_trotter(process, score_fn(process, M, S), z0, nfe=15, symmetric=True)


@pytest.mark.parametrize("nfe", [20, 30, 50])
def test_sscs_beats_em_for_cld_at_small_budgets(nfe):
    """W2 between the exact output law of the data block and the data, both samplers started from the CLD
    prior with the final denoising step (as used in practice)."""
    res = {}
    for name in ("sscs", "em"):
        mean, cov = exact_law(name, "cld", nfe, denoise=True, start="prior")
        res[name] = w2(mean[0].item(), cov[0, 0].item())
    assert res["sscs"] < res["em"], res
