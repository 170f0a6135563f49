"""Fréchet distance (closed forms, symmetry), the FrechetDistance helper and the digits FD."""

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from momentum_diffusion.data.digits import DigitsDataModule
from momentum_diffusion.metrics import digits_classifier as dc
from momentum_diffusion.metrics.fid import (
    FrechetDistance,
    InceptionFeatures,
    feature_statistics,
    frechet_distance,
)


def _random_cov(rng, d, rank=None):
    a = rng.randn(d, rank or d)
    return a @ a.T / d


def test_identical_stats_give_zero():
    rng = np.random.RandomState(0)
    mu, cov = rng.randn(6), _random_cov(rng, 6)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-9)
    singular = _random_cov(rng, 6, rank=2)
    assert frechet_distance(mu, singular, mu, singular) == pytest.approx(0.0, abs=1e-9)


def test_closed_form_1d_and_diagonal():
    assert frechet_distance([1.0], [[4.0]], [-2.0], [[9.0]]) == pytest.approx(9.0 + (2.0 - 3.0) ** 2)
    s1, s2 = np.array([0.5, 2.0, 1.0, 0.0]), np.array([1.5, 0.3, 1.0, 2.0])
    m1, m2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    expected = np.sum((m1 - m2) ** 2) + np.sum((s1 - s2) ** 2)
    got = frechet_distance(m1, np.diag(s1**2), m2, np.diag(s2**2))
    assert got == pytest.approx(expected, rel=1e-10)
    # torch inputs work too
    assert frechet_distance(torch.tensor(m1), torch.tensor(np.diag(s1**2)), m2, np.diag(s2**2)) == pytest.approx(
        expected, rel=1e-10
    )


def test_symmetric_and_matches_sqrtm():
    rng = np.random.RandomState(1)
    m1, m2 = rng.randn(10), rng.randn(10)
    c1, c2 = _random_cov(rng, 10), _random_cov(rng, 10)
    d12, d21 = frechet_distance(m1, c1, m2, c2), frechet_distance(m2, c2, m1, c1)
    assert d12 == pytest.approx(d21, rel=1e-9)
    covmean = scipy.linalg.sqrtm(c1 @ c2).real
    ref = np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(covmean)
    assert d12 == pytest.approx(ref, rel=1e-8)
    low = frechet_distance(m1, _random_cov(rng, 10, 3), m2, _random_cov(rng, 10, 2))
    assert np.isfinite(low) and low > 0


def test_feature_statistics_and_helper():
    rng = np.random.RandomState(2)
    real = rng.randn(4000, 3) * [1.0, 2.0, 0.5] + [0.0, 1.0, -1.0]
    mu, cov = feature_statistics(real)
    assert np.allclose(mu, real.mean(0)) and np.allclose(cov, np.cov(real, rowvar=False))
    fd = FrechetDistance(torch.nn.Flatten(), real_images=torch.tensor(real, dtype=torch.float32), batch_size=512)
    fake = torch.tensor(rng.randn(4000, 3) * [1.0, 2.0, 0.5] + [0.0, 1.0, 1.0], dtype=torch.float32)
    assert fd.compute(fake) == pytest.approx(4.0, rel=0.1)  # mean shift of 2 in one coordinate
    batches = [b for b in fake.split(1000)]
    assert fd.compute(batches) == pytest.approx(fd.compute(fake), rel=1e-6)
    with pytest.raises(RuntimeError, match="set_real"):
        FrechetDistance(torch.nn.Flatten()).compute(fake)


def test_inception_without_weights_is_a_clear_error(tmp_path):
    path = tmp_path / "weights.pth"
    with pytest.raises(RuntimeError) as err:
        InceptionFeatures(weights_path=path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------------- digits FD


def test_digits_classifier_trains_and_caches(digits_cache):
    """``digits_cache`` (conftest.py): this run's $MOMENTUM_DIFFUSION_CACHE, where the classifier was trained
    on first use (once per run); here it is loaded back from that cache."""
    model = dc.load_digits_classifier()
    assert model.val_accuracy > 0.95
    path = digits_cache / dc.CLASSIFIER_FILE
    assert path.is_file() and dc.classifier_path() == path
    again = dc.load_digits_classifier()  # from the cache: identical weights, no retraining
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    arrays = DigitsDataModule().labelled_arrays()
    assert dc.evaluate_accuracy(again, arrays["x_val"], arrays["y_val"]) == pytest.approx(model.val_accuracy)
    assert model.features(torch.zeros(2, 1, 8, 8)).shape == (2, 128)


def test_digits_fd_ordering(digits_cache):
    held_out = DigitsDataModule().reference_data(180)  # the val split
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(held_out.shape, generator=g) * 2 - 1
    blurred = F.conv2d(F.pad(held_out, (1, 1, 1, 1), mode="replicate"), torch.ones(1, 1, 3, 3) / 9)
    fd_real, fd_noise, fd_blur = dc.digits_fd(held_out), dc.digits_fd(noise), dc.digits_fd(blurred)
    assert fd_real * 5 < fd_blur and fd_real * 5 < fd_noise
    padded = DigitsDataModule(pad_to=16).reference_data(180)
    assert dc.digits_fd(padded) == pytest.approx(fd_real, rel=1e-6)


def test_fid_of_rank_shards_summed_equals_fid_of_all_samples(tmp_path):
    """Under DDP each rank featurises its own shard and the moments are all-reduced (summed): the FID of the
    union must equal the FID computed from all samples in one place."""
    from momentum_diffusion.metrics.fid import ImageFID

    class Reference:
        def fid_id(self):
            return "shards"

        def reference_batches(self, n, batch_size=256, generator=None):
            yield from (torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1).split(batch_size)

    torch.manual_seed(0)
    extractor = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 6))
    fid = ImageFID(Reference(), n_reference=40, cache_dir=tmp_path, extractor=extractor, batch_size=7)
    samples = torch.rand(30, 3, 4, 4, generator=torch.Generator().manual_seed(2)) * 2 - 1
    rank0, rank1 = samples[:16], samples[16:]
    other = fid.moments(rank1).pack()  # what the all-reduce adds from rank 1
    union = fid.union_moments(rank0, lambda packed: packed + other)
    assert union.count == 30
    assert fid.distance(union) == pytest.approx(fid(samples), rel=1e-9)
    assert fid.distance(fid.moments(rank0)) != pytest.approx(fid(samples), rel=1e-3)  # a shard alone differs
