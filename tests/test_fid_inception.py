"""FID through the real Inception path (torch-fidelity's FID Inception-v3, weights from a local file): cached
reference statistics, the Fréchet distance against an independent scipy computation, and `evaluate.py
metric=fid` end to end. The weights are a randomly initialised network saved by the test (the real file
cannot be downloaded here); the code path is the one the real weights take."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

pytest.importorskip("torch_fidelity")

from cli_battery import run_battery  # noqa: E402
from helpers import run_script  # noqa: E402
from momentum_diffusion.data.images import write_cifar10_batches  # noqa: E402
from momentum_diffusion.metrics.fid import (  # noqa: E402
    FIDUnavailable,
    ImageFID,
    InceptionFeatures,
    check_fid_available,
    save_random_inception,
)


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory) -> Path:
    return save_random_inception(tmp_path_factory.mktemp("inception") / "pt_inception-2015-12-05-6726825d.pth")


class Images:
    """A minimal image data module: the FID reference pool is ``reference_batches`` over fixed images."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def fid_id(self) -> str:
        return f"test-{len(self.images)}"

    def reference_batches(self, n, batch_size=256, generator=None):
        yield from self.images[:n].split(batch_size)


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The usual FID formula with scipy's general matrix square root (independent of metrics/fid.py)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_matches_an_independent_computation_and_caches_the_reference(inception_weights, tmp_path):
    gen = torch.Generator().manual_seed(0)
    real = torch.rand(9, 3, 8, 8, generator=gen) * 2 - 1
    fake = (torch.rand(7, 3, 8, 8, generator=gen) * 2 - 1).mul(0.7)
    # the 64-d pool features (the same network, stopped early) keep this fast; 2048-d: the CLI test below
    extractor = InceptionFeatures(inception_weights, feature=64)
    fid = ImageFID(Images(real), n_reference=9, cache_dir=tmp_path, batch_size=4, extractor=extractor)
    got = fid(fake)
    with torch.no_grad():
        feats_real, feats_fake = (extractor(x).double().numpy() for x in (real, fake))
    # low-rank covariances (fewer images than features): project on the span of the features first, where
    # scipy's sqrtm is well conditioned; the FID is invariant under this orthogonal change of basis
    basis = np.linalg.svd(np.concatenate([feats_real, feats_fake]) - feats_real.mean(0), full_matrices=False)[2]
    expected = scipy_fid(feats_fake @ basis.T, feats_real @ basis.T)
    assert got == pytest.approx(expected, rel=1e-6)
    cached = list(tmp_path.glob("test-9-n9-inception*.npz"))
    assert len(cached) == 1
    # a new evaluator reuses the cached statistics: no reference image is featurised again
    again = ImageFID(Images(real[:0]), n_reference=9, cache_dir=tmp_path, extractor=extractor)
    again.datamodule.fid_id = lambda: "test-9"
    assert again(fake) == pytest.approx(got, rel=1e-9)


def test_missing_weights_is_one_clear_line(tmp_path):
    with pytest.raises(FIDUnavailable, match="not found at .*nowhere.pth.*download"):
        check_fid_available(tmp_path / "nowhere.pth")


def tiny_cifar_training(tmp_path: Path) -> list[str]:
    """train.py overrides: a small UNet on stand-in CIFAR-10 files written under tmp_path."""
    write_cifar10_batches(tmp_path / "cifar", per_batch=8)
    return [
        "data=cifar10",
        f"data.root={tmp_path / 'cifar'}",
        "data.num_workers=0",
        "model=unet_small",
        "model.base_channels=8",
        "trainer.max_steps=2",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]


@pytest.mark.slow  # a CLI process of its own (≈ 10 s of imports); .ci/run runs the slow tests too
def test_evaluate_metric_fid_end_to_end(inception_weights, tmp_path):
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    common = [f"ckpt={ckpt}", "sampler.nfe=3", "n_samples=4", "metric=fid", "metrics.fid_reference_images=6"]
    # training and both evaluate.py command lines in one process (tests/cli_battery.py: each through the
    # script's __main__ path)
    train, missing, ok = run_battery(
        [
            ("train.py", [*tiny_cifar_training(tmp_path), "data.batch_size=8", "callbacks.sample_evaluation=null",
                          f"metrics.inception_weights={tmp_path / 'missing.pth'}"]),
            ("evaluate.py", [*common, f"metrics.inception_weights={tmp_path / 'missing.pth'}",
                             f"hydra.run.dir={tmp_path / 'missing'}"]),
            ("evaluate.py", [*common, f"metrics.inception_weights={inception_weights}",
                             f"metrics.fid_cache={tmp_path / 'stats'}", f"hydra.run.dir={tmp_path / 'eval'}"]),
        ],
        tmp_path,
    )  # fmt: skip
    assert train["code"] == 0, train["stderr"][-2000:]
    assert "no FID will be logged" not in train["stderr"]  # the callback that would warn is off here
    assert missing["code"] != 0
    assert missing["stderr"].strip().splitlines() == [missing["stderr"].strip().splitlines()[-1]]
    assert "missing.pth" in missing["stderr"] and "Traceback" not in missing["stderr"]
    assert ok["code"] == 0, ok["stderr"][-2000:]
    rows = list(csv.DictReader(open(tmp_path / "eval" / "metrics.csv")))
    assert len(rows) == 1 and np.isfinite(float(rows[0]["fid"])) and float(rows[0]["fid"]) >= 0
    assert len(list((tmp_path / "stats").glob("CIFAR10DataModule-*-n6-inception*.npz"))) == 1


@pytest.mark.slow
def test_training_evaluation_fid_is_sharded_over_two_ddp_ranks(inception_weights, tmp_path):
    """Two gloo ranks: each samples and featurises its shard, the moments are all-reduced, rank 0 logs the FID
    (and nobody hangs in the collective)."""
    train = run_script(
        "train.py",
        *tiny_cifar_training(tmp_path),
        "data.batch_size=4",
        "trainer=ddp_cpu",
        "sampler.nfe=3",
        "callbacks.sample_evaluation.n_samples=6",
        "~callbacks.progress",
        f"metrics.inception_weights={inception_weights}",
        "metrics.fid_reference_images=6",
        f"metrics.fid_cache={tmp_path / 'stats'}",
        check=False,
        timeout=900,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "run" / "eval_metrics.csv")))
    assert len(rows) == 1 and np.isfinite(float(rows[0]["fid"])) and float(rows[0]["fid"]) >= 0
