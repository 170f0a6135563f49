"""PF-ODE likelihood against closed forms derived here, from scratch, for Gaussian data.

For data N(0, C) and the exact score the probability-flow ODE is linear. In the eigenbasis of C every data
coordinate i (variance λ_i) carries an independent k-vector, with marginal covariance Σ_i(τ) solving the
Lyapunov ODE dΣ/dτ = AΣ + ΣAᵀ + Q from Σ_i(0) = diag(λ_i, Σ_0,aux), and the PF-ODE in τ is
dz/dτ = (A + ½ Q Σ⁻¹) z, so z_T = Ψ_i z_ε with dΨ/dτ = (A + ½ Q Σ⁻¹) Ψ, Ψ(τ_ε) = I. Change of variables:

    −log p_ε(z_ε) = −log N(z_T; 0, prior) − Σ_i log det Ψ_i,

and the bound subtracts the entropy of the aux blocks' law given x_0, ½ D log det(2πe S_aux) with S the
Lyapunov solution from diag(0, Σ_0,aux) at τ_ε. All of it is integrated below with scipy in float64 (nothing
from metrics/likelihood.py and nothing from the process but its definition: A, Q, τ(t), Σ_0,aux, prior, ε, T).
"""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from scipy.stats import ortho_group

from gaussian import rotated_score_fn
from momentum_diffusion.metrics.likelihood import nll_bits_per_dim, nll_bound
from momentum_diffusion.processes import cld, hold, ve, vp

DATA_VAR = 0.25
RTOL = 1e-6  # of the module's dopri5 in the per-sample comparisons


def lyapunov_rhs(A, Q):
    """dΣ/dτ = AΣ + ΣAᵀ + Q for a stack of k×k Σ, flattened."""
    k = A.shape[0]

    def rhs(_, y):
        S = y.reshape(-1, k, k)
        return (A @ S + S @ A.T + Q).ravel()

    return rhs


def covariances_at(A, Q, S0, tau):
    """Σ(τ) from Σ(0) = S0 (a stack of k×k) by integrating the Lyapunov ODE."""
    if tau == 0:
        return S0
    sol = solve_ivp(lyapunov_rhs(A, Q), (0.0, tau), S0.ravel(), method="DOP853", rtol=1e-12, atol=1e-14)
    return sol.y[:, -1].reshape(S0.shape)


def linear_flows(process, variances):
    """Ψ (D, k, k) and log det Ψ (D,) of data coordinates with the given variances: the PF-ODE maps z_ε ↦ z_T."""
    A, Q = process.sde.A.numpy(), process.sde.Q.numpy()
    k, D = A.shape[0], len(variances)
    S0 = np.repeat(process.initial_cov.numpy()[None], D, axis=0)
    S0[:, 0, 0] = variances
    tau_eps, tau_T = float(process.tau(process.t_min)), float(process.tau(process.t_max))
    S_eps = covariances_at(A, Q, S0, tau_eps)

    def rhs(_, y):
        S, Psi = y[: D * k * k].reshape(D, k, k), y[D * k * k :].reshape(D, k, k)
        dPsi = (A + 0.5 * Q @ np.linalg.inv(S)) @ Psi
        return np.concatenate([(A @ S + S @ A.T + Q).ravel(), dPsi.ravel()])

    y0 = np.concatenate([S_eps.ravel(), np.tile(np.eye(k), (D, 1, 1)).ravel()])
    sol = solve_ivp(rhs, (tau_eps, tau_T), y0, method="DOP853", rtol=1e-12, atol=1e-14)
    Psi = sol.y[D * k * k :, -1].reshape(D, k, k)
    sign, logdet = np.linalg.slogdet(Psi)
    assert (sign > 0).all()
    return Psi, logdet


def aux_entropy_given_x0(process, D):
    """H(aux_ε | x_0) for D coordinates (0 for order 1)."""
    if process.order == 1:
        return 0.0
    A, Q = process.sde.A.numpy(), process.sde.Q.numpy()
    S = covariances_at(A, Q, process.initial_cov.numpy(), float(process.tau(process.t_min)))
    return 0.5 * D * np.linalg.slogdet(2 * math.pi * math.e * S[1:, 1:])[1]


def closed_form_nll(process, z_eps, variances, flows=None):
    """−log p_ε(z_ε) − H(aux | x_0) per sample; z_eps (B, k, D) in the eigenbasis of the data covariance,
    ``variances`` (D,) its eigenvalues (``flows``: their :func:`linear_flows`, if already computed)."""
    z = z_eps.numpy()
    D = z.shape[-1]
    Psi, logdet = linear_flows(process, variances) if flows is None else flows
    zT = np.einsum("dij,bjd->bid", Psi, z)
    P = np.linalg.inv(process.prior_cov.numpy())
    out = 0.5 * np.einsum("bid,ij,bjd->b", zT, P, zT) - logdet.sum()
    out += 0.5 * D * np.linalg.slogdet(2 * math.pi * process.prior_cov.numpy())[1]
    return out - aux_entropy_given_x0(process, D)


def ode_error_bound(nfe, rtol, atol, scale):
    """What the module's dopri5 (torchdiffeq, error ratio per component: err / (atol + rtol·|y|)) allows the
    log-det component to drift: its per-step error target atol + rtol·|y| with |y| ≤ ``scale``, summed over the
    nfe/6 steps (the divergence integral is a quadrature along the path: its errors add, nothing amplifies
    them)."""
    return nfe / 6 * (atol + rtol * scale)


PROCESSES = {"vp": vp, "ve": lambda: ve(sigma_max=10.0), "cld": cld, "hold": hold}


@pytest.fixture
def data():
    # A seed different from nll_bound's: identical streams would correlate the data with the kernel noise.
    return torch.randn(256, 2, generator=torch.Generator().manual_seed(12345), dtype=torch.float64) * DATA_VAR**0.5


@pytest.mark.parametrize("name", list(PROCESSES))
def test_nll_equals_the_closed_form_of_the_linear_flow_and_its_mean_is_the_data_nll(name, data):
    process = PROCESSES[name]()
    D = data.shape[1]
    score = rotated_score_fn(process, np.eye(D), [DATA_VAR] * D)  # the exact score of N(0, DATA_VAR I)
    nll, nfe = nll_bound(process, score, data, seed=1, rtol=RTOL, atol=RTOL)
    # The z_ε draws of the estimator: the kernel at t_min given the data, first draws of the seed's stream.
    z_eps, _, _ = process.perturb(
        data, torch.full((data.shape[0],), process.t_min, dtype=torch.float64), torch.Generator().manual_seed(1)
    )
    expected = closed_form_nll(process, z_eps.flatten(2), [DATA_VAR] * D)
    # |y| ≤ the largest of |z| (≲ 5 prior std) and the log-det integral (≤ D·|tr A|·τ(T) + D·log-scale).
    scale = max(
        5 * float(process.prior_cov.diagonal().max()) ** 0.5,
        D * abs(float(process.sde.A.trace())) * float(process.tau(process.t_max)),
        10.0,
    )
    tol = ode_error_bound(nfe, RTOL, RTOL, scale)
    # A real constraint: the smallest effect under test is a 10 % error of the aux entropy, 0.07 nats for HOLD
    # at D = 2 (0.18 for CLD); the bound stays below 1 % of a nat (and the measured error well below it).
    assert tol < 0.01
    np.testing.assert_allclose(nll.numpy(), expected, rtol=0, atol=tol)
    # And the estimator means what it claims: for order 1 the exact NLL of z_ε ≈ x (kernel std ≤ 1e-2 at ε, so
    # per sample −log p moves by ≲ |x|·1e-2/σ²; on average the shifts cancel to first order); for order > 1 a
    # bound that is tight in expectation for Gaussian data (aux law exact): Monte Carlo noise only, per
    # sample the aux term has variance (#aux coordinates)/2 (a χ² with that many degrees, halved).
    true = 0.5 * (data**2).sum(1) / DATA_VAR + 0.5 * D * math.log(2 * math.pi * DATA_VAR)
    if process.order == 1:
        assert abs(float((nll - true).mean())) < 2e-3
    else:
        se = math.sqrt(D * (process.order - 1) / 2 / data.shape[0])
        assert abs(float((nll - true).mean())) < 5 * se


@pytest.mark.parametrize("name", ["vp", "cld"])
def test_hutchinson_branch_for_images_is_unbiased_with_the_variance_of_its_probes(name):
    """D = 32 > 16 (images): the divergence is Hutchinson's vᵀJv with one Rademacher probe per sample held
    for the whole ODE. For a linear score J_τ = −q U diag(P_i,kk(τ)) Uᵀ, so −log p is off by −(vᵀMv − tr M)
    with M = U diag(m) Uᵀ, m_i = log det Ψ_i − (τ_T − τ_ε) tr A: mean 0, variance 2 Σ_{i≠j} M_ij²."""
    process = PROCESSES[name]()
    n, shape = 256, (2, 4, 4)
    D = math.prod(shape)
    variances = np.geomspace(0.02, 1.0, D)  # correlated data (off-diagonal J) so that the probes matter
    U = ortho_group.rvs(D, random_state=np.random.default_rng(0))
    gen = torch.Generator().manual_seed(3)
    x = (
        (torch.randn(n, D, generator=gen, dtype=torch.float64) * torch.as_tensor(variances) ** 0.5)
        @ torch.as_tensor(U).T
    ).reshape(n, *shape)
    score = rotated_score_fn(process, U, variances)
    rtol = 1e-5
    nll, nfe = nll_bound(process, score, x, seed=4, rtol=rtol, atol=rtol)  # D > 16: Hutchinson by default

    def eigen_z_eps(x, seed):  # the estimator's z_ε draws (first of the seed's stream), in the eigenbasis
        t = torch.full((x.shape[0],), process.t_min, dtype=torch.float64)
        return process.perturb(x, t, torch.Generator().manual_seed(seed))[0].flatten(2) @ torch.as_tensor(U)

    flows = linear_flows(process, variances)
    expected = closed_form_nll(process, eigen_z_eps(x, 4), variances, flows)
    dtau = float(process.tau(process.t_max) - process.tau(process.t_min))
    M = (U * (flows[1] - dtau * float(process.sde.A.trace()))) @ U.T
    var = 2 * ((M**2).sum() - (np.diag(M) ** 2).sum())
    assert var > 1.0  # the probes do matter here
    diff = nll.numpy() - expected
    ode_tol = ode_error_bound(nfe, rtol, rtol, D * abs(float(process.sde.A.trace())) * dtau + 50)
    # Unbiased: the mean error within 5 standard errors of its mean (plus the ODE's own error).
    assert abs(diff.mean()) < 5 * math.sqrt(var / n) + ode_tol
    # Its variance is the probes': the sample variance of n draws has relative standard error ≈ sqrt(2/n)
    # for a near-Gaussian sum of many ±M_ij terms (0.09 at n = 256); 5 of them.
    assert abs(diff.var() / var - 1) < 5 * math.sqrt(2 / n)
    # Bits per dimension of 8-bit images (the path of every image evaluation): the same estimate in nats/dim,
    # to bits, + 7 for the 2/256 scaling; on a smaller batch (it only checks the summary), same tolerances.
    m = 32
    summary, _ = nll_bits_per_dim(process, score, x[:m], seed=5, rtol=rtol, atol=rtol)
    expected = closed_form_nll(process, eigen_z_eps(x[:m], 5), variances, flows)
    assert summary["nll_nats_per_dim"] == pytest.approx(expected.mean() / D, abs=(5 * math.sqrt(var / m) + ode_tol) / D)
    # y = 128 (x + 1) ∈ [0, 256): p_y = p_x / 128^D, so bits/dim of y = −log2 p_x / D + log2(256 / 2).
    assert summary["bpd"] == pytest.approx(summary["nll_nats_per_dim"] / math.log(2) + math.log2(256 / 2), rel=1e-12)
