"""Exponential-integrator sampler (samplers/expint.py): DDIM equivalence, exactness for point-mass data,
convergence orders against the exact PF-ODE solution for Gaussian data, mixture convergence, seeding, NFE."""

import dataclasses
import math

import pytest
import torch

from gaussian import ZeroBlocks, score_fn
from momentum_diffusion.exact.gmm import ExactScore, load_gmm
from momentum_diffusion.metrics.sliced_wasserstein import noise_floor, sliced_wasserstein2
from momentum_diffusion.objectives import NoisePredictionObjective
from momentum_diffusion.processes import apply_blocks, cld, hold, vp
from momentum_diffusion.processes.noise_factor import NoiseFactorError, accurate_kernel_cov
from momentum_diffusion.samplers.base import SamplerConfigError, time_grid
from momentum_diffusion.samplers.expint import GDDIMNoise, exponential_integrator
from momentum_diffusion.samplers.ode import probability_flow

F64 = torch.float64
MEAN, STD = 0.5, 0.3


def prior(process, n=16, dim=2, seed=0):
    return process.sample_prior((n, dim), generator=torch.Generator().manual_seed(seed), dtype=F64)


def data_column(process, t):
    return process.transition(0.0, t)[0].reshape(process.order, -1)[:, 0]


def exact_pf_solution(process, z_T, mean=MEAN, std=STD):
    """Gaussian data N(mean, std²): the PF-ODE is linear, z_t − μ_t = R_t R_T⁻¹ (z_T − μ_T), with R the gDDIM
    factor of the process whose initial law has data variance std² (R Rᵀ = Cov z_t, dR = b(A + ½QΣ⁻¹)R)."""
    initial = process.initial_cov.clone()
    initial[0, 0] = std**2
    R = GDDIMNoise(dataclasses.replace(process, initial_cov=initial)).factor(
        torch.tensor([process.t_min, process.t_max], dtype=F64)
    )
    ones = torch.ones_like(z_T[:, 0])

    def mu(t):
        return torch.einsum("i,b...->bi...", data_column(process, t) * mean, ones)

    return mu(process.t_min) + apply_blocks(R[0] @ torch.linalg.inv(R[1]), z_T - mu(process.t_max))


def test_vp_order1_deterministic_cholesky_is_ddim():
    process = vp()
    fn, z = score_fn(process, MEAN, STD), prior(process)
    out, used = exponential_integrator(
        process, fn, z.clone(), nfe=12, order=1, grid="quadratic", kt="cholesky", denoise=False
    )
    ts = time_grid(process, 12, "quadratic")
    for i in range(12):  # DDIM: x' = α'(x − σε)/α + σ'ε, ε = −σ s, with α, σ of the VP kernel
        (a, _, L), (a2, _, L2) = process.kernel(ts[i]), process.kernel(ts[i + 1])
        a, s_, a2, s2 = float(a[0, 0]), float(L[0, 0]), float(a2[0, 0]), float(L2[0, 0])
        eps = -s_ * fn(z, float(ts[i]))[:, None]
        z = a2 * (z - s_ * eps) / a + s2 * eps
    assert used == 12
    torch.testing.assert_close(out, z, rtol=1e-7, atol=1e-9)


def test_gddim_factor_matches_kernel_and_vp_choices_coincide():
    process = cld()
    g = GDDIMNoise(process)
    ts = torch.tensor([1e-3, 0.05, 0.3, 1.0], dtype=F64)
    R = g.factor(ts)
    torch.testing.assert_close(R @ R.mT, process.kernel(ts)[1], rtol=1e-7, atol=1e-12)
    small = accurate_kernel_cov(process, process.t_min)
    torch.testing.assert_close(g.factor(process.t_min)[0] @ g.factor(process.t_min)[0].T, small, rtol=1e-8, atol=0)
    p = vp(t_min=1e-3)  # order 1: R = σ_t, so gDDIM's ε is DDIM's
    fn, z = score_fn(p, MEAN, STD), prior(p)
    a, _ = exponential_integrator(p, fn, z.clone(), nfe=10, order=2, kt="gddim", grid="quadratic")
    b, _ = exponential_integrator(p, fn, z.clone(), nfe=10, order=2, kt="cholesky", grid="quadratic")
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("make", [cld, hold])
def test_gddim_order1_is_exact_for_point_mass_data(make):
    """gDDIM Prop.: with K = R, ε is constant along PF-ODE paths of a point mass, so one step is exact."""
    process = make(t_min=1e-3)
    z = prior(process)
    exact = exact_pf_solution(process, z, MEAN, 0.0)
    for kt, tol in (("gddim", 1e-8), ("cholesky", None)):
        out, _ = exponential_integrator(
            process, score_fn(process, MEAN, 0.0), z.clone(), nfe=3, order=1, kt=kt, grid="quadratic", denoise=False
        )
        err = float((out - exact).abs().max())
        assert (err < tol) if tol else not err < 1e-3, (kt, err)


def test_exact_reference_matches_dopri5():
    process = vp(t_min=1e-3)
    z = prior(process, n=8)
    ref, _ = probability_flow(process, score_fn(process, MEAN, STD), z.clone(), rtol=1e-11, atol=1e-12, denoise=False)
    torch.testing.assert_close(exact_pf_solution(process, z), ref, rtol=1e-7, atol=1e-8)


def slopes(process, kt, steps, orders=(1, 2, 3)):
    fn, z = score_fn(process, MEAN, STD), prior(process)
    exact = exact_pf_solution(process, z)
    out = {}
    for order in orders:
        errs = []
        for n in steps:
            sample, _ = exponential_integrator(
                process, fn, z.clone(), nfe=n, order=order, kt=kt, grid="quadratic", denoise=False
            )
            errs.append(float((sample - exact).abs().max()))
        x = torch.tensor([math.log(n) for n in steps], dtype=F64)
        y = torch.tensor([math.log(e) for e in errs], dtype=F64)
        out[order] = float(-((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
    return out


@pytest.mark.parametrize(
    "make, t_min, kt, steps, slack",
    [
        (vp, 1e-3, "cholesky", (10, 20, 40), 0.45),
        (cld, 0.05, "gddim", (24, 48, 96), 0.45),
        pytest.param(hold, 0.05, "gddim", (32, 64, 128), 0.45, marks=pytest.mark.slow),
    ],
)
def test_convergence_orders(make, t_min, kt, steps, slack):
    """Deterministic error vs the exact PF-ODE solution falls like n^−order (log–log slope fit)."""
    found = slopes(make(t_min=t_min), kt, steps)
    for order, slope in found.items():
        assert slope > order - slack, found


@pytest.mark.slow
def test_mixture_convergence_deterministic_and_stochastic():
    gmm = load_gmm("ring8_2d")
    process = cld()
    score = ExactScore(process, gmm)
    n = 2000
    floor = noise_floor(gmm.sample, n, seed=0)
    data = gmm.sample(n, torch.Generator().manual_seed(1))
    results = {}
    for name, options in {
        "ode": dict(order=2, kt="gddim", grid="quadratic", nfe=50),
        "sde": dict(order=1, kt="gddim", noise=1.0, grid="quadratic", nfe=200),
    }.items():
        gen = torch.Generator().manual_seed(0)
        z = process.sample_prior((n, gmm.dim), generator=gen)
        out, used = exponential_integrator(process, score, z, generator=gen, **options)
        assert used == options["nfe"]
        results[name] = sliced_wasserstein2(process.data_block(out), data)
    assert all(v < 2.5 * floor for v in results.values()), (results, floor)


def test_same_seed_same_samples_and_nfe_accounting():
    process = hold(t_min=1e-3)
    fn = score_fn(process, MEAN, STD)
    runs = []
    for _ in range(2):
        gen = torch.Generator().manual_seed(3)
        z = process.sample_prior((8, 2), generator=gen)
        runs.append(
            exponential_integrator(
                process, fn, z, nfe=12, generator=gen, noise=1.0, order=2, kt="gddim", grid="uniform"
            )
        )
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=0, atol=0)
    assert runs[0][1] == 12 and runs[0][0].dtype == torch.float32
    _, used = exponential_integrator(process, fn, prior(process), nfe=7, denoise=False, grid="uniform")
    assert used == 7


@pytest.mark.parametrize("options", [dict(order=4), dict(noise=1.5), dict(kt="lu"), dict(extrapolate="x"), dict(nfe=1)])
def test_bad_options_are_config_errors(options):
    process = cld()
    with pytest.raises((SamplerConfigError, NoiseFactorError)):  # kt: the one NoiseFactor validation
        exponential_integrator(process, score_fn(process), prior(process), **{"nfe": 10, **options})


@pytest.mark.parametrize("kt", ["gddim", "cholesky"])
@pytest.mark.parametrize("make", [vp, cld, hold])
def test_network_trained_with_the_same_kt_gives_eps_directly(make, kt):
    """A ScoreModel trained with K_t = kt hands expint its ε̂ (one score call: the final denoising step);
    hiding the model behind a plain score function takes the score route. Both must give the same samples."""
    process = make()
    blocks = process.order if kt == "gddim" else 1
    model = NoisePredictionObjective(mixed_score=True, data_std=STD, kt=kt).score_model(
        ZeroBlocks(process.order, blocks), process
    )
    calls, score = [], model.score
    model.score = lambda z, t: (calls.append(t), score(z, t))[1]
    options = dict(nfe=16, order=2, kt=kt, grid="quadratic")
    direct, used = exponential_integrator(process, model, prior(process), **options)
    assert used == 16 and len(calls) == 1
    via_score, used = exponential_integrator(process, lambda z, t: score(z, t), prior(process), **options)
    assert used == 16
    torch.testing.assert_close(direct, via_score, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("noise", [0.5, 1.0])
@pytest.mark.parametrize("make", [vp, cld, hold])
def test_stochastic_steps_are_exact_in_law_for_point_mass_data(make, noise):
    """λ > 0 steps extrapolate x̂_0, which is constant for point-mass data: from the exact marginal at t_max,
    three large steps must land on the exact marginal N(φ_t m, Σ_t) at t_end (mean and covariance within
    Monte Carlo error; a wrong Ψ, V or C would move them by far more)."""
    process = dataclasses.replace(make(), t_min=0.1)  # stop where the marginal is well conditioned
    n, k = 40_000, process.order
    gen = torch.Generator().manual_seed(5)
    Phi, cov, chol = process.kernel(torch.tensor([process.t_max, process.t_min], dtype=F64))
    z_T = Phi[0][:, 0] * MEAN + torch.randn(n, k, dtype=F64, generator=gen) @ chol[0].T
    out, used = exponential_integrator(
        process,
        score_fn(process, MEAN, 0.0),
        z_T[:, :, None],
        nfe=3,
        order=2,
        noise=noise,
        kt="gddim",
        grid="quadratic",
        denoise=False,
        generator=gen,
    )
    assert used == 3
    out = out[:, :, 0]
    mean, target_cov = Phi[1][:, 0] * MEAN, cov[1]
    se = (target_cov.diagonal() / n).sqrt()
    assert ((out.mean(0) - mean).abs() < 5 * se).all(), (out.mean(0), mean)
    sample_cov = torch.cov(out.T)
    scale = torch.outer(target_cov.diagonal().sqrt(), target_cov.diagonal().sqrt())
    assert ((sample_cov - target_cov).abs() / scale < 5 * math.sqrt(2 / n)).all(), (sample_cov, target_cov)
