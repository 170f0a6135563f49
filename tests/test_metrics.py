"""Sliced Wasserstein-2, its noise floor, per-mode quality, and the vector data modules."""

import math

import pytest
import torch

from momentum_diffusion.data.vectors import GMMDataModule, ToyDataModule
from momentum_diffusion.exact import load_gmm
from momentum_diffusion.metrics.mode_quality import default_missing_kl, mode_quality, reference_mode_kl
from momentum_diffusion.metrics.sliced_wasserstein import (
    noise_floor,
    projections,
    sliced_wasserstein2,
    wasserstein2_1d_squared,
)

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ---- sliced Wasserstein ---------------------------------------------------------------------------------
def test_sw2_zero_for_identical_sets_and_permutation_invariant():
    x = torch.randn(500, 5, generator=_gen(0))
    assert sliced_wasserstein2(x, x) == 0.0
    assert sliced_wasserstein2(x, x[torch.randperm(500, generator=_gen(1))]) == pytest.approx(0.0, abs=1e-12)


def test_w2_of_shifted_1d_gaussians():
    x = torch.randn(40_000, 1, generator=_gen(0))
    y = 1.5 + torch.randn(30_000, 1, generator=_gen(1))  # unequal sizes on purpose
    assert sliced_wasserstein2(x, y, n_projections=4) == pytest.approx(1.5, abs=0.03)  # W2(N(0,1), N(δ,1)) = δ


def test_sliced_w2_of_a_shift_in_d_dims():
    """y = x + δ e_1: each projection is shifted by δ θ_1, so SW2² = δ² mean(θ_1²) exactly, and ≈ δ²/d."""
    d, delta = 8, 2.0
    x = torch.randn(5000, d, generator=_gen(0))
    y = x.clone()
    y[:, 0] += delta
    theta = projections(d, 512, seed=0)
    assert sliced_wasserstein2(x, y) == pytest.approx(delta * float(theta[0].pow(2).mean().sqrt()), rel=1e-6)
    # E θ_1² = 1/d; Monte-Carlo error of 512 projections ≈ 2.6 % here, allow 10 %
    assert sliced_wasserstein2(x, y) == pytest.approx(delta / math.sqrt(d), rel=0.1)
    # independent samples: the same within sampling noise
    y_indep = torch.randn(20_000, d, generator=_gen(5))
    y_indep[:, 0] += delta
    assert sliced_wasserstein2(torch.randn(20_000, d, generator=_gen(6)), y_indep) == pytest.approx(
        delta / math.sqrt(d), rel=0.12
    )


def test_sw2_deterministic_given_seed_and_seed_matters():
    x, y = torch.randn(300, 3, generator=_gen(0)), torch.randn(300, 3, generator=_gen(1)) * 1.3
    assert sliced_wasserstein2(x, y, seed=4) == sliced_wasserstein2(x, y, seed=4)
    assert sliced_wasserstein2(x, y, seed=4) != sliced_wasserstein2(x, y, seed=5)
    torch.testing.assert_close(projections(3, 16, 0).norm(dim=0), torch.ones(16, dtype=F64))


def test_unequal_sizes_are_exact():
    """Repeating every point r times leaves the empirical measure unchanged, so W2 must not change."""
    a = torch.randn(37, 4, dtype=F64, generator=_gen(2))
    b = torch.randn(50, 4, dtype=F64, generator=_gen(3))
    base = wasserstein2_1d_squared(a.T, b.T)
    torch.testing.assert_close(wasserstein2_1d_squared(a.repeat(3, 1).T, b.T), base)
    torch.testing.assert_close(wasserstein2_1d_squared(a.repeat(50, 1).T, b.repeat(37, 1).T), base)
    assert sliced_wasserstein2(a, b) == pytest.approx(sliced_wasserstein2(a.repeat(2, 1), b.repeat(3, 1)))


def test_noise_floor_is_small_and_decreases_with_n():
    gmm = load_gmm("ring8_2d")
    small = noise_floor(gmm.sample, 500, n_pairs=5, seed=0)
    large = noise_floor(gmm.sample, 5000, n_pairs=5, seed=0)
    assert 0 < large < small < 0.2
    assert noise_floor(gmm.sample, 500, n_pairs=3, seed=1) == noise_floor(gmm.sample, 500, n_pairs=3, seed=1)


# ---- mode quality -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ring():
    return load_gmm("ring8_2d")


def test_fresh_sample_scores_near_zero(ring):
    q = mode_quality(ring.sample(16_000, _gen(0)), ring)
    assert q["mode_tv"] < 0.02
    assert q["mode_kl"] < 0.02
    assert q["n_underpopulated"] == 0
    assert len(q["frequencies"]) == len(q["mode_kls"]) == 8
    ref = reference_mode_kl(ring, 16_000, _gen(1), n_repeats=3)
    assert 0 < ref < 0.02


def test_blurred_sample_has_much_larger_kl(ring):
    x = ring.sample(16_000, _gen(0))
    blurred = x + 0.3 * torch.randn(x.shape, generator=_gen(1))
    fresh, blur = mode_quality(x, ring), mode_quality(blurred, ring)
    assert blur["mode_kl"] > 1.0 and blur["mode_kl"] > 50 * fresh["mode_kl"]


def test_missing_mode_gives_its_weight_as_tv():
    gmm = load_gmm("anisotropic_4d")  # unequal weights 0.5, 0.3, 0.2
    x = gmm.sample(30_000, _gen(0))
    keep = gmm.component_log_prob(x).argmax(dim=1) != 2
    q = mode_quality(x[keep], gmm)
    assert q["mode_tv"] == pytest.approx(float(gmm.weights[2]), abs=0.01)
    assert q["n_underpopulated"] == 1
    assert q["mode_kls"][2] == default_missing_kl(gmm.dim)
    assert q["mode_kl"] >= float(gmm.weights[2]) * default_missing_kl(gmm.dim)


def test_non_finite_samples_count_against_tv(ring):
    x = ring.sample(4000, _gen(0))
    x[:400] = float("nan")
    assert mode_quality(x, ring)["mode_tv"] == pytest.approx(0.1, abs=0.02)


# ---- data modules -------------------------------------------------------------------------------------
def test_gmm_datamodule():
    dm = GMMDataModule("ring8_2d", n_train=1000, n_val=300, batch_size=128, seed=3)
    assert dm.data_shape == (2,) and dm.kind == "vector"
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 1000 // 128 and all(b.shape == (128, 2) and b.dtype == torch.float32 for b in batches)
    val = torch.cat(list(dm.eval_dataloader()))
    assert val.shape == (300, 2)
    again = GMMDataModule("ring8_2d", n_train=1000, n_val=300, batch_size=128, seed=3)
    again.setup("fit")
    torch.testing.assert_close(again.train_data, dm.train_data)
    torch.testing.assert_close(next(iter(again.train_dataloader())), batches[0])
    ref = dm.reference_data(50, _gen(0))
    assert ref.shape == (50, 2)
    with pytest.raises(FileNotFoundError):
        GMMDataModule("not_a_spec")


@pytest.mark.parametrize("name", ["moons", "circles", "swissroll", "checkerboard"])
def test_toy_datamodule(name):
    dm = ToyDataModule(name, n_train=2000, n_val=200, batch_size=256, seed=0)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (256, 2) and batch.dtype == torch.float32 and dm.data_shape == (2,)
    x = dm.reference_data(5000, _gen(0))
    assert x.abs().max() < 5 and 0.5 < float(x.std(0).mean()) < 1.5
    torch.testing.assert_close(x, dm.reference_data(5000, _gen(0)))
    with pytest.raises(ValueError, match="unknown toy dataset"):
        ToyDataModule("spiral")
