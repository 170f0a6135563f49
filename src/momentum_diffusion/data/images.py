"""Real-image data modules: CIFAR-10 (official python-pickle format) and image folders (CelebA-HQ).

Images are returned as float32 tensors (C, H, W) in [-1, 1] (uint8 x -> x / 127.5 - 1), without labels.
Missing data raise :class:`DataNotFoundError` with a one-line message naming the expected path and how to
get the data; ``download=True`` (CIFAR-10 only) tries a single urllib download with a timeout.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .errors import DataNotFoundError
from .sampling import TensorRows, resumable_loader

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return images.to(torch.float32) / 127.5 - 1.0


class UInt8Images(TensorRows):
    """Items of a uint8 tensor (N, C, H, W) as float32 in [-1, 1], with an optional random horizontal flip."""

    def __init__(self, images: torch.Tensor, random_flip: bool = False):
        super().__init__(images)
        self.random_flip = random_flip

    def __getitem__(self, index: int) -> torch.Tensor:
        x = to_unit_range(self.rows[index])
        if self.random_flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x


def load_square_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """Read an image with PIL as RGB, resize its shorter side to ``size`` (bicubic), center-crop to
    ``size`` x ``size``; returns uint8 (3, size, size)."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        w, h = img.size
        scale = size / min(w, h)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        if (new_w, new_h) != (w, h):
            img = img.resize((new_w, new_h), Image.BICUBIC)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        img = img.crop((left, top, left + size, top + size))
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()


class ImageFiles(Dataset):
    """Images read lazily from files, resized/center-cropped to a square, in [-1, 1]."""

    def __init__(self, files: list[Path], image_size: int, random_flip: bool = False):
        self.files = files
        self.image_size = image_size
        self.random_flip = random_flip

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        x = to_unit_range(torch.from_numpy(load_square_image(self.files[index], self.image_size)))
        if self.random_flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x


class _ImageDataModule(pl.LightningDataModule):
    """Shared dataloaders and ``reference_data`` over ``self.train_set`` / ``self.val_set``."""

    kind = "image"

    def __init__(self, batch_size: int, num_workers: int, seed: int, random_flip: bool):
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.random_flip = random_flip
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return resumable_loader(  # order from (seed, epoch); position in the epoch is checkpointed
            self.train_set,
            batch_size=self.batch_size,
            seed=self.seed,
            drop_last=len(self.train_set) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def eval_dataloader(self) -> DataLoader:
        """The held-out split in a fixed order (not Lightning's ``val_dataloader``: training has no validation loop)."""
        self.setup()
        dataset = self.val_set if len(self.val_set) > 0 else self._eval_view(self.train_set)
        return DataLoader(
            dataset, batch_size=self.batch_size, num_workers=self.num_workers, persistent_workers=self.num_workers > 0
        )

    def _eval_view(self, dataset: Dataset) -> Dataset:  # pragma: no cover - overridden
        return dataset

    def _reference_pool(self) -> list[Dataset]:
        """Datasets (without augmentation) from which ``reference_data`` draws, in order."""
        raise NotImplementedError

    def fid_id(self) -> str:
        """Names the reference images for the FID statistics cache: data set, files (path, size, mtime) and
        image size, so that other files under the same name never reuse another set's statistics."""
        import hashlib

        files = sorted(p for p in self.root.rglob("*") if p.is_file())
        stamp = [str(self.root.resolve()), *(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)]
        stamp.append(str(tuple(self.data_shape)))
        return f"{type(self).__name__}-{hashlib.sha256(chr(10).join(stamp).encode()).hexdigest()[:12]}"

    def _reference_indices(self, n: int, generator: torch.Generator | None) -> list[tuple[int, int]]:
        """(dataset, item) pairs: the pool datasets in order (each shuffled by ``generator`` if given),
        then repetitions of the whole pool in a fixed permutation (seeded by ``seed``) while n is larger."""
        self.setup()
        pool = self._reference_pool()
        pairs = []
        for k, dataset in enumerate(pool):
            order = (
                torch.arange(len(dataset)) if generator is None else torch.randperm(len(dataset), generator=generator)
            )
            pairs.extend((k, int(i)) for i in order[: max(n - len(pairs), 0)])
        if not pairs and n > 0:
            raise ValueError(f"{type(self).__name__}: no images to draw reference data from")
        everything = [(k, i) for k, dataset in enumerate(pool) for i in range(len(dataset))]
        rep = torch.Generator().manual_seed(self.seed + 1)
        while len(pairs) < n:
            pairs.extend(everything[int(j)] for j in torch.randperm(len(everything), generator=rep))
        return pairs[:n]

    def reference_batches(self, n: int, batch_size: int = 256, generator: torch.Generator | None = None):
        """The images of ``reference_data(n, generator)`` as an iterator of batches (for large n)."""
        pairs = self._reference_indices(n, generator)  # runs setup()
        pool = self._reference_pool()
        for start in range(0, len(pairs), batch_size):
            yield torch.stack([pool[k][i] for k, i in pairs[start : start + batch_size]])

    def reference_data(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` real images (n, *data_shape) in [-1, 1], without augmentation: the datasets of
        ``_reference_pool`` in order (each shuffled by ``generator`` if given), repeated in a fixed
        permutation if ``n`` exceeds the pool."""
        batches = list(self.reference_batches(n, batch_size=max(n, 1), generator=generator))
        return batches[0] if batches else torch.empty(0, *self.data_shape)


def download_and_extract(url: str, root: Path, md5: str | None, timeout: float, what: str, hint: str) -> None:
    """Download a .tar.gz with urllib (socket ``timeout`` in s), check md5, extract safely into ``root``.

    Any network or archive failure raises :class:`DataNotFoundError` with the one-line ``hint``.
    """
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, suffix=".tar.gz.part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            digest = hashlib.md5()
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
        if md5 is not None and digest.hexdigest() != md5:
            raise DataNotFoundError(f"{what} download from {url} is corrupt (md5 mismatch); {hint}")
        with tarfile.open(tmp, "r:gz") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(root, filter="data")
            else:  # pragma: no cover - old Python
                tar.extractall(root)
    except DataNotFoundError:
        raise
    except (OSError, tarfile.TarError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataNotFoundError(f"{what} download failed ({reason}); {hint}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_cifar10_batches(root: str | os.PathLike, per_batch: int, seed: int = 0) -> Path:
    """Random images in CIFAR-10's official pickle layout (data_batch_1..5, test_batch) under
    ``root/cifar-10-batches-py``: stand-in files for tests and ``make gpu-check``."""
    folder = Path(root) / CIFAR10_DIR
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.randint(0, 256, size=(per_batch, 3072)).astype(np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": b"stand-in", b"labels": [0] * per_batch, b"data": data}, f, protocol=2)
    return folder


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One official CIFAR-10 python batch -> uint8 images (N, 3, 32, 32) and int64 labels (N,).

    Each row of ``b'data'`` holds 3072 bytes: 1024 red, 1024 green, 1024 blue values, each channel a
    row-major 32x32 image, so ``reshape(N, 3, 32, 32)`` yields CHW directly.
    """
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{path} is not a CIFAR-10 python batch (expected a dict with b'data', b'labels')")
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise ValueError(
            f"{path}: expected b'data' uint8 (N, 3072) and N labels, got {data.dtype} {data.shape} "
            f"and {len(labels)} labels"
        )
    return data.reshape(-1, 3, 32, 32), labels


class CIFAR10DataModule(_ImageDataModule):
    """CIFAR-10 (Krizhevsky 2009) from ``root/cifar-10-batches-py``: train = data_batch_1..5,
    val = test_batch; (3, 32, 32) in [-1, 1]; random horizontal flips on the train split.

    ``reference_data`` draws from the train split first (the usual FID reference), then test.
    """

    data_shape = (3, 32, 32)

    def __init__(
        self,
        root: str | os.PathLike = "data",
        download: bool = False,
        batch_size: int = 128,
        random_flip: bool = True,
        num_workers: int = 0,
        seed: int = 0,
        download_timeout: float = 30.0,
    ):
        super().__init__(batch_size, num_workers, seed, random_flip)
        self.root = Path(root).expanduser()
        self.download = download
        self.download_timeout = download_timeout
        self.train_images: torch.Tensor | None = None
        self.val_images: torch.Tensor | None = None

    @property
    def folder(self) -> Path:
        return self.root / CIFAR10_DIR

    def _hint(self) -> str:
        return (
            f"download {CIFAR10_URL} and extract it into {self.root} "
            "(or set data.download=true on a machine with internet)"
        )

    def _missing(self) -> list[str]:
        return [f for f in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE) if not (self.folder / f).is_file()]

    def prepare_data(self) -> None:
        """Download and extract the archive if asked to and the files are missing."""
        if self._missing() and self.download:
            download_and_extract(CIFAR10_URL, self.root, CIFAR10_MD5, self.download_timeout, "CIFAR-10", self._hint())

    def setup(self, stage: str | None = None) -> None:
        if self.train_images is not None:
            return
        self.prepare_data()
        missing = self._missing()
        if missing:
            where = self.folder if len(missing) == 6 else self.folder / missing[0]
            raise DataNotFoundError(f"CIFAR-10 not found at {where}; {self._hint()}")
        try:
            train = [read_cifar_batch(self.folder / f) for f in CIFAR10_TRAIN_FILES]
            test_x, _ = read_cifar_batch(self.folder / CIFAR10_TEST_FILE)
        except (ValueError, pickle.UnpicklingError, EOFError) as exc:
            raise ValueError(f"CIFAR-10 at {self.folder} is malformed: {exc}; {self._hint()}") from None
        self.train_images = torch.from_numpy(np.concatenate([x for x, _ in train]))
        self.val_images = torch.from_numpy(test_x)
        self.train_set = UInt8Images(self.train_images, random_flip=self.random_flip)
        self.val_set = UInt8Images(self.val_images)

    def _eval_view(self, dataset: Dataset) -> Dataset:
        return UInt8Images(self.train_images)

    def _reference_pool(self) -> list[Dataset]:
        return [UInt8Images(self.train_images), UInt8Images(self.val_images)]


class ImageFolderDataModule(_ImageDataModule):
    """All images under ``root`` (recursively; jpg/png/...), resized (shorter side) and center-cropped to
    ``image_size``, (3, S, S) in [-1, 1]; a deterministic ``val_fraction`` of files (by ``seed``) is
    held out. ``reference_data`` draws from the val split first, then train."""

    dataset_name = "image folder"
    how_to_get = "put .jpg/.png images there (any sub-folder layout)"

    def __init__(
        self,
        root: str | os.PathLike = "data/images",
        image_size: int = 256,
        batch_size: int = 64,
        random_flip: bool = True,
        val_fraction: float = 0.01,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__(batch_size, num_workers, seed, random_flip)
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.root = Path(root).expanduser()
        self.image_size = int(image_size)
        self.val_fraction = val_fraction
        self.data_shape = (3, self.image_size, self.image_size)
        self.train_files: list[Path] | None = None
        self.val_files: list[Path] | None = None

    def _not_found(self, what: str) -> DataNotFoundError:
        return DataNotFoundError(f"{self.dataset_name} {what} at {self.root}; {self.how_to_get}")

    def list_files(self) -> list[Path]:
        if not self.root.is_dir():
            raise self._not_found("not found")
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise self._not_found("has no images (.jpg/.png)")
        return files

    def setup(self, stage: str | None = None) -> None:
        if self.train_files is not None:
            return
        files = self.list_files()
        try:
            first = load_square_image(files[0], self.image_size)
        except OSError as exc:
            raise ValueError(f"cannot read image {files[0]}: {exc}") from None
        if first.shape != self.data_shape:
            raise ValueError(f"image {files[0]} decoded to shape {first.shape}, expected {self.data_shape}")
        perm = np.random.RandomState(self.seed).permutation(len(files))
        n_val = int(round(self.val_fraction * len(files)))
        self.val_files = [files[i] for i in sorted(perm[:n_val])]
        self.train_files = [files[i] for i in sorted(perm[n_val:])]
        self.train_set = ImageFiles(self.train_files, self.image_size, random_flip=self.random_flip)
        self.val_set = ImageFiles(self.val_files, self.image_size)

    def _eval_view(self, dataset: Dataset) -> Dataset:
        return ImageFiles(self.train_files, self.image_size)

    def _reference_pool(self) -> list[Dataset]:
        return [ImageFiles(self.val_files, self.image_size), ImageFiles(self.train_files, self.image_size)]


class CelebAHQDataModule(ImageFolderDataModule):
    """CelebA-HQ (Karras et al. 2018) as a folder of images, 256x256 by default."""

    dataset_name = "CelebA-HQ"
    how_to_get = (
        "place the CelebA-HQ images (.jpg/.png, e.g. the 256x256 release of Karras et al. 2018, "
        "github.com/tkarras/progressive_growing_of_gans) in that folder"
    )

    def __init__(self, root: str | os.PathLike = "data/celeba_hq", image_size: int = 256, **kwargs):
        super().__init__(root=root, image_size=image_size, **kwargs)
