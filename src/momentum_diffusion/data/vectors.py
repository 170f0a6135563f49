"""Vector data modules: Gaussian-mixture specs (exact scores available) and 2-D sklearn toy sets.

Both yield plain float32 tensors (B, d) and expose ``data_shape``, ``kind = 'vector'`` and
``reference_data(n, generator)`` (fresh draws from the true distribution, for metrics and noise floors).
Data are generated in memory from ``seed``: no files, no downloads.
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

from ..choices import check_choice
from ..exact import GaussianMixture, load_gmm
from .sampling import ResumableDataLoader, ResumableRandomSampler, TensorRows


class _VectorDataModule(pl.LightningDataModule):
    kind = "vector"

    def __init__(self, n_train: int, n_val: int, batch_size: int, seed: int, num_workers: int):
        super().__init__()
        if min(n_train, n_val, batch_size) < 1:
            raise ValueError("n_train, n_val and batch_size must be >= 1")
        self.n_train, self.n_val = int(n_train), int(n_val)
        self.batch_size, self.seed, self.num_workers = int(batch_size), int(seed), int(num_workers)
        self.train_data: torch.Tensor | None = None
        self.val_data: torch.Tensor | None = None

    def reference_data(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_data is None:
            gen = torch.Generator().manual_seed(self.seed)
            self.train_data = self.reference_data(self.n_train, gen)
            self.val_data = self.reference_data(self.n_val, gen)

    def _loader(self, x: torch.Tensor, train: bool) -> DataLoader:
        ds = TensorRows(x)
        if train:
            base = ResumableRandomSampler(len(ds), self.seed + 1)  # resumable mid-epoch (data/sampling.py)
            drop_last = len(ds) >= self.batch_size
        else:
            base, drop_last = SequentialSampler(ds), False
        return (ResumableDataLoader if train else DataLoader)(
            ds,
            sampler=BatchSampler(base, self.batch_size, drop_last=drop_last),
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed + 1) if train else None,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self._loader(self.train_data, train=True)

    def eval_dataloader(self) -> DataLoader:
        """Held-out samples in a fixed order (not Lightning's ``val_dataloader``: training has no validation loop)."""
        self.setup("validate")
        return self._loader(self.val_data, train=False)


class GMMDataModule(_VectorDataModule):
    """Samples of a Gaussian-mixture spec: a YAML path, or a bare name of a bundled spec (``benchmarks/gmm/``)."""

    def __init__(
        self,
        spec: str | GaussianMixture = "ring8_2d",
        n_train: int = 50000,
        n_val: int = 5000,
        batch_size: int = 512,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__(n_train, n_val, batch_size, seed, num_workers)
        self.gmm = load_gmm(spec)
        self.name = self.gmm.name
        self.data_shape = (self.gmm.dim,)

    def reference_data(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.gmm.sample(n, generator)


def _checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform on the 8 dark cells of a 4×4 board on [−2, 2]² (cells whose row + column index is even)."""
    cells = np.array([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0], dtype=np.float64)
    pick = cells[rng.integers(0, len(cells), size=n)]
    return pick + rng.random((n, 2)) - 2.0


def _toy_raw(name: str, n: int, seed: int, noise: float) -> np.ndarray:
    from sklearn import datasets

    if name == "moons":
        return datasets.make_moons(n, noise=noise, random_state=seed)[0]
    if name == "circles":
        return datasets.make_circles(n, noise=noise, factor=0.5, random_state=seed)[0]
    if name == "swissroll":
        return datasets.make_swiss_roll(n, noise=noise * 10.0, random_state=seed)[0][:, [0, 2]]
    if name == "checkerboard":
        return _checkerboard(n, np.random.default_rng(seed))
    check_choice("toy dataset", name, TOY_DATASETS)  # raises: name is none of them


TOY_DATASETS = ("moons", "circles", "swissroll", "checkerboard")


class ToyDataModule(_VectorDataModule):
    """2-D toy sets from sklearn.datasets (moons, circles, swissroll) and a checkerboard.

    Standardised with a fixed affine map (mean and overall std of a fixed-seed reference draw), so every
    draw — training data and ``reference_data`` alike — comes from the same distribution with coordinates
    of roughly unit scale.
    """

    def __init__(
        self,
        name: str = "moons",
        n_train: int = 50000,
        n_val: int = 5000,
        batch_size: int = 512,
        seed: int = 0,
        num_workers: int = 0,
        noise: float = 0.05,
    ):
        super().__init__(n_train, n_val, batch_size, seed, num_workers)
        check_choice("toy dataset", name, TOY_DATASETS)
        self.name, self.noise = name, float(noise)
        self.data_shape = (2,)
        ref = _toy_raw(name, 20000, 12345, self.noise)
        self._shift = ref.mean(0)
        self._scale = float(ref.std(0).mean())

    def reference_data(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        x = (_toy_raw(self.name, n, seed, self.noise) - self._shift) / self._scale
        return torch.as_tensor(x, dtype=torch.float32)


__all__ = ["GMMDataModule", "TOY_DATASETS", "ToyDataModule"]
