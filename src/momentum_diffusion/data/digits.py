"""scikit-learn 8x8 handwritten digits (UCI optdigits test set, 1797 images) as a LightningDataModule.

The data ship with scikit-learn, so this is the offline real-image data set used in tests and small
experiments. Pixels in [0, 16] are mapped affinely to [-1, 1]; images have shape (1, 8, 8), optionally
padded with background (-1) to (1, pad_to, pad_to) for networks that down-sample several times.
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader

from .sampling import TensorRows, resumable_loader


def _split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train, val) index split from a seeded permutation."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    perm = np.random.RandomState(seed).permutation(n)
    n_val = int(round(val_fraction * n))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


class DigitsDataModule(pl.LightningDataModule):
    """sklearn ``load_digits`` images in [-1, 1], shape (1, 8, 8) (or (1, pad_to, pad_to) if padded)."""

    kind = "image"
    num_classes = 10

    def __init__(
        self,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        seed: int = 0,
        num_workers: int = 0,
        pad_to: int | None = None,
    ):
        super().__init__()
        if pad_to is not None and pad_to < 8:
            raise ValueError(f"pad_to must be >= 8 (digits are 8x8), got {pad_to}")
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.seed = seed
        self.num_workers = num_workers
        self.pad_to = pad_to
        side = 8 if pad_to is None else pad_to
        self.data_shape = (1, side, side)
        self._arrays: dict[str, np.ndarray] | None = None
        self.train_images: torch.Tensor | None = None
        self.val_images: torch.Tensor | None = None

    # ------------------------------------------------------------------ data
    def labelled_arrays(self) -> dict[str, np.ndarray]:
        """Unpadded float32 images (N, 1, 8, 8) in [-1, 1] and int64 labels for the train/val split.

        Keys: ``x_train, y_train, x_val, y_val`` (the same split as the dataloaders use).
        """
        if self._arrays is None:
            from sklearn.datasets import load_digits

            digits = load_digits()
            images = digits.images.astype(np.float32)
            if images.shape[1:] != (8, 8) or images.min() < 0 or images.max() > 16:
                raise ValueError(
                    f"unexpected sklearn digits data: shape {images.shape}, range "
                    f"[{images.min()}, {images.max()}] (expected (N, 8, 8) in [0, 16])"
                )
            x = (images / 8.0 - 1.0)[:, None]
            y = digits.target.astype(np.int64)
            train_idx, val_idx = _split_indices(len(x), self.val_fraction, self.seed)
            self._arrays = {
                "x_train": x[train_idx],
                "y_train": y[train_idx],
                "x_val": x[val_idx],
                "y_val": y[val_idx],
            }
        return self._arrays

    def _pad(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if self.pad_to is None or self.pad_to == 8:
            return t
        total = self.pad_to - 8
        left, right = total // 2, total - total // 2
        return torch.nn.functional.pad(t, (left, right, left, right), value=-1.0)

    def prepare_data(self) -> None:
        """Nothing to download: the digits ship with scikit-learn."""

    def setup(self, stage: str | None = None) -> None:
        if self.train_images is not None:
            return
        arrays = self.labelled_arrays()
        self.train_images = self._pad(arrays["x_train"])
        self.val_images = self._pad(arrays["x_val"])

    # ----------------------------------------------------------- dataloaders
    def train_dataloader(self) -> DataLoader:
        self.setup()
        return resumable_loader(  # order from (seed, epoch); position in the epoch is checkpointed
            TensorRows(self.train_images),
            batch_size=self.batch_size,
            seed=self.seed,
            drop_last=len(self.train_images) > self.batch_size,
            num_workers=self.num_workers,
        )

    def eval_dataloader(self) -> DataLoader:
        """The held-out split in a fixed order. Not Lightning's ``val_dataloader``: training has no validation
        loop (the samples are evaluated by ``SampleEvaluation``), and Lightning warns about a loader it skips."""
        self.setup()
        images = self.val_images if len(self.val_images) > 0 else self.train_images
        return DataLoader(TensorRows(images), batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)

    def evaluate(self, samples: torch.Tensor, seed: int = 0) -> dict[str, float]:
        """The digits' own metric: Fréchet distance in the project's digits-classifier features (not FID)."""
        from ..metrics.digits_classifier import digits_fd  # the classifier trains on this module's data

        return {"fd_digits": float(digits_fd(samples))}

    # ------------------------------------------------------- reference data
    def reference_data(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` real images (n, *data_shape): the val split first, then train.

        With a ``generator`` the order inside each split is shuffled by it (val still comes first).
        If ``n`` exceeds the data set, the pool is repeated, each repetition in a fixed permutation
        (seeded by ``seed``) so that the result is deterministic.
        """
        self.setup()
        parts = []
        for images in (self.val_images, self.train_images):
            if generator is not None and len(images) > 1:
                images = images[torch.randperm(len(images), generator=generator)]
            parts.append(images)
        pool = torch.cat(parts)
        out = [pool[: min(n, len(pool))]]
        remaining = n - len(out[0])
        rep = torch.Generator().manual_seed(self.seed + 1)
        while remaining > 0:
            chunk = pool[torch.randperm(len(pool), generator=rep)[: min(remaining, len(pool))]]
            out.append(chunk)
            remaining -= len(chunk)
        return torch.cat(out).clone()
