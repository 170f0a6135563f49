"""Shared final denoising (samplers/base.py ``final_denoise``): the phase-space Tweedie formula is E[x_0 | z_t].

For Gaussian data N(m, s²) the posterior mean is closed form: z_t ~ N(φ m, s² φφᵀ + Σ_t) jointly Gaussian with
x_0, so E[x_0 | z] = m + s² φᵀ (s² φφᵀ + Σ_t)⁻¹ (z − φ m), with φ = Φ(τ_t) e_1.
"""

import pytest
import torch

from gaussian import score_fn
from momentum_diffusion.processes import cld, critically_damped_chain, hold, ve, vp
from momentum_diffusion.samplers import configure, euler_maruyama
from momentum_diffusion.samplers.base import SamplerConfigError, final_denoise

F64 = torch.float64
MEAN, STD = 0.4, 0.7


def posterior_mean(process, z, t):
    Phi, cov, _ = process.kernel(torch.tensor(t, dtype=F64))
    phi = Phi[:, 0]
    marginal = STD**2 * torch.outer(phi, phi) + cov
    gain = STD**2 * torch.linalg.solve(marginal, phi)  # Σ_z⁻¹ is symmetric: φᵀΣ_z⁻¹ = (Σ_z⁻¹φ)ᵀ
    return MEAN + torch.einsum(
        "i,bi...->b...", gain, z - torch.einsum("i,b...->bi...", phi * MEAN, torch.ones_like(z[:, 0]))
    )


@pytest.mark.parametrize("make", [vp, ve, cld, hold, lambda: critically_damped_chain(order=4)])
@pytest.mark.parametrize("t", [0.05, 0.3, 0.9])
def test_tweedie_denoising_is_the_posterior_mean_of_the_data_block(make, t):
    process = make()
    z = process.sample_prior((32, 3), generator=torch.Generator().manual_seed(0), dtype=F64)
    out = final_denoise(process, score_fn(process, MEAN, STD), z.clone(), t, "tweedie")
    expected = posterior_mean(process, z, t)
    torch.testing.assert_close(out[:, 0], expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out[:, 1:], z[:, 1:])  # only the data block is denoised


def test_default_denoising_is_tweedie_for_order_one_and_euler_above():
    for make, same_as in ((vp, "tweedie"), (cld, "euler")):
        process = make()
        z = process.sample_prior((8, 2), generator=torch.Generator().manual_seed(1), dtype=F64)
        fn = score_fn(process, MEAN, STD)
        torch.testing.assert_close(final_denoise(process, fn, z, 0.2), final_denoise(process, fn, z, 0.2, same_as))


@pytest.mark.parametrize("bad", ["foo", 1, None])
def test_unknown_denoise_option_is_a_config_error(bad):
    process = vp()
    z = process.sample_prior((4, 2), dtype=F64)
    with pytest.raises(SamplerConfigError, match="denoise"):
        configure(euler_maruyama, nfe=5, denoise=bad)(process, score_fn(process, MEAN, STD), z)
