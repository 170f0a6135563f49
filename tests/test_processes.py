"""Mathematical tests of the linear phase-space core (DESIGN.md §1, §7).

Every assertion is a property that fails if the math is wrong: kernels against Monte Carlo of the forward
SDE (tolerances from standard errors plus an independently estimated discretisation bias), transition
covariances against an independent ODE integration of the Lyapunov differential equation, stationary laws
against the Lyapunov equation, the critical chain against its Jordan structure. (Schedules, the prior at
t_max, prior sampling, perturbation and the reverse linear part: test_process_schedules.py.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from helpers import HURWITZ, PROCESSES, sample_moments_with_se
from momentum_diffusion.processes import LinearSDE, cld, critically_damped_chain, hold, ve, vp
from momentum_diffusion.processes.hold import critical_chain_constants

F64 = torch.float64


# ---------------------------------------------------------------------------------------------------------
# Kernel vs Monte Carlo of the forward SDE
# ---------------------------------------------------------------------------------------------------------


def _psd_sqrt_np(M: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(M)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def _em_paths(process, x0: float, n_paths: int, n_steps: int, check: list[int], seed: int):
    """Euler–Maruyama in t of dz = b(t) A z dt + sqrt(b(t)) B dW (b at the left point), float64.

    Starts at z_0 = (x0, aux ~ N(0, initial_cov_aux)); returns {step index: (n_paths, k) states}.
    Written from the SDE only (A, Q, b); no kernel, matrix exponential or Lyapunov solve is used.
    (Process.__post_init__ guarantees Q = q E_kk, so B = sqrt(q) E_kk.)
    """
    k = process.order
    A, q = process.sde.A, process.noise_scale  # Q = q E_kk: noise enters the last block only
    gen = torch.Generator().manual_seed(seed)
    root0 = torch.as_tensor(_psd_sqrt_np(process.initial_cov.numpy()))
    z = torch.randn(n_paths, k, generator=gen, dtype=F64) @ root0.T
    z[:, 0] += x0
    h = process.t_max / n_steps
    b = process.b(torch.arange(n_steps, dtype=F64) * h).tolist()
    noise = torch.empty(n_paths, dtype=F64)
    out = {}
    for n in range(n_steps):
        z = torch.addmm(z, z, A.T, alpha=b[n] * h)
        z[:, -1].add_(noise.normal_(generator=gen), alpha=math.sqrt(b[n] * h * q))
        if n + 1 in check:
            out[n + 1] = z.clone()
    return out


def _em_moments(process, x0: float, n_steps: int, check: list[int]):
    """Exact mean and covariance of the Euler–Maruyama chain above (deterministic recursion)."""
    k = process.order
    A, Q = process.sde.A, process.sde.Q
    m = torch.zeros(k, dtype=F64)
    m[0] = x0
    C = process.initial_cov.clone()
    h = process.t_max / n_steps
    eye = torch.eye(k, dtype=F64)
    out = {}
    for n in range(n_steps):
        b = float(process.b(n * h))
        M = eye + b * h * A
        m, C = M @ m, M @ C @ M.T + b * h * Q
        if n + 1 in check:
            out[n + 1] = (m.clone(), C.clone())
    return out


@pytest.mark.parametrize("name", list(PROCESSES))
def test_kernel_matches_monte_carlo_of_forward_sde(name):
    """Kernel mean Φ z̄_0 and covariance Φ Σ_0 Φᵀ + Σ(τ) vs 20k Euler–Maruyama paths (2000 steps).

    Tolerance per entry: 5 Monte Carlo standard errors + the Euler–Maruyama bias, estimated without the
    kernel as 2·|moments(h) − moments(h/2)| of the exact EM recursion (first-order weak error)."""
    process = PROCESSES[name]()
    x0, n_paths, n_steps = 0.8, 20_000, 2000
    check = [n_steps // 10, n_steps // 2, n_steps]  # t = 0.1, 0.5, 1.0 (= t_max)
    paths = _em_paths(process, x0, n_paths, n_steps, check, seed=1234)
    em_h = _em_moments(process, x0, n_steps, check)
    em_h2 = _em_moments(process, x0, 2 * n_steps, [2 * c for c in check])
    for step in check:
        t = torch.tensor(step * process.t_max / n_steps, dtype=F64)
        Phi, cov, _ = process.kernel(t)
        mean_exact = Phi[:, 0] * x0
        mean, cov_mc, se_mean, se_cov = sample_moments_with_se(paths[step])
        (m_h, C_h), (m_h2, C_h2) = em_h[step], em_h2[2 * step]
        bias_m, bias_C = 2 * (m_h - m_h2).abs(), 2 * (C_h - C_h2).abs()
        assert ((mean - mean_exact).abs() <= 5 * se_mean + bias_m + 1e-12).all(), (
            name,
            float(t),
            mean,
            mean_exact,
        )
        assert ((cov_mc - cov).abs() <= 5 * se_cov + bias_C + 1e-12).all(), (name, float(t), cov_mc, cov)
        # the bias allowance may at most double the statistical tolerance, else the test is toothless
        assert (bias_C <= 5 * se_cov + 1e-9).all(), (name, bias_C, se_cov)


@pytest.mark.parametrize("name", list(PROCESSES))
def test_kernel_matches_extrapolated_euler_maruyama_moments(name):
    """Noise-free companion of the Monte Carlo test: the exact moments of the EM chain (a recursion that
    uses only A, Q, b) converge at first order in h, so the Richardson values R(h) = 2·EM(h/2) − EM(h)
    have O(h²) error; the kernel must agree with R(h/2) within |R(h) − R(h/2)| (the a-posteriori size of
    that O(h²) error)."""
    process = PROCESSES[name]()
    x0, n = 0.8, 1000
    ks = {f: [f * n // 10, f * n // 2, f * n] for f in (1, 2, 4)}
    em = {f: _em_moments(process, x0, f * n, ks[f]) for f in (1, 2, 4)}
    for j in range(3):
        (m1, C1), (m2, C2), (m4, C4) = (em[f][ks[f][j]] for f in (1, 2, 4))
        R1m, R2m, R1C, R2C = 2 * m2 - m1, 2 * m4 - m2, 2 * C2 - C1, 2 * C4 - C2
        t = torch.tensor(ks[1][j] * process.t_max / n, dtype=F64)
        Phi, cov, _ = process.kernel(t)
        scale = max(1.0, cov.abs().max().item())
        assert ((R2m - Phi[:, 0] * x0).abs() <= (R1m - R2m).abs() + 1e-12).all(), (name, float(t))
        assert ((R2C - cov).abs() <= (R1C - R2C).abs() + 1e-12 * scale).all(), (name, float(t), R2C, cov)
        assert ((R2C - cov).abs() <= 1e-3 * scale).all()  # and the comparison is tight


# ---------------------------------------------------------------------------------------------------------
# Transition covariance vs the Lyapunov ODE
# ---------------------------------------------------------------------------------------------------------

TAUS = [0.05, 0.5, 2.0, 5.0, 10.0, 15.0, 20.0]


def _lyapunov_ode(A: torch.Tensor, Q: torch.Tensor, taus: list[float]):
    """Φ(τ), Σ(τ) from dΦ/dτ = AΦ, dΣ/dτ = AΣ + ΣAᵀ + Q (Φ(0) = I, Σ(0) = 0); DOP853, rtol = atol = 1e-12."""
    A, Q = A.numpy(), Q.numpy()
    k = A.shape[0]

    def f(_, y):
        Phi, S = y[: k * k].reshape(k, k), y[k * k :].reshape(k, k)
        return np.concatenate([(A @ Phi).ravel(), (A @ S + S @ A.T + Q).ravel()])

    y0 = np.concatenate([np.eye(k).ravel(), np.zeros(k * k)])
    Phis, Sigmas = [], []
    for tau in taus:  # integrate to each τ separately: no dense-output interpolation error
        sol = solve_ivp(f, (0.0, tau), y0, method="DOP853", rtol=1e-12, atol=1e-12)
        assert sol.success
        Phis.append(sol.y[: k * k, -1].reshape(k, k))
        Sigmas.append(sol.y[k * k :, -1].reshape(k, k))
    return torch.as_tensor(np.array(Phis)), torch.as_tensor(np.array(Sigmas))


@pytest.mark.parametrize("name", ["vp", "cld", "hold", "chain4", "ve"])
def test_transition_matches_lyapunov_ode(name):
    sde = PROCESSES[name]().sde
    Phi_ref, Sigma_ref = _lyapunov_ode(sde.A, sde.Q, TAUS)
    Phi, Sigma = sde.transition(torch.tensor(TAUS, dtype=F64))
    assert Phi.dtype == F64 and Sigma.dtype == F64
    assert (Phi - Phi_ref).abs().max() < 1e-8
    assert (Sigma - Sigma_ref).abs().max() < 1e-8


def test_transition_van_loan_branch_matches_ode():
    """A neither Hurwitz nor zero (nilpotent transport): the Van Loan branch, checked against the ODE."""
    sde = LinearSDE([[0.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]])
    assert sde.stationary_cov is None
    taus = [0.1, 1.0, 3.0]
    Phi_ref, Sigma_ref = _lyapunov_ode(sde.A, sde.Q, taus)
    Phi, Sigma = sde.transition(torch.tensor(taus, dtype=F64))
    assert (Phi - Phi_ref).abs().max() < 1e-9
    # closed form: Σ(τ) = [[τ³/3, τ²/2], [τ²/2, τ]]
    t = torch.tensor(taus, dtype=F64)
    closed = torch.stack([torch.stack([t**3 / 3, t**2 / 2], -1), torch.stack([t**2 / 2, t], -1)], -2)
    assert (Sigma - closed).abs().max() < 1e-9
    assert (Sigma - Sigma_ref).abs().max() < 1e-9


@pytest.mark.parametrize("name, tau, min_error", [("hold", 20.0, 1e-8), ("chain4", 15.0, 1e-3), ("chain4", 20.0, 1e-3)])
def test_plain_van_loan_fails_where_stationary_form_holds(name, tau, min_error):
    """Why the core uses Σ∞ − ΦΣ∞Φᵀ: the Van Loan block exponential contains exp(−τA) ~ e^{τ|Re λ|}
    (λ = −√3 for HOLD, −√5 for the order-4 chain), so float64 cancellation leaves an error growing like
    e^{τ|Re λ|}·eps; at these τ it exceeds the 1e-8 accuracy the stationary form achieves."""
    sde = PROCESSES[name]().sde
    A, Q, k = sde.A, sde.Q, sde.order
    _, Sigma_ref = _lyapunov_ode(A, Q, [tau])
    block = torch.cat([torch.cat([-A, Q], 1), torch.cat([torch.zeros_like(A), A.T], 1)], 0)
    F = torch.linalg.matrix_exp(tau * block)
    van_loan = F[k:, k:].T @ F[:k, k:]
    assert (van_loan - Sigma_ref[0]).abs().max() > min_error
    assert (sde.transition(torch.tensor(tau, dtype=F64))[1] - Sigma_ref[0]).abs().max() < 1e-8


# ---------------------------------------------------------------------------------------------------------
# Stationary laws
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", HURWITZ)
def test_stationary_cov_solves_lyapunov(name):
    sde = PROCESSES[name]().sde
    S = sde.stationary_cov
    assert torch.allclose(S, S.T)
    assert torch.linalg.eigvalsh(S).min() > 0
    assert (sde.A @ S + S @ sde.A.T + sde.Q).abs().max() < 1e-12


def test_ve_has_no_stationary_law():
    assert ve().sde.stationary_cov is None
    assert not ve().sde.is_hurwitz


@pytest.mark.parametrize("inv_l", [1.0, 0.5])
@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_chain_stationary_cov_is_inverse_l_identity(order, inv_l):
    """A + Aᵀ = −2ξ E_nn and Q = 2ξ/L E_nn ⇒ Σ∞ = L⁻¹ I (HOLD paper; the prior on every block)."""
    p = hold(inv_l=inv_l) if order == 3 else critically_damped_chain(order=order, inv_l=inv_l)
    eye = torch.eye(order, dtype=F64)
    assert (p.sde.stationary_cov - inv_l * eye).abs().max() < 1e-12
    assert torch.equal(p.prior_cov, inv_l * eye)


@pytest.mark.parametrize("m_inv, gamma", [(4.0, None), (1.0, 2.0), (4.0, 0.5)])
def test_cld_stationary_cov_is_diag_one_mass(m_inv, gamma):
    p = cld(m_inv=m_inv, gamma_damping=gamma)
    target = torch.diag(torch.tensor([1.0, 1.0 / m_inv], dtype=F64))
    assert (p.sde.stationary_cov - target).abs().max() < 1e-12
    assert (p.prior_cov - target).abs().max() < 1e-15


def test_vp_stationary_cov_is_one():
    assert abs(float(vp().sde.stationary_cov) - 1.0) < 1e-14


# ---------------------------------------------------------------------------------------------------------
# Critically damped chain
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_critical_chain_has_single_eigenvalue_of_multiplicity_n(order):
    """(A + rI)^n = 0 with r = sqrt(2n − 3), (A + rI)^{n−1} ≠ 0 (one Jordan block), trace = −n r, and the
    computed eigenvalues cluster at −r (a size-n Jordan block spreads them by ~(eps·‖N‖^n)^{1/n})."""
    A = critically_damped_chain(order=order).sde.A
    r = math.sqrt(2 * order - 3)
    N = A + r * torch.eye(order, dtype=F64)
    scale = torch.linalg.matrix_norm(N, ord=2).item()
    assert torch.linalg.matrix_power(N, order).abs().max() < 1e-12 * scale**order
    assert torch.linalg.matrix_power(N, order - 1).abs().max() > 1e-3 * scale ** (order - 1)
    assert abs(torch.trace(A).item() + order * r) < 1e-12
    spread = 20 * (1e-15 * scale**order) ** (1 / order)
    lam = torch.linalg.eigvals(A)
    assert (lam + r).abs().max() < spread


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_critical_chain_transition_matches_jordan_closed_form(order):
    """exp(τA) = e^{−rτ} Σ_{j<n} (τN)^j / j! because N = A + rI is nilpotent of index n."""
    sde = critically_damped_chain(order=order).sde
    r = math.sqrt(2 * order - 3)
    N = sde.A + r * torch.eye(order, dtype=F64)
    for tau in [0.3, 2.0, 8.0]:
        closed = sum(torch.linalg.matrix_power(tau * N, j) / math.factorial(j) for j in range(order))
        closed = math.exp(-r * tau) * closed
        Phi, _ = sde.transition(torch.tensor(tau, dtype=F64))
        assert (Phi - closed).abs().max() < 1e-12


def test_hold_is_the_order_3_critical_chain():
    gammas, xi = critical_chain_constants(3)
    assert np.allclose(gammas, [1.0, 2.0 * math.sqrt(2.0)], rtol=0, atol=1e-14)
    assert abs(xi - 3.0 * math.sqrt(3.0)) < 1e-14
    assert (hold().sde.A - critically_damped_chain(order=3).sde.A).abs().max() < 1e-14
    assert torch.equal(hold().sde.Q, critically_damped_chain(order=3).sde.Q)


def test_order_2_chain_is_critical_cld_with_unit_mass():
    chain, c = critically_damped_chain(order=2), cld(m_inv=1.0, gamma_damping=2.0)
    assert (chain.sde.A - c.sde.A).abs().max() < 1e-14
    assert (chain.sde.Q - c.sde.Q).abs().max() < 1e-14
    assert (chain.sde.stationary_cov - c.sde.stationary_cov).abs().max() < 1e-12
    assert torch.allclose(chain.prior_cov, c.prior_cov)


def test_cld_default_is_critically_damped():
    """Γ² = 4M: A has the double eigenvalue −Γ M⁻¹ / 2 = −2 (M⁻¹ = 4, Γ = 1)."""
    A = cld().sde.A
    N = A + 2.0 * torch.eye(2, dtype=F64)
    assert (N @ N).abs().max() < 1e-14
    assert N.abs().max() > 0.1
