"""PC's reverse-diffusion predictor for every order (samplers/pc.py PredictorPlan): score_sde's formula at
order 1, noise only in the noised block, first-order convergence to the exact marginal of Gaussian data."""

import dataclasses
import math

import pytest
import torch

from gaussian import marginal, score_fn
from momentum_diffusion.processes import cld, hold, ve
from momentum_diffusion.samplers.base import time_grid
from momentum_diffusion.samplers.pc import PredictorPlan, predictor_corrector

F64 = torch.float64
MEAN, STD = 0.5, 0.3


def test_order_one_is_score_sde_reverse_diffusion():
    """VE: x_i = x_{i+1} + (σ²_{i+1} − σ²_i) s + sqrt(σ²_{i+1} − σ²_i) ξ (Song et al. 2021, Alg. 2)."""
    process = ve()
    ts = time_grid(process, 5, "uniform")
    plan = PredictorPlan(process, "reverse_diffusion", process.tau(ts))
    z = torch.randn(6, 1, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    s = torch.randn(6, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    out = plan.step(2, z, s, torch.Generator().manual_seed(2))
    var = float(process.kernel(ts[2])[1][0, 0] - process.kernel(ts[3])[1][0, 0])  # σ²_{i+1} − σ²_i
    xi = torch.randn(6, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(out[:, 0], z[:, 0] + var * s + math.sqrt(var) * xi, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("make", [cld, hold])
def test_noise_enters_the_noised_block_only(make):
    """Two noise draws change z_k alone: the other blocks are corrected by no score, so they get no noise."""
    process = make()
    plan = PredictorPlan(process, "reverse_diffusion", process.tau(time_grid(process, 4, "uniform")))
    z = torch.randn(5, process.order, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    s = torch.zeros(5, 2, dtype=F64)
    a, b = (plan.step(1, z, s, torch.Generator().manual_seed(seed)) for seed in (1, 2))
    torch.testing.assert_close(a[:, :-1], b[:, :-1], rtol=0, atol=0)
    assert (a[:, -1] - b[:, -1]).abs().min() > 0


def marginal_error(process, nfe: int, n: int = 40_000) -> float:
    """Largest covariance error (in Monte Carlo standard errors) at t_min, predictor only, started from the
    exact marginal of Gaussian data at t_max."""
    mean_T, cov_T = marginal(process, process.t_max, MEAN, STD)
    _, cov = marginal(process, process.t_min, MEAN, STD)
    gen = torch.Generator().manual_seed(11)
    z_T = mean_T + torch.randn(n, process.order, dtype=F64, generator=gen) @ torch.linalg.cholesky(cov_T).T
    out, used = predictor_corrector(
        process, score_fn(process, MEAN, STD), z_T[:, :, None], nfe=nfe, n_corrector=0,
        predictor="reverse_diffusion", denoise=False, generator=gen,
    )  # fmt: skip
    assert used == nfe
    scale = cov.diagonal().sqrt()
    return float(((torch.cov(out[:, :, 0].T) - cov).abs() / torch.outer(scale, scale)).max() / math.sqrt(2 / n))


@pytest.mark.parametrize("make", [cld, hold])
def test_converges_at_first_order_on_gaussian_data(make):
    """A first-order scheme: 4× the steps cuts the (bias-dominated) covariance error by about 4 (≥ 3 here)."""
    process = dataclasses.replace(make(), t_min=0.1)
    coarse, fine = marginal_error(process, 50), marginal_error(process, 200)
    assert math.isfinite(coarse) and fine < coarse / 3, (coarse, fine)
