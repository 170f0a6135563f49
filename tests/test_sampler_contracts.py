"""Sampler contracts (DESIGN.md §3) with the exact score of Gaussian data: NFE accounting, seeds and purity,
configuration errors before any score call, time grids. Convergence and orders: test_samplers.py."""

from __future__ import annotations

import pytest
import torch

from gaussian import score_fn
from momentum_diffusion.processes import cld, critically_damped_chain, hold, ve, vp
from momentum_diffusion.samplers import (
    SamplerConfigError,
    adaptive_momentum,
    check_options,
    configure,
    euler_maruyama,
    exponential_integrator,
    lie_trotter,
    predictor_corrector,
    probability_flow,
    sscs,
    time_grid,
    valid_samplers,
)
from sampler_cases import (
    F64,
    FIXED_STEP,
    PROCESSES,
    SAMPLERS,
    STOCHASTIC,
    Counting,
    M,
    S,
    exact_start,
    run,
)

# ---------------------------------------------------------------------------------------------------------
# NFE accounting
# ---------------------------------------------------------------------------------------------------------

ACCOUNTING = {
    "em": (euler_maruyama, {}, 1),
    "pc1": (predictor_corrector, {"n_corrector": 1}, 2),
    "pc2": (predictor_corrector, {"n_corrector": 2}, 3),
    "ode_euler": (probability_flow, {"method": "euler"}, 1),
    "ode_heun": (probability_flow, {"method": "heun"}, 2),
    "sscs": (sscs, {}, 1),
    "lie_trotter": (lie_trotter, {}, 1),
}


@pytest.mark.parametrize("denoise", [True, False])
@pytest.mark.parametrize("budget", [3, 10, 11, 37])
@pytest.mark.parametrize("name", list(ACCOUNTING))
def test_nfe_used_is_actual_count_within_budget(name, budget, denoise):
    fn, opts, per_step = ACCOUNTING[name]
    process = cld()
    score = Counting(score_fn(process, M, S))
    z0 = process.sample_prior((8, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    steps = (budget - int(denoise)) // per_step
    if steps < 1:
        with pytest.raises(SamplerConfigError):
            fn(process, score, z0, nfe=budget, denoise=denoise, **opts)
        assert score.count == 0
        return
    _, used = fn(process, score, z0, nfe=budget, denoise=denoise, generator=torch.Generator(), **opts)
    assert used == score.count == steps * per_step + int(denoise)
    assert budget - per_step < used <= budget


@pytest.mark.parametrize("name", list(ACCOUNTING))
def test_denoise_costs_exactly_one_nfe(name):
    """Same number of steps with and without denoising: identical calls plus one final call at t_min."""
    fn, opts, per_step = ACCOUNTING[name]
    process = vp()
    z0 = process.sample_prior((8, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    runs = {}
    for denoise in (False, True):
        score = Counting(score_fn(process, M, S))
        _, used = fn(
            process,
            score,
            z0.clone(),
            nfe=6 * per_step + int(denoise),
            denoise=denoise,
            generator=torch.Generator().manual_seed(1),
            **opts,
        )
        runs[denoise] = (used, score.times)
    (used_f, times_f), (used_t, times_t) = runs[False], runs[True]
    assert used_t == used_f + 1
    assert times_t[:-1] == times_f
    assert times_t[-1] == pytest.approx(process.t_min, abs=1e-15)


def test_adaptive_ode_reports_its_nfe():
    process = hold()
    z0 = process.sample_prior((8, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    counts = {}
    for denoise in (False, True):
        score = Counting(score_fn(process, M, S))
        _, used = probability_flow(process, score, z0.clone(), method="dopri5", rtol=1e-4, atol=1e-4, denoise=denoise)
        assert used == score.count > 0
        counts[denoise] = used
    assert counts[True] == counts[False] + 1


# ---------------------------------------------------------------------------------------------------------
# Seeds, purity, configuration errors
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", STOCHASTIC)
@pytest.mark.parametrize("process_name", ["vp", "cld", "hold"])
def test_same_seed_same_samples_different_seed_different(name, process_name):
    process = PROCESSES[process_name]()
    z0 = process.sample_prior((16, 3), generator=torch.Generator().manual_seed(0), dtype=F64)
    out = {seed: run(name, process, z0, 10, torch.Generator().manual_seed(seed))[0] for seed in (1, 1, 2)}
    again = run(name, process, z0, 10, torch.Generator().manual_seed(1))[0]
    assert torch.equal(out[1], again)
    assert not torch.allclose(out[1], out[2])


@pytest.mark.parametrize("name", ["ode_dopri5", "ode_euler", "ode_heun"])
def test_ode_samplers_deterministic_given_prior(name):
    process = cld()
    z0 = process.sample_prior((16, 3), generator=torch.Generator().manual_seed(0), dtype=F64)
    z1 = process.sample_prior((16, 3), generator=torch.Generator().manual_seed(1), dtype=F64)
    budget = 1e-4 if name == "ode_dopri5" else 10
    a = run(name, process, z0, budget, torch.Generator().manual_seed(1))[0]
    b = run(name, process, z0, budget, torch.Generator().manual_seed(2))[0]
    c = run(name, process, z1, budget, torch.Generator().manual_seed(1))[0]
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_samplers_do_not_modify_prior_z(name):
    process = cld()
    z0 = process.sample_prior((16, 3), generator=torch.Generator().manual_seed(0), dtype=F64)
    keep = z0.clone()
    fn, opts, _, _ = SAMPLERS[name]
    fn(process, score_fn(process, M, S), z0, nfe=10, generator=torch.Generator().manual_seed(1), **opts)
    assert torch.equal(z0, keep)


@pytest.mark.parametrize("fn", [sscs, lie_trotter])
def test_splitting_on_ve_raises_before_any_score_call(fn):
    process = ve()
    score = Counting(score_fn(process, M, S))
    z0 = process.sample_prior((4, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    with pytest.raises(SamplerConfigError, match="ve"):
        fn(process, score, z0, nfe=10)
    with pytest.raises(SamplerConfigError, match="ve"):
        configure(fn, nfe=10)(process, score, z0)
    assert score.count == 0
    assert "sscs" not in valid_samplers(process) and "lie_trotter" not in valid_samplers(process)
    assert {"sscs", "lie_trotter", "em", "pc", "ode"} <= set(valid_samplers(cld()))


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
@pytest.mark.parametrize("name", FIXED_STEP)
def test_invalid_nfe_raises_before_any_score_call(name, bad):
    fn, opts, _, _ = SAMPLERS[name]
    process = vp()
    score = Counting(score_fn(process, M, S))
    z0 = process.sample_prior((4, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    with pytest.raises(SamplerConfigError):
        fn(process, score, z0, nfe=bad, **opts)
    assert score.count == 0


@pytest.mark.parametrize(
    "fn, opts",
    [
        (probability_flow, {"method": "rk99"}),
        (euler_maruyama, {"grid": "cosine"}),
        (sscs, {"grid": "cosine"}),
        (predictor_corrector, {"predictor": "ancestral"}),
        (sscs, {"remainder": "rk4"}),
        (euler_maruyama, {"order": 2}),  # another sampler's option
    ],
)
def test_unknown_options_raise_before_any_score_call(fn, opts):
    process = vp()
    score = Counting(score_fn(process, M, S))
    z0 = process.sample_prior((4, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    with pytest.raises(SamplerConfigError):
        fn(process, score, z0, nfe=10, **opts)
    assert score.count == 0


def test_an_option_the_sampler_does_not_take_is_one_line_naming_it_and_the_options():
    """A typo or another sampler's option (else a TypeError inside the call): named, with the sampler's own
    options, at config time (``check_options``, which build_sampler runs) and at call time. Retired options pass
    the check: the decorator says what replaced them."""
    with pytest.raises(SamplerConfigError, match="^sampler 'em' has no option order; its options: nfe, denoise, grid$"):
        check_options(configure(euler_maruyama, nfe=5, order=2))
    check_options(configure(predictor_corrector, nfe=5, snr=0.1, generator=None))
    check_options(configure(exponential_integrator, noise=1.0))
    process = vp()
    z0 = process.sample_prior((4, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    with pytest.raises(SamplerConfigError, match="no option orderr, typo; its options: nfe, order"):
        exponential_integrator(process, score_fn(process, M, S), z0, nfe=10, orderr=2, typo=1)


def test_predictor_auto_is_reverse_diffusion_for_ve_and_euler_maruyama_otherwise():
    from momentum_diffusion.samplers.pc import resolve_predictor

    assert resolve_predictor(ve(), "auto") == "reverse_diffusion"
    assert [resolve_predictor(make(), "auto") for make in (vp, cld, hold)] == ["euler_maruyama"] * 3
    for make, explicit in ((ve, "reverse_diffusion"), (cld, "euler_maruyama")):
        process = make()
        z0 = process.sample_prior((4, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
        runs = [
            fn(process, score_fn(process, M, S), z0, nfe=9, generator=torch.Generator().manual_seed(1), predictor=p)[0]
            for fn in (predictor_corrector, adaptive_momentum)
            for p in ("auto", explicit)
        ]
        torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
        torch.testing.assert_close(runs[2], runs[3], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------
# Time grids
# ---------------------------------------------------------------------------------------------------------

GRID_PROCESSES = {**PROCESSES, "chain4": lambda: critically_damped_chain(order=4)}


@pytest.mark.parametrize("kind", ["uniform", "quadratic", "edm", "logsnr"])
@pytest.mark.parametrize("process_name", list(GRID_PROCESSES))
def test_time_grid_endpoints_and_monotone(process_name, kind):
    process = GRID_PROCESSES[process_name]()
    for n in [1, 2, 7, 50, 333]:
        ts = time_grid(process, n, kind)
        assert ts.shape == (n + 1,) and ts.dtype == F64
        assert ts[0].item() == process.t_max
        assert ts[-1].item() == pytest.approx(process.t_min, abs=1e-15)
        assert (ts[1:] < ts[:-1]).all(), (process_name, kind, n)


def test_a_retired_option_at_its_old_default_is_dropped_for_old_checkpoints():
    """Checkpoints store the sampler config they were trained with: lie_trotter's symmetric=false (the old
    default) still loads, and runs as before; symmetric=true is the error above."""
    process = cld()
    z0 = exact_start(process, 4, 2, torch.Generator().manual_seed(1))
    runs = [
        lie_trotter(
            process, score_fn(process, M, S), z0.clone(), nfe=5, generator=torch.Generator().manual_seed(2), **kw
        )[0]
        for kw in ({}, {"symmetric": False})
    ]
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("fn", [predictor_corrector, adaptive_momentum], ids=["pc", "ams"])
@pytest.mark.parametrize("process_name", ["vp", "cld"])
def test_noise_scale_multiplies_exactly_the_correctors_noise(fn, process_name):
    """GDSS's scale_eps: after the first corrector step z = z0 + ε g + s·sqrt(2ε) ξ with ε and ξ independent of s,
    so the state the predictor's score sees is linear in s (and s = 1 is the plain corrector)."""
    process = PROCESSES[process_name]()
    exact = score_fn(process, 0.5, 0.3)

    def second_state(scale):
        seen = []

        def recording(z, t):
            seen.append(z.clone())
            return exact(z, t)

        z0 = process.sample_prior((64, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        options = {} if scale is None else {"noise_scale": scale}
        fn(process, recording, z0, nfe=3, snr=0.2, denoise=False, generator=torch.Generator().manual_seed(1), **options)
        return seen[1]

    free, one, tempered = second_state(0.0), second_state(1.0), second_state(0.7)
    assert torch.equal(one, second_state(None))
    assert not torch.allclose(one, free)
    assert torch.allclose(tempered - free, 0.7 * (one - free), atol=1e-12)


@pytest.mark.parametrize("fn", [predictor_corrector, adaptive_momentum], ids=["pc", "ams"])
@pytest.mark.parametrize("bad", [-0.1, "0.7", True, float("nan")])
def test_noise_scale_must_be_a_non_negative_number(fn, bad):
    process = vp()
    with pytest.raises(SamplerConfigError, match="sampler.noise_scale must be a number >= 0"):
        fn(process, score_fn(process, 0.5, 0.3), process.sample_prior((4, 2)), nfe=5, noise_scale=bad)
