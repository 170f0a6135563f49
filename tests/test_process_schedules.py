"""Tests of the linear phase-space core's schedules and sampling entry points (DESIGN.md §1, §7): τ is the
integral of b, the prior is reached at t_max (closed form for the critical chain), VE's kernel variance, the
time-reversed linear part, prior sampling, perturbation Φ z_0 + L ε and the reverse drift.
(test_processes.py: kernels, transitions and stationary laws.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from helpers import HURWITZ, PROCESSES, sample_moments_with_se
from momentum_diffusion.processes import apply_blocks, ve

F64 = torch.float64


# ---------------------------------------------------------------------------------------------------------
# Schedules, prior at T, VE
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PROCESSES))
def test_tau_is_integral_of_b(name):
    p = PROCESSES[name]()
    for t in [0.0, 0.1, 0.5, 1.0]:
        integral, _ = quad(lambda s: float(p.b(s)), 0.0, t, epsabs=0, epsrel=1e-12)
        assert abs(float(p.tau(t)) - integral) <= 1e-10 * max(1.0, abs(integral))


@pytest.mark.parametrize("name", ["vp", "cld", "hold"])
def test_prior_reached_at_t_max(name):
    """Kernel at T for x0 on the corners {−1, 1}^d vs N(0, prior_cov).

    HOLD: within 1e-3 (design requirement in hold.py: β = 8, τ(T) = 8, rate √3 ⇒ e^{−8√3}·poly(8) ≈ 1e-4).
    VP: the mean is e^{−τ(T)/2} x0 with τ(T) = β_min + (β_max − β_min)/2 = 10.05, i.e. 6.6e-3; covariance
    error e^{−τ(T)} ≈ 4e-5. CLD: Φ(τ) = e^{−2τ}(I + τN) (critical, N² = 0) at τ = 4: ≤ 9 e^{−8} ≈ 3e-3.
    Both are < 1e-2, and the measured errors must equal these closed forms."""
    p = PROCESSES[name]()
    d = 3
    corners = torch.tensor(list(np.ndindex(*(2,) * d)), dtype=F64) * 2 - 1  # (8, 3)
    Phi, cov, _ = p.kernel(torch.tensor(p.t_max, dtype=F64))
    means = apply_blocks(Phi, p.embed_data(corners))
    mean_err = means.abs().max().item()
    cov_err = (cov - p.prior_cov).abs().max().item()
    tol = 1e-3 if name == "hold" else 1e-2
    assert mean_err < tol and cov_err < tol, (mean_err, cov_err)
    tau_T = float(p.tau(p.t_max))
    if name == "vp":
        assert abs(mean_err - math.exp(-tau_T / 2)) < 1e-14
        assert abs(cov_err - math.exp(-tau_T)) < 1e-14
    if name == "cld":
        N = p.sde.A + 2.0 * torch.eye(2, dtype=F64)
        closed = math.exp(-2 * tau_T) * (torch.eye(2, dtype=F64) + tau_T * N)
        assert abs(mean_err - closed[:, 0].abs().max().item()) < 1e-14


def test_ve_kernel_variance_is_sigma_squared_minus_sigma_min_squared():
    p = ve(sigma_min=0.01, sigma_max=50.0)
    t = torch.tensor([1e-5, 0.01, 0.3, 0.77, 1.0], dtype=F64)
    sigma = 0.01 * (50.0 / 0.01) ** t
    Phi, cov, _ = p.kernel(t)
    assert torch.equal(Phi, torch.ones_like(Phi))
    assert torch.allclose(cov[:, 0, 0], sigma**2 - 0.01**2, rtol=1e-12, atol=0)
    assert abs(float(p.prior_cov) - (50.0**2 - 0.01**2)) < 1e-9
    assert abs(float(p.prior_cov) - float(p.tau(p.t_max))) == 0


# ---------------------------------------------------------------------------------------------------------
# Reverse linear part, prior sampling, perturbation, reverse drift
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", HURWITZ)
def test_time_reversed_linear_part(name):
    """Reverse drift −A − QΣ∞⁻¹ (= Σ∞AᵀΣ∞⁻¹), noise Q, same stationary law, Hurwitz."""
    sde = PROCESSES[name]().sde
    rev = sde.time_reversed_linear_part()
    S = sde.stationary_cov
    assert (rev.A - (-sde.A - sde.Q @ torch.linalg.inv(S))).abs().max() < 1e-12
    assert torch.equal(rev.Q, sde.Q)
    assert rev.is_hurwitz
    assert (rev.stationary_cov - S).abs().max() < 1e-12


def test_time_reversed_linear_part_needs_stationary_law():
    with pytest.raises(ValueError):
        ve().sde.time_reversed_linear_part()


@pytest.mark.parametrize("name", list(PROCESSES))
def test_sample_prior_reproducible_and_distributed(name):
    p = PROCESSES[name]()
    draw = lambda seed: p.sample_prior((4000, 5), generator=torch.Generator().manual_seed(seed), dtype=F64)  # noqa: E731
    z = draw(0)
    assert z.shape == (4000, p.order, 5)
    assert torch.equal(z, draw(0))
    assert not torch.equal(z, draw(1))
    flat = z.permute(0, 2, 1).reshape(-1, p.order)
    mean, cov, se_mean, se_cov = sample_moments_with_se(flat)
    assert (mean.abs() <= 5 * se_mean).all()
    assert ((cov - p.prior_cov).abs() <= 5 * se_cov + 1e-6 * p.prior_cov.abs().max()).all()


@pytest.mark.parametrize("name", list(PROCESSES))
def test_perturb_is_phi_z0_plus_l_eps(name):
    p = PROCESSES[name]()
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(64, 2, 3, generator=gen, dtype=F64)
    t = p.t_min + (p.t_max - p.t_min) * torch.rand(64, generator=gen, dtype=F64)
    z, eps, chol = p.perturb(x0, t, torch.Generator().manual_seed(5))
    Phi, cov, L = p.kernel(t)
    assert torch.equal(chol, L)
    z0 = torch.zeros(64, p.order, 2, 3, dtype=F64)
    z0[:, 0] = x0
    expected = torch.einsum("bij,bj...->bi...", Phi, z0) + torch.einsum("bij,bj...->bi...", L, eps)
    assert torch.allclose(z, expected, rtol=1e-13, atol=1e-13)
    assert torch.allclose(L @ L.transpose(-1, -2), cov, atol=2 * p.kernel_jitter)
    assert (L.triu(1) == 0).all()
    z2, eps2, _ = p.perturb(x0, t, torch.Generator().manual_seed(5))
    assert torch.equal(z, z2) and torch.equal(eps, eps2)


@pytest.mark.parametrize("name", list(PROCESSES))
def test_reverse_drift_formula(name):
    """Reverse SDE b(Az − Qs) and PF-ODE b(Az − ½Qs) per unit τ (÷ b), s on the noised block only (DESIGN §1)."""
    p = PROCESSES[name]()
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(7, p.order, 4, generator=gen, dtype=F64)
    s = torch.randn(7, 4, generator=gen, dtype=F64)
    full = torch.zeros_like(z)
    full[:, -1] = s
    for pf, w in [(False, 1.0), (True, 0.5)]:
        expected = apply_blocks(p.sde.A, z) - w * apply_blocks(p.sde.Q, full)
        got = p.reverse_drift_per_tau(z, s, probability_flow=pf)
        assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)
