"""`data=celebahq` on files in the layouts CelebA-HQ is commonly shipped in (tiny stand-ins written here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from momentum_diffusion.data.images import CelebAHQDataModule, DataNotFoundError


def _write(path, size, mode="RGB", fmt=None, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.randint(0, 256, size=(size[1], size[0], channels)).astype(np.uint8)
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode).save(path, format=fmt)


LAYOUTS = {
    # the 256×256 release as numbered JPEGs in one folder (e.g. Kaggle's celeba_hq_256)
    "flat_jpg_256": [(f"{i:05d}.jpg", (256, 256), "RGB") for i in range(5)],
    # PNG exports (progressive-GAN's h5 dumped to images), one of them with an alpha channel
    "flat_png_256": [(f"{i}.png", (256, 256), "RGBA" if i == 0 else "RGB") for i in range(5)],
    # StarGAN v2's split: train/ and val/ with one folder per attribute
    "stargan_split": [
        (f"{split}/{sex}/{i}.jpg", (256, 256), "RGB")
        for split in ("train", "val")
        for sex in ("female", "male")
        for i in range(2)
    ],
    # CelebAMask-HQ's 1024×1024 originals (and one grayscale file), resized on the fly
    "mask_hq_1024": [(f"CelebA-HQ-img/{i}.jpg", (1024, 1024), "L" if i == 1 else "RGB") for i in range(3)],
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_celebahq_layouts_load_as_256_rgb_in_unit_range(layout, tmp_path):
    for k, (name, size, mode) in enumerate(LAYOUTS[layout]):
        _write(tmp_path / name, size, mode, seed=k)
    dm = CelebAHQDataModule(root=tmp_path, batch_size=2, val_fraction=0.25)
    dm.setup()
    n = len(LAYOUTS[layout])
    assert len(dm.train_set) + len(dm.val_set) == n and len(dm.val_set) == round(0.25 * n)
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (2, 3, 256, 256) and batch.dtype == torch.float32
    downscaled = LAYOUTS[layout][0][1][0] > 256  # bicubic averaging shrinks random pixels' spread
    assert batch.min() >= -1 and batch.max() <= 1 and batch.std() > (0.05 if downscaled else 0.3)  # not blank
    again = CelebAHQDataModule(root=tmp_path, val_fraction=0.25)
    again.setup()
    assert again.val_files == dm.val_files  # the split is deterministic


def test_celebahq_resize_keeps_content(tmp_path):
    """A 1024² image whose left half is white comes out 256² with the left half white (no transposition)."""
    pixels = np.zeros((1024, 1024, 3), dtype=np.uint8)
    pixels[:, :512] = 255
    Image.fromarray(pixels).save(tmp_path / "0.png")
    dm = CelebAHQDataModule(root=tmp_path, val_fraction=0.0, random_flip=False)
    dm.setup()
    x = dm.train_set[0]
    assert x.shape == (3, 256, 256)
    assert (x[:, :, :120] > 0.99).all() and (x[:, :, 136:] < -0.99).all()


def test_celebahq_missing_or_empty_is_one_clear_error(tmp_path):
    with pytest.raises(DataNotFoundError, match="CelebA-HQ not found at .*nowhere"):
        CelebAHQDataModule(root=tmp_path / "nowhere").setup()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="has no images"):
        CelebAHQDataModule(root=tmp_path / "empty").setup()
