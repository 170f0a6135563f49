"""Objectives (DSM / HSM / BCSM, DESIGN.md §2): their minimiser is the true score where it is known.

For Gaussian data N(0, s² I) the noised-block score of z_t is linear in z (tests/gaussian.py), so a network
ε̂ = w·z (k weights shared over coordinates) contains the minimiser, and the objective's loss at fixed t is
an exact quadratic in w. We minimise that quadratic in closed form (one Newton step from autograd's
gradient and Hessian of ``objective.loss`` itself) and compare the resulting score −ℓ_t ŵ·z with the exact
score, with a tolerance from the ordinary-least-squares covariance of ŵ.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import chi2
from torch import nn

from gaussian import ZeroBlocks, noised_score, score_row
from momentum_diffusion.objectives import BCSM, DSM, HSM, ObjectiveConfigError, ScoreModel
from momentum_diffusion.processes import cld, critically_damped_chain, hold, ve, vp
from momentum_diffusion.processes.noise_factor import NoiseFactor, NoiseFactorError

F64 = torch.float64
DATA_STD = 0.5

CASES = {
    "vp-dsm": (vp, DSM),
    "ve-dsm": (ve, DSM),
    "cld-hsm": (cld, HSM),
    "hold-bcsm": (hold, BCSM),
    "chain4-bcsm": (lambda: critically_damped_chain(order=4), BCSM),
}


class LinearEps(nn.Module):
    """ε̂(z) = Σ_i w_i z_i, with the ScoreModel's network signature net(z_flat (B, k·d), t) -> (B, d)."""

    def __init__(self, order: int, w=None):
        super().__init__()
        self.order = order
        self.w = nn.Parameter(torch.zeros(order, dtype=F64) if w is None else torch.as_tensor(w, dtype=F64))

    def forward(self, z_flat: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        z = z_flat.reshape(z_flat.shape[0], self.order, -1)
        return torch.einsum("i,bi...->b...", self.w, z)


def _data(n: int, d: int, seed: int) -> torch.Tensor:
    return DATA_STD * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _newton_minimiser(objective, process, model, x0, t, seed):
    """Exact minimiser of the (quadratic in w) loss; the same generator seed makes every call identical."""
    w = model.net.w
    with torch.no_grad():
        w.zero_()
    loss = objective.loss(model, process, x0, t=t, generator=torch.Generator().manual_seed(seed)).mean()
    (g,) = torch.autograd.grad(loss, w, create_graph=True)
    H = torch.stack([torch.autograd.grad(g[i], w, retain_graph=True)[0] for i in range(w.numel())])
    return -torch.linalg.solve(H.detach(), g.detach())


def _ols_check(process, x0, t, seed, w_hat, w_true):
    """Mahalanobis distance of ŵ from w_true under the OLS covariance σ²(ZᵀZ)⁻¹ (each (example, coordinate)
    pair is an independent observation: coordinates are i.i.d.); returns (D², chi² threshold)."""
    z, eps, _ = process.perturb(x0, t, torch.Generator().manual_seed(seed))
    Z = z.permute(0, 2, 1).reshape(-1, process.order)  # (n·d, k)
    y = eps[:, -1].reshape(-1)
    w_ls = torch.linalg.lstsq(Z, y.unsqueeze(1)).solution.squeeze(1)
    assert torch.allclose(w_hat, w_ls, rtol=1e-7, atol=1e-9), "the loss is not the stated quadratic ‖w·z − ε_k‖²"
    resid = y - Z @ w_ls
    cov_w = resid.var() * torch.linalg.inv(Z.T @ Z)
    diff = w_hat - w_true
    D2 = float(diff @ torch.linalg.solve(cov_w, diff))
    return D2, chi2.ppf(1 - 1e-6, process.order)


@pytest.mark.parametrize("t_frac", [0.1, 0.5])
@pytest.mark.parametrize("case", list(CASES))
def test_minimiser_is_true_score_for_gaussian_data(case, t_frac):
    make, Objective = CASES[case]
    process = make()
    objective = Objective(weighting="eps")
    objective.check_process(process)
    model = objective.score_model(LinearEps(process.order), process)
    n, d, seed = 4000, 8, 11
    x0 = _data(n, d, seed=1)
    t_val = process.t_min + t_frac * (process.t_max - process.t_min)
    t = torch.full((n,), t_val, dtype=F64)
    w_hat = _newton_minimiser(objective, process, model, x0, t, seed)
    # exact: the score is −c·z with c = row k of the marginal precision; the model's is −ℓ_t w·z
    c = score_row(process, t_val, DATA_STD)
    ell = float(process.score_scale(torch.tensor(t_val, dtype=F64)))
    w_true = c / ell
    D2, threshold = _ols_check(process, x0, t, seed, w_hat, w_true)
    assert D2 < threshold, (case, t_val, w_hat, w_true, D2)
    # the model's score is −ℓ_t ŵ·z (so ŵ ≈ w_true means score ≈ exact score), and the exact score itself
    # is the linear map −c·z used above (checked against the helper's direct evaluation)
    with torch.no_grad():
        model.net.w.copy_(w_hat)
        z = torch.randn(256, process.order, d, generator=torch.Generator().manual_seed(99), dtype=F64)
        assert torch.allclose(model.score(z, t_val), -ell * torch.einsum("i,bi...->b...", w_hat, z), rtol=1e-12)
        s_exact = noised_score(process, z, t_val, 0.0, DATA_STD)
        assert torch.allclose(s_exact, -torch.einsum("i,bi...->b...", c, z), rtol=1e-10, atol=1e-10)


class RecordingZero(ZeroBlocks):
    """The zero network, recording its input (B, k·d)."""

    def forward(self, z_flat: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.seen = z_flat
        return super().forward(z_flat, t)


@pytest.mark.parametrize("case", list(CASES))
def test_input_scaling_gives_the_network_unit_scale_input_at_every_t(case):
    """EDM's c_in per block: for data N(0, data_std²) every block of the network's input has std 1, from t_min
    (VE: σ ≈ 0) to t_max (VE: σ_max = 50); without it VE's input std is σ_max at t_max."""
    make, Objective = CASES[case]
    process = make()
    net = RecordingZero(process.order, 1)
    model = Objective(data_std=DATA_STD, input_scaling=True).score_model(net, process)
    n, d = 20000, 2
    x0 = _data(n, d, seed=5)
    for t_val in [process.t_min, 0.01, 0.3, process.t_max]:
        t = torch.full((n,), t_val, dtype=F64)
        z, _, _ = process.perturb(x0, t, torch.Generator().manual_seed(6))
        model.predict_noise(z, t)
        std = net.seen.reshape(n, process.order, d).std(dim=(0, 2))
        # std of a 40,000-draw sample: relative sd 1/sqrt(2·40000) = 0.35 %; 2 % is > 5 sd
        assert torch.allclose(std, torch.ones_like(std), rtol=0.02), (case, t_val, std)
    if case == "ve-dsm":
        plain = Objective(data_std=DATA_STD).score_model(net, process)
        plain.predict_noise(z, t)
        assert net.seen.std() > 40  # the unscaled input at t_max


@pytest.mark.parametrize("case", list(CASES))
def test_minimiser_does_not_depend_on_weighting_at_fixed_t(case):
    make, Objective = CASES[case]
    process = make()
    x0 = _data(500, 4, seed=2)
    t = torch.full((500,), 0.3, dtype=F64)
    sols = []
    for weighting in ("eps", "sqrt", "likelihood"):
        objective = Objective(weighting=weighting)
        model = objective.score_model(LinearEps(process.order), process)
        sols.append(_newton_minimiser(objective, process, model, x0, t, seed=4))
    assert torch.allclose(sols[0], sols[1], rtol=1e-8) and torch.allclose(sols[0], sols[2], rtol=1e-8)


@pytest.mark.parametrize("input_scaling", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_mixed_score_with_zero_network_is_exact_for_gaussian_data(case, input_scaling):
    """Mixed score (CLD paper Sec. 3.2): ε̂ = ε_gauss + net; with data_std = s the Gaussian part alone is the
    exact score, so the zero network is already optimal (also when the network's input is scaled: ε_gauss is
    of z_t itself)."""
    make, Objective = CASES[case]
    process = make()
    objective = Objective(mixed_score=True, data_std=DATA_STD, input_scaling=input_scaling)
    model = objective.score_model(ZeroBlocks(process.order, 1), process)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(64, process.order, 3, generator=gen, dtype=F64)
    for t in [process.t_min, 0.01, 0.3, process.t_max]:
        exact = noised_score(process, z, t, 0.0, DATA_STD)
        assert torch.allclose(model.score(z, t), exact, rtol=1e-9, atol=1e-9 * exact.abs().max().item())
    t_vec = process.t_min + (process.t_max - process.t_min) * torch.rand(64, generator=gen, dtype=F64)
    # a batch of different times, and a sampler's shared time (expanded: its constants are computed once)
    for t in (t_vec, t_vec[:1].expand(64), t_vec[7].repeat(64)):
        exact = noised_score(process, z, t, 0.0, DATA_STD)
        assert torch.allclose(model.score(z, t), exact, rtol=1e-9, atol=1e-9 * exact.abs().max().item())


@pytest.mark.parametrize("case", list(CASES))
def test_mixed_score_residual_minimiser_is_zero(case):
    make, Objective = CASES[case]
    process = make()
    objective = Objective(mixed_score=True, data_std=DATA_STD)
    model = objective.score_model(LinearEps(process.order), process)
    n, d, seed = 4000, 8, 21
    x0 = _data(n, d, seed=3)
    t = torch.full((n,), 0.3, dtype=F64)
    w_hat = _newton_minimiser(objective, process, model, x0, t, seed)
    # the residual target is ε_k − ε_gauss: recompute the OLS check on it
    z, eps, _ = process.perturb(x0, t, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        target = eps[:, -1:] - model.gaussian_noise(z, t)
    Z = z.permute(0, 2, 1).reshape(-1, process.order)
    y = target.reshape(-1)
    w_ls = torch.linalg.lstsq(Z, y.unsqueeze(1)).solution.squeeze(1)
    assert torch.allclose(w_hat, w_ls, rtol=1e-7, atol=1e-9)
    cov_w = (y - Z @ w_ls).var() * torch.linalg.inv(Z.T @ Z)
    D2 = float(w_hat @ torch.linalg.solve(cov_w, w_hat))
    assert D2 < chi2.ppf(1 - 1e-6, process.order), (case, w_hat)


# ---------------------------------------------------------------------------------------------------------
# Weightings, configuration errors, loss contract
# ---------------------------------------------------------------------------------------------------------

# b(t) and Q_kk written out from the papers' constants, independently of the process objects
B_AND_Q = {
    "vp-dsm": (lambda t: 0.1 + t * (20.0 - 0.1), 1.0),
    "ve-dsm": (lambda t: (0.01 * (50.0 / 0.01) ** t) ** 2 * 2 * math.log(50.0 / 0.01), 1.0),
    "cld-hsm": (lambda t: 4.0 + 0 * t, 2.0),  # Q_vv = 2Γ, Γ = 1
    "hold-bcsm": (lambda t: 8.0 + 0 * t, 2 * 3 * math.sqrt(3.0)),  # 2ξ/L, ξ = 3√3, L = 1
    "chain4-bcsm": (lambda t: 8.0 + 0 * t, 2 * 4 * math.sqrt(5.0)),  # ξ = n sqrt(2n − 3)
}


@pytest.mark.parametrize("case", list(CASES))
def test_weightings(case):
    """likelihood: λ = b(t) Q_kk ℓ_t², with ℓ_t² = (Σ⁻¹)_kk (L_kk² is the Schur complement 1/(Σ⁻¹)_kk);
    sqrt: ℓ_t; eps: 1. The weighted loss is the weight times the eps loss, per example.
    (ℓ_t comes from the Cholesky factor of cov + jitter·I, process.kernel_jitter; include it here.)"""
    make, Objective = CASES[case]
    process = make()
    b_fn, q = B_AND_Q[case]
    t = torch.tensor([0.05, 0.3, 0.7, 1.0], dtype=F64)
    _, cov, chol = process.kernel(t)
    ell2 = torch.linalg.inv(cov + process.kernel_jitter * torch.eye(process.order, dtype=F64))[:, -1, -1]
    expected = b_fn(t) * q * ell2
    rows = ScoreModel(LinearEps(process.order), process).score_rows(t)
    w_lik = Objective(weighting="likelihood").weight(process, t, rows)
    assert torch.allclose(w_lik, expected, rtol=1e-10)
    assert torch.allclose(Objective(weighting="sqrt").weight(process, t, rows), ell2.sqrt(), rtol=1e-10)
    assert torch.equal(Objective(weighting="eps").weight(process, t, rows), torch.ones(4, dtype=F64))
    # any factor K_t K_tᵀ = Σ_t has ‖c_t‖² = (Σ⁻¹)_kk: the gDDIM weights are the same (up to the 1e-9 jitter
    # in the expected value, relative 1e-5 where Σ_kk ~ 1e-4)
    gddim_rows = ScoreModel(LinearEps(process.order), process, kt="gddim").score_rows(t)
    assert torch.allclose(Objective(weighting="likelihood").weight(process, t, gddim_rows), expected, rtol=1e-4)
    model = ScoreModel(LinearEps(process.order, w=[0.3] * process.order), process)
    x0 = _data(4, 3, seed=5)
    losses = {
        w: Objective(weighting=w).loss(model, process, x0, t=t, generator=torch.Generator().manual_seed(8))
        for w in ("eps", "likelihood")
    }
    assert torch.allclose(losses["likelihood"], losses["eps"] * expected, rtol=1e-6)


@pytest.mark.parametrize(
    "Objective, make",
    [(HSM, vp), (HSM, ve), (HSM, hold), (DSM, cld), (DSM, hold), (BCSM, cld), (BCSM, vp)],
)
def test_order_mismatch_raises(Objective, make):
    with pytest.raises(ObjectiveConfigError, match="order"):
        Objective().check_process(make())


@pytest.mark.parametrize("case", list(CASES))
def test_matching_orders_accepted(case):
    make, Objective = CASES[case]
    Objective().check_process(make())


def test_unknown_weighting_or_reduction_raises():
    with pytest.raises(ObjectiveConfigError, match="weighting"):
        DSM(weighting="nope")
    with pytest.raises(ObjectiveConfigError, match="reduction"):
        DSM(reduction="median")


@pytest.mark.parametrize("case", ["vp-dsm", "cld-hsm"])
def test_sum_reduction_is_the_mean_times_the_data_dimension(case):
    """reduction=sum (score_sde's reduce_mean=False, GDSS's loss) scales each example's loss by d; the same
    draws (generator) must give exactly d × the mean loss, so only the loss scale changes, not its minimiser."""
    make, Objective = CASES[case]
    process = make()
    model = ScoreModel(LinearEps(process.order, w=[0.3] * process.order), process)
    d = 7
    x0, t = _data(4, d, seed=2), torch.tensor([0.05, 0.3, 0.7, 1.0], dtype=F64)
    losses = {
        r: Objective(reduction=r).loss(model, process, x0, t=t, generator=torch.Generator().manual_seed(3))
        for r in ("mean", "sum")
    }
    assert torch.allclose(losses["sum"], d * losses["mean"], rtol=1e-12)


class TinyMLP(nn.Module):
    def __init__(self, order: int, d: int):
        super().__init__()
        self.lin = nn.Sequential(nn.Linear(order * d + 1, 16), nn.SiLU(), nn.Linear(16, d))

    def forward(self, z_flat, t):
        return self.lin(torch.cat([z_flat.float(), t.float()[:, None]], dim=1)).to(z_flat.dtype)


@pytest.mark.parametrize("case", list(CASES))
def test_loss_shape_gradient_and_determinism(case):
    make, Objective = CASES[case]
    process = make()
    torch.manual_seed(0)
    objective = Objective(weighting="likelihood", mixed_score=True, data_std=DATA_STD)
    model = objective.score_model(TinyMLP(process.order, 3), process)
    x0 = _data(16, 3, seed=6).float()
    loss = objective.loss(model, process, x0, generator=torch.Generator().manual_seed(1))
    assert loss.shape == (16,)
    assert torch.isfinite(loss).all() and (loss >= 0).all()
    loss.mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    with torch.no_grad():
        again = objective.loss(model, process, x0, generator=torch.Generator().manual_seed(1))
        other = objective.loss(model, process, x0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(loss.detach(), again)
    assert not torch.equal(again, other)


def test_sample_time_in_range_and_reproducible():
    p = vp()
    t = DSM().sample_time(10_000, p, generator=torch.Generator().manual_seed(0))
    assert t.dtype == F64 and t.min() >= p.t_min and t.max() <= p.t_max
    assert torch.equal(t, DSM().sample_time(10_000, p, generator=torch.Generator().manual_seed(0)))
    # uniform on [t_min, t_max]: mean within 5 SE of the midpoint
    se = (p.t_max - p.t_min) / math.sqrt(12 * 10_000)
    assert abs(t.mean().item() - 0.5 * (p.t_min + p.t_max)) < 5 * se


# ---------------------------------------------------------------------------------------------------------
# The gDDIM noise factor (objective.kt = gddim): the network predicts all k blocks of ε = R_t⁻¹ L_t ξ
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_gddim_mixed_score_with_zero_network_is_exact_for_gaussian_data(case):
    """ε_gauss = R_tᵀ Σ_gauss⁻¹ z over all k blocks; its score −c_tᵀ ε_gauss must be the exact score."""
    make, Objective = CASES[case]
    process = make()
    model = Objective(mixed_score=True, data_std=DATA_STD, kt="gddim").score_model(
        ZeroBlocks(process.order, process.order), process
    )
    z = torch.randn(64, process.order, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert model.predict_noise(z, 0.3).shape == (64, process.order, 3)
    for t in [process.t_min, 0.01, 0.3, process.t_max]:
        exact = noised_score(process, z, t, 0.0, DATA_STD)
        assert torch.allclose(model.score(z, t), exact, rtol=1e-7, atol=1e-7 * exact.abs().max().item()), t


@pytest.mark.parametrize("case", list(CASES))
def test_gddim_target_is_a_rotation_of_the_kernel_noise_and_its_minimiser_is_the_score(case):
    """noise_target = R⁻¹Lξ: unit covariance (R⁻¹L orthogonal), z_t = Φz̄_0 + R ε exactly, and for Gaussian
    data the best linear predictor of the residual target (target − ε_gauss) from z is zero (OLS test per
    block), i.e. the objective's minimiser is the mixed-score model with a zero network: the exact score."""
    make, Objective = CASES[case]
    process = make()
    objective = Objective(mixed_score=True, data_std=DATA_STD, kt="gddim")
    model = objective.score_model(ZeroBlocks(process.order, process.order), process)
    n, d = 4000, 8
    x0 = _data(n, d, seed=3)
    t = torch.full((n,), 0.3, dtype=F64)
    z, xi, chol = process.perturb(x0, t, torch.Generator().manual_seed(21))
    target = model.noise_target(xi, t, chol)
    R = NoiseFactor("gddim").matrix(process, t[:1])[0]
    mean = process.kernel(t[:1])[0][0][:, 0]
    rebuilt = torch.einsum("i,b...->bi...", mean, x0) + torch.einsum("ij,bj...->bi...", R, target)
    assert torch.allclose(rebuilt, z, rtol=1e-6, atol=1e-6)  # L_t carries the 1e-9 kernel jitter, R_t not
    flat = target.permute(0, 2, 1).reshape(-1, process.order)
    assert torch.allclose(flat.T @ flat / flat.shape[0], torch.eye(process.order, dtype=F64), atol=0.05)
    with torch.no_grad():
        resid = (target - model.gaussian_noise(z, t)).permute(0, 2, 1).reshape(-1, process.order)
    Z = z.permute(0, 2, 1).reshape(-1, process.order)
    for j in range(process.order):
        y = resid[:, j]
        w = torch.linalg.lstsq(Z, y.unsqueeze(1)).solution.squeeze(1)
        cov_w = (y - Z @ w).var() * torch.linalg.inv(Z.T @ Z)
        D2 = float(w @ torch.linalg.solve(cov_w, w))
        assert D2 < chi2.ppf(1 - 1e-6, process.order), (case, j, w)
    loss = objective.loss(model, process, x0[:16], t=t[:16])
    assert loss.shape == (16,) and torch.isfinite(loss).all()


def test_unknown_kt_is_a_config_error():
    with pytest.raises(NoiseFactorError, match="objective.kt"):
        HSM(kt="qr")
