"""A small CNN classifier of the 8x8 sklearn digits whose 128-d penultimate features define the "digits FD".

This is the offline stand-in for Inception features (FID, Heusel et al. 2017): the Fréchet distance between
Gaussian fits of classifier features of generated digits and of the full real digits data set (1797 images).
The classifier is trained once on the DigitsDataModule train split (seed 0, 10% val) with ±1 px random
shifts and cached at ``$MOMENTUM_DIFFUSION_CACHE/digits_classifier.pt`` (default
``~/.cache/momentum_diffusion``), written atomically.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.digits import DigitsDataModule
from .fid import FrechetDistance

CACHE_ENV = "MOMENTUM_DIFFUSION_CACHE"
CLASSIFIER_FILE = "digits_classifier.pt"
FORMAT_VERSION = 1


class DigitsClassifier(nn.Module):
    """conv3x3(32) -> conv3x3(64) -> maxpool 2 -> fc 128 -> fc 10; ``features`` = ReLU(fc 128) output.

    Input: (B, 1, 8, 8) in [-1, 1]; larger (background-padded) images are center-cropped to 8x8.
    """

    feature_dim = 128

    def __init__(self, dropout: float = 0.3):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 4 * 4, self.feature_dim)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(self.feature_dim, 10)

    @staticmethod
    def _crop(x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[-1] < 8 or x.shape[-2] < 8:
            raise ValueError(f"expected digits images (B, 1, >=8, >=8), got {tuple(x.shape)}")
        top, left = (x.shape[-2] - 8) // 2, (x.shape[-1] - 8) // 2
        return x[..., top : top + 8, left : left + 8]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(self._crop(x)))
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc1(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.features(x)))


class DigitsFeatures(nn.Module):
    """Feature extractor view (B, 1, H, W) -> (B, 128) of a trained classifier, for FrechetDistance."""

    def __init__(self, classifier: DigitsClassifier):
        super().__init__()
        self.classifier = classifier.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x)


def random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Translate each image by an independent integer shift in [-max_shift, max_shift]^2 (background fill)."""
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dy = torch.randint(-max_shift, max_shift + 1, (b,), generator=generator)
    dx = torch.randint(-max_shift, max_shift + 1, (b,), generator=generator)
    rows = torch.arange(h)[None, :] + max_shift + dy[:, None]
    cols = torch.arange(w)[None, :] + max_shift + dx[:, None]
    out = padded[torch.arange(b)[:, None, None], 0, rows[:, :, None], cols[:, None, :]]
    return out[:, None]


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, x, y) -> float:
    """Top-1 accuracy of ``model`` on images x (N, 1, 8, 8) and labels y (N,)."""
    model.eval()
    x, y = torch.as_tensor(np.asarray(x)), torch.as_tensor(np.asarray(y))
    return float((model(x).argmax(-1) == y).float().mean())


@torch.enable_grad()  # callers may sit in a no_grad context (evaluation callbacks)
def train_digits_classifier(
    epochs: int = 30, seed: int = 0, batch_size: int = 64, lr: float = 2e-3, verbose: bool = False
) -> DigitsClassifier:
    """Train on the DigitsDataModule(seed=0) train split with ±1 px shifts (Adam, cosine LR).

    The returned model (in eval mode) carries ``val_accuracy`` and ``train_seconds`` attributes.
    """
    start = time.perf_counter()
    arrays = DigitsDataModule(seed=0, val_fraction=0.1).labelled_arrays()
    x, y = torch.from_numpy(arrays["x_train"]), torch.from_numpy(arrays["y_train"])
    gen = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is as fast and robust to a busy machine
    try:
        model = _fit(x, y, arrays, epochs, batch_size, lr, gen, seed, verbose)
    finally:
        torch.set_num_threads(threads)
    model.val_accuracy = evaluate_accuracy(model, arrays["x_val"], arrays["y_val"])
    model.train_seconds = time.perf_counter() - start
    return model


def _fit(x, y, arrays, epochs, batch_size, lr, gen, seed, verbose) -> DigitsClassifier:
    with torch.random.fork_rng(devices=[]):  # seeded init and dropout without touching the global RNG
        torch.manual_seed(seed)
        model = DigitsClassifier()
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
        steps_per_epoch = (len(x) + batch_size - 1) // batch_size
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
        for epoch in range(epochs):
            model.train()
            for idx in torch.randperm(len(x), generator=gen).split(batch_size):
                loss = F.cross_entropy(model(random_shift(x[idx], gen)), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            if verbose:
                acc = evaluate_accuracy(model, arrays["x_val"], arrays["y_val"])
                print(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.4f}, val acc {acc:.4f}")
    return model.eval()


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "momentum_diffusion").expanduser()


def classifier_path(cache_dir: str | os.PathLike | None = None) -> Path:
    return (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / CLASSIFIER_FILE


def save_digits_classifier(model: DigitsClassifier, path: str | os.PathLike) -> Path:
    """Atomically write weights + metadata (temp file in the same directory, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "version": FORMAT_VERSION,
        "state_dict": model.state_dict(),
        "val_accuracy": float(getattr(model, "val_accuracy", float("nan"))),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _try_load(path: Path) -> DigitsClassifier | None:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("version") != FORMAT_VERSION:
            return None
        model = DigitsClassifier()
        model.load_state_dict(payload["state_dict"])
    except Exception:  # corrupt / incompatible cache: retrain
        return None
    model.eval()
    model.val_accuracy = float(payload.get("val_accuracy", float("nan")))
    return model


def load_digits_classifier(cache_dir: str | os.PathLike | None = None, retrain: bool = False) -> DigitsClassifier:
    """The cached classifier, or train and cache it on first use (or if ``retrain``)."""
    path = classifier_path(cache_dir)
    model = None if retrain or not path.is_file() else _try_load(path)
    if model is None:
        model = train_digits_classifier()
        save_digits_classifier(model, path)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


_FD_CACHE: dict[Path, FrechetDistance] = {}


def digits_frechet_distance(cache_dir: str | os.PathLike | None = None) -> FrechetDistance:
    """FrechetDistance in classifier-feature space with real statistics of all 1797 digits (cached)."""
    path = classifier_path(cache_dir)
    if path not in _FD_CACHE:
        arrays = DigitsDataModule().labelled_arrays()
        real = torch.from_numpy(np.concatenate([arrays["x_train"], arrays["x_val"]]))
        _FD_CACHE[path] = FrechetDistance(DigitsFeatures(load_digits_classifier(cache_dir)), real_images=real)
    return _FD_CACHE[path]


def digits_fd(images: torch.Tensor, cache_dir: str | os.PathLike | None = None) -> float:
    """Digits FD of images (N >= 2, 1, 8, 8) in [-1, 1] (padded images are center-cropped)."""
    return digits_frechet_distance(cache_dir).compute(images)
