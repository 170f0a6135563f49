"""Fréchet distance between Gaussian fits of network features (FID, Heusel et al. 2017).

    FD = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2})

computed in float64. The trace of the matrix square root uses that S1 S2 is similar to the symmetric PSD
matrix M = S1^{1/2} S2 S1^{1/2} (same eigenvalues), so tr((S1 S2)^{1/2}) = sum_i sqrt(lambda_i(M)),
with S1^{1/2} and lambda(M) from symmetric eigen-decompositions (tiny negative round-off eigenvalues are
clipped to 0). Unlike a general ``scipy.linalg.sqrtm`` of the non-symmetric S1 S2, this never returns
complex parts and is stable for singular (rank-deficient) covariances.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

INCEPTION_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_WEIGHTS_ENV = "MOMENTUM_DIFFUSION_INCEPTION_WEIGHTS"


def _as_float64(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def _sym_sqrt(s: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix via eigh (negative round-off eigenvalues clipped)."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet (2-Wasserstein squared) distance between N(mu1, sigma1) and N(mu2, sigma2), float64."""
    mu1, mu2 = np.atleast_1d(_as_float64(mu1)), np.atleast_1d(_as_float64(mu2))
    s1, s2 = np.atleast_2d(_as_float64(sigma1)), np.atleast_2d(_as_float64(sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    s1, s2 = 0.5 * (s1 + s1.T), 0.5 * (s2 + s2.T)
    root1 = _sym_sqrt(s1)
    m = root1 @ s2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (m + m.T)), 0.0, None)).sum()
    diff = mu1 - mu2
    fd = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean
    return float(max(fd, 0.0))


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    f = _as_float64(features)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (N >= 2, D), got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _batches(images, batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        yield from images.split(batch_size)
    else:  # any iterable of tensors (e.g. a DataLoader yielding image batches)
        for batch in images:
            yield batch[0] if isinstance(batch, list | tuple) else batch


class FrechetDistance:
    """FD between images and fixed real statistics, in the feature space of ``feature_extractor``.

    ``feature_extractor`` maps image batches (B, C, H, W) in [-1, 1] to features (B, D). Real statistics
    are given directly (``real_stats=(mu, sigma)``) or computed from ``real_images`` (a tensor or an
    iterable of batches).
    """

    def __init__(
        self,
        feature_extractor: nn.Module,
        real_images=None,
        real_stats: tuple | None = None,
        batch_size: int = 256,
        device: str | torch.device = "cpu",
    ):
        self.extractor = feature_extractor.to(device).eval()
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.real_stats: tuple[np.ndarray, np.ndarray] | None = None
        if real_stats is not None:
            self.real_stats = (_as_float64(real_stats[0]), _as_float64(real_stats[1]))
        elif real_images is not None:
            self.set_real(real_images)

    @torch.no_grad()
    def features(self, images) -> np.ndarray:
        """Features (N, D) in float64 of a tensor (N, C, H, W) or an iterable of batches."""
        out = []
        for batch in _batches(images, self.batch_size):
            feats = self.extractor(batch.to(self.device, torch.float32))
            out.append(feats.reshape(feats.shape[0], -1).double().cpu())
        if not out:
            raise ValueError("no images given")
        return torch.cat(out).numpy()

    def set_real(self, real_images) -> None:
        self.real_stats = feature_statistics(self.features(real_images))

    def compute(self, fake_images) -> float:
        """FD between the fake images' feature Gaussian and the real one."""
        if self.real_stats is None:
            raise RuntimeError("FrechetDistance has no real statistics; call set_real(real_images) first")
        mu, sigma = feature_statistics(self.features(fake_images))
        return frechet_distance(mu, sigma, *self.real_stats)

    __call__ = compute


def inception_weights_path(weights_path: str | os.PathLike | None = None) -> Path:
    """Where the FID Inception weights are expected: the argument, else $MOMENTUM_DIFFUSION_INCEPTION_WEIGHTS,
    else torch.hub's checkpoint dir (where torchmetrics/torch-fidelity would cache them)."""
    if weights_path is not None:
        return Path(weights_path).expanduser()
    if os.environ.get(INCEPTION_WEIGHTS_ENV):
        return Path(os.environ[INCEPTION_WEIGHTS_ENV]).expanduser()
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_URL.rsplit("/", 1)[-1]


class InceptionFeatures(nn.Module):
    """2048-d pool features of the TF-ported FID Inception-v3 (torchmetrics/torch-fidelity), from local
    weights only. Input: images (B, 3, H, W) in [-1, 1], quantized to uint8 as for saved images.

    Raises ``FIDUnavailable`` (a RuntimeError, one line) if torch-fidelity is missing or the weights file is
    absent; never downloads.
    """

    def __init__(self, weights_path: str | os.PathLike | None = None, feature: int = 2048):
        super().__init__()
        path = check_fid_available(weights_path)
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.net = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=[str(feature)], feature_extractor_weights_path=str(path)
        )
        self.num_features = feature

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        x = ((images.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
        return self.net(x)


def save_random_inception(path: str | os.PathLike, seed: int = 0) -> Path:
    """A randomly initialised FID Inception-v3 saved in the real weights file's format: exercises the whole FID
    path (tests, ``make gpu-check``) where the real file cannot be had; its FID values mean nothing."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    cls, load, download = (
        fe.FeatureExtractorInceptionV3,
        fe.FeatureExtractorInceptionV3.load_state_dict,
        fe.load_state_dict_from_url,
    )
    try:
        cls.load_state_dict = lambda self, *a, **k: None  # keep the random initialisation
        fe.load_state_dict_from_url = lambda *a, **k: {}  # and never touch the network
        torch.manual_seed(seed)
        net = cls("inception-v3-compat", ["2048"])
    finally:
        cls.load_state_dict, fe.load_state_dict_from_url = load, download
    torch.save(net.state_dict(), path)
    return Path(path)


class FIDUnavailable(RuntimeError):
    """FID cannot be computed here (torch-fidelity or the Inception weights missing); the message says how."""


def check_fid_available(weights_path: str | os.PathLike | None = None) -> Path:
    """The weights file, or FIDUnavailable with one line naming the file and where to get it."""
    path = inception_weights_path(weights_path)
    try:
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE
    except ImportError:  # pragma: no cover - torchmetrics is a dependency
        _TORCH_FIDELITY_AVAILABLE = False
    if not _TORCH_FIDELITY_AVAILABLE:
        raise FIDUnavailable(
            "FID needs torch-fidelity: pip install 'momentum_diffusion[fid]' (or pip install torch-fidelity)"
        )
    if not path.is_file():
        raise FIDUnavailable(
            f"FID Inception weights not found at {path}: download {INCEPTION_WEIGHTS_URL} there on a machine "
            f"with internet, or point metrics.inception_weights (or ${INCEPTION_WEIGHTS_ENV}) at the file"
        )
    return path


def _file_digest(path: Path, chunk: int = 1 << 20) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()[:16]


class FeatureMoments:
    """Running count, sum and sum of outer products of features in float64 (on the features' device), so that
    statistics of 50,000 images never hold all features at once and shards from several ranks add up."""

    def __init__(self):
        self.count, self.total, self.outer = 0, None, None

    def add(self, feats: torch.Tensor) -> None:
        f = feats.reshape(feats.shape[0], -1).double()
        if self.total is None:
            self.total, self.outer = f.new_zeros(f.shape[1]), f.new_zeros(f.shape[1], f.shape[1])
        self.count += f.shape[0]
        self.total += f.sum(0)
        self.outer += f.T @ f

    def pack(self) -> torch.Tensor:
        """(count, Σf, Σffᵀ) as one float64 vector, so that ranks can all-reduce their shards with one sum."""
        count = self.total.new_tensor([float(self.count)])
        return torch.cat([count, self.total, self.outer.reshape(-1)])

    @classmethod
    def unpack(cls, packed: torch.Tensor) -> FeatureMoments:
        d = int(round((-1 + (1 + 4 * (packed.numel() - 1)) ** 0.5) / 2))  # packed = 1 + d + d²
        moments = cls()
        moments.count, moments.total = int(round(float(packed[0]))), packed[1 : 1 + d]
        moments.outer = packed[1 + d :].reshape(d, d)
        return moments

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        if self.count < 2:
            raise ValueError(f"need at least 2 images for feature statistics, got {self.count}")
        mu = self.total / self.count
        sigma = (self.outer - self.count * torch.outer(mu, mu)) / (self.count - 1)
        return _as_float64(mu), _as_float64(0.5 * (sigma + sigma.T))


class ImageFID:
    """FID of generated images against a data set's reference statistics, as the field computes it:
    the FID Inception-v3 (torch-fidelity's TF port, local weights), features on ``device`` in batches, and the
    reference statistics of ``n_reference`` real images (CIFAR-10: all 50,000 training images) computed once and
    cached in ``cache_dir`` under a key of data set, image count and weights digest, then reused by every NFE
    and every later evaluation."""

    def __init__(
        self,
        datamodule,
        weights_path: str | os.PathLike | None = None,
        n_reference: int = 50_000,
        cache_dir: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 250,
        extractor: nn.Module | None = None,
    ):
        self.extractor = (extractor or InceptionFeatures(weights_path)).to(device).eval()  # checks the weights
        self.path = inception_weights_path(weights_path) if extractor is None else None
        self.datamodule, self.n_reference, self.batch_size = datamodule, n_reference, batch_size
        self.device = torch.device(device)
        self.cache_dir = Path(cache_dir or Path.home() / ".cache" / "momentum_diffusion" / "fid").expanduser()
        self._reference: tuple[np.ndarray, np.ndarray] | None = None

    def cache_file(self) -> Path:
        data_id = getattr(self.datamodule, "fid_id", lambda: type(self.datamodule).__name__)()
        weights_id = _file_digest(self.path) if self.path is not None else type(self.extractor).__name__
        return self.cache_dir / f"{data_id}-n{self.n_reference}-inception{weights_id}.npz"

    @torch.no_grad()
    def moments(self, images) -> FeatureMoments:
        """Feature moments of a tensor of images or an iterable of batches, in [-1, 1]."""
        moments = FeatureMoments()
        for batch in _batches(images, self.batch_size):
            moments.add(self.extractor(batch.to(self.device, torch.float32)))
        return moments

    def reference(self) -> tuple[np.ndarray, np.ndarray]:
        if self._reference is None:
            path = self.cache_file()
            if path.is_file():
                with np.load(path) as cached:
                    self._reference = (cached["mu"], cached["sigma"])
            else:
                batches = self.datamodule.reference_batches(self.n_reference, batch_size=self.batch_size)
                self._reference = self.moments(batches).statistics()
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
                np.savez(tmp, mu=self._reference[0], sigma=self._reference[1])
                os.replace(tmp, path)
        return self._reference

    def __call__(self, samples) -> float:
        return self.distance(self.moments(samples))

    def distance(self, moments: FeatureMoments) -> float:
        return frechet_distance(*moments.statistics(), *self.reference())

    def union_moments(self, shard, all_reduce_sum) -> FeatureMoments:
        """Feature moments of the union of every rank's ``shard``: each rank featurises only its own images and
        the moments are summed across ranks by ``all_reduce_sum`` (a collective that every rank calls), so
        featurising takes 1/N of the time; one rank then takes ``distance``."""
        return FeatureMoments.unpack(all_reduce_sum(self.moments(shard).pack()))
