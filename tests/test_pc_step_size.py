"""PC's Langevin step size ε = 2 α (snr ‖ξ‖ / ‖g‖)² (samplers/pc.py): per sample it depends on that sample alone;
with score_sde's / GDSS's batch-mean norms it is one number for the batch, so the sampling batch size changes
it (docs/graphs.md, "Eleventh session")."""

import torch

from momentum_diffusion.samplers.pc import langevin_step_size

F64 = torch.float64


def _draw(n, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 5, dtype=F64, generator=gen), torch.randn(n, 2, 5, dtype=F64, generator=gen)


def test_per_sample_step_size_ignores_the_rest_of_the_batch():
    noise, grad = _draw(6, 0)
    grad[5] *= 50.0  # an outlier score in the batch
    eps = langevin_step_size(0.9, 0.16, noise, grad, per_sample=True)
    assert eps.shape == (6, 1, 1)
    for i in range(6):
        alone = langevin_step_size(0.9, 0.16, noise[i : i + 1], grad[i : i + 1], per_sample=True)
        torch.testing.assert_close(eps[i], alone[0])
    by_hand = 2 * 0.9 * (0.16 * noise[0].norm() / grad[0].norm()) ** 2
    torch.testing.assert_close(eps[0, 0, 0], by_hand)


def test_batch_mean_step_size_depends_on_the_batch():
    noise, grad = _draw(6, 1)
    grad[5] *= 50.0
    eps = langevin_step_size(0.9, 0.16, noise, grad, per_sample=False)
    assert eps.dim() == 0
    mean_norm = lambda x: x.reshape(x.shape[0], -1).norm(dim=-1).mean()  # noqa: E731
    torch.testing.assert_close(eps, 2 * 0.9 * (0.16 * mean_norm(noise) / mean_norm(grad)) ** 2)
    without_outlier = langevin_step_size(0.9, 0.16, noise[:5], grad[:5], per_sample=False)
    assert without_outlier > 10 * eps  # the outlier's norm shrinks every other sample's step
