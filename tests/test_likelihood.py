"""PF-ODE likelihood: exact NLL for order 1, CLD/HOLD variational bound (Gaussian data, closed forms)."""

import math

import pytest
import torch

from gaussian import marginal, score_fn
from momentum_diffusion.metrics.likelihood import aux_entropy, nll_bits_per_dim, nll_bound
from momentum_diffusion.processes import cld, hold, ve, vp

DATA_VAR = 0.25


def gaussian_score(process):
    """The exact noised-block score of the data N(0, DATA_VAR I)."""
    return score_fn(process, std=DATA_VAR**0.5)


def true_nll(x):
    return 0.5 * (x**2).sum(1) / DATA_VAR + 0.5 * x.shape[1] * math.log(2 * math.pi * DATA_VAR)


@pytest.fixture
def data():
    # A seed different from nll_bound's (0): identical streams would correlate the data with the kernel noise.
    return torch.randn(512, 2, generator=torch.Generator().manual_seed(12345), dtype=torch.float64) * DATA_VAR**0.5


@pytest.mark.parametrize("make", [vp, lambda: ve(sigma_max=10.0)])
def test_order_one_ode_likelihood_is_exact(make, data):
    process = make()
    nll, _ = nll_bound(process, gaussian_score(process), data, rtol=1e-7, atol=1e-7)
    # z_ε = x + O(1e-3) noise (kernel std at t_min), so per sample −log p moves by ~|x|·1e-3/σ² ≲ 0.03;
    # on average these shifts cancel to first order.
    torch.testing.assert_close(nll, true_nll(data), rtol=0, atol=0.05)
    assert abs(float((nll - true_nll(data)).mean())) < 2e-3


@pytest.mark.parametrize("make", [cld, hold])
def test_phase_space_bound_equals_its_closed_form_and_is_tight_for_gaussian_data(make, data):
    process = make()
    nll, _ = nll_bound(process, gaussian_score(process), data, seed=1, rtol=1e-8, atol=1e-8)
    # Independent closed form of the same estimator: −log p_ε(z_ε) for the same z_ε draws.
    gen = torch.Generator().manual_seed(1)
    z, _, _ = process.perturb(data, torch.full((data.shape[0],), process.t_min, dtype=torch.float64), gen)
    _, cov = marginal(process, process.t_min, std=DATA_VAR**0.5)  # of z_ε given data N(0, DATA_VAR I)
    zz = z.flatten(2)
    log_p = -0.5 * torch.einsum("bid,ij,bjd->b", zz, torch.linalg.inv(cov), zz) - torch.logdet(2 * math.pi * cov)
    # The ODE's global error on the divergence integral (magnitude D·|tr A|·τ(T) ~ 30) at rtol 1e-8.
    torch.testing.assert_close(nll, -log_p - aux_entropy(process, 2), rtol=0, atol=1e-3)
    # For Gaussian data the aux law is exact, so the bound's mean equals the NLL up to Monte Carlo noise:
    # per sample the aux term has variance (#aux coordinates)/2.
    n_aux = 2 * (process.order - 1)
    se = math.sqrt(n_aux / 2 / data.shape[0])
    assert abs(float(nll.mean() - true_nll(data).mean())) < 4 * se


def test_bits_per_dim_adds_the_8bit_scaling_for_images():
    process = vp()
    x = torch.randn(8, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * DATA_VAR**0.5
    out, nfe = nll_bits_per_dim(process, gaussian_score(process), x)
    assert nfe > 0
    assert out["bpd"] == pytest.approx(out["nll_nats_per_dim"] / math.log(2) + 7.0)
