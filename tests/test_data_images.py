"""Data modules: sklearn digits, CIFAR-10 (fake data in the official pickle format), image folders."""

import pickle

import numpy as np
import pytest
import torch

from momentum_diffusion.data import images as images_mod
from momentum_diffusion.data.digits import DigitsDataModule
from momentum_diffusion.data.errors import DataNotFoundError
from momentum_diffusion.data.images import CelebAHQDataModule, CIFAR10DataModule, ImageFolderDataModule

# ----------------------------------------------------------------------------------------- digits


def test_digits_shapes_range_and_loader():
    dm = DigitsDataModule(batch_size=32)
    dm.setup("fit")
    assert dm.data_shape == (1, 8, 8) and dm.kind == "image"
    assert len(dm.train_images) + len(dm.val_images) == 1797
    assert len(dm.val_images) == 180
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, torch.Tensor) and batch.dtype == torch.float32
    assert batch.shape == (32, 1, 8, 8)
    allx = torch.cat([dm.train_images, dm.val_images])
    assert allx.min() == -1.0 and allx.max() == 1.0
    assert next(iter(dm.eval_dataloader())).shape[1:] == (1, 8, 8)


def test_digits_split_deterministic():
    a, b, c = DigitsDataModule(seed=3), DigitsDataModule(seed=3), DigitsDataModule(seed=4)
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.val_images, b.val_images) and torch.equal(a.train_images, b.train_images)
    assert not torch.equal(a.val_images, c.val_images)
    arrays = a.labelled_arrays()
    assert np.array_equal(arrays["x_val"], a.val_images.numpy())
    assert arrays["y_train"].shape == (1617,) and set(arrays["y_train"].tolist()) == set(range(10))


def test_digits_reference_data_and_padding():
    dm = DigitsDataModule()
    ref = dm.reference_data(200)
    assert ref.shape == (200, 1, 8, 8)
    assert torch.equal(ref[:180], dm.val_images)  # val split first
    big = dm.reference_data(2000)
    assert big.shape == (2000, 1, 8, 8) and torch.equal(big, dm.reference_data(2000))
    shuffled = dm.reference_data(180, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(shuffled, ref[:180])
    assert torch.equal(shuffled.sort(0).values, ref[:180].sort(0).values)  # same val images, permuted
    padded = DigitsDataModule(pad_to=12)
    assert padded.data_shape == (1, 12, 12)
    p = padded.reference_data(4)
    assert p.shape == (4, 1, 12, 12)
    assert torch.equal(p[..., 2:10, 2:10], ref[:4]) and (p[..., :2, :] == -1).all()


# ------------------------------------------------------------------------------------- CIFAR-10


def _write_batch(path, data, labels):
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"fake", b"labels": labels, b"data": data, b"filenames": []}, f, protocol=2)


def _fake_cifar(root, n_per_batch=3):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.RandomState(0)
    for i in range(1, 6):
        data = rng.randint(0, 256, size=(n_per_batch, 3072)).astype(np.uint8)
        if i == 1:  # image 0: pure red except a black pixel at (row 1, col 5); row layout R|G|B planes
            data[0] = 0
            data[0, :1024] = 255
            data[0, 1 * 32 + 5] = 0
        _write_batch(folder / f"data_batch_{i}", data, [i % 10] * n_per_batch)
    _write_batch(folder / "test_batch", rng.randint(0, 256, size=(2, 3072)).astype(np.uint8), [0, 1])
    return folder


def test_cifar10_official_format(tmp_path):
    _fake_cifar(tmp_path)
    dm = CIFAR10DataModule(root=tmp_path, batch_size=4, random_flip=False)
    dm.setup("fit")
    assert dm.data_shape == (3, 32, 32) and dm.kind == "image"
    assert dm.train_images.shape == (15, 3, 32, 32) and dm.val_images.shape == (2, 3, 32, 32)
    x = dm.train_set[0]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32)
    assert x[0, 0, 0] == 1.0 and x[1].max() == -1.0 and x[2].max() == -1.0  # channel 0 is red
    assert x[0, 1, 5] == -1.0 and x[0, 5, 1] == 1.0  # row-major within a plane
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, torch.Tensor) and batch.shape == (4, 3, 32, 32)
    assert batch.min() >= -1.0 and batch.max() <= 1.0
    assert next(iter(dm.eval_dataloader())).shape == (2, 3, 32, 32)
    ref = dm.reference_data(20)
    assert ref.shape == (20, 3, 32, 32) and torch.equal(ref[0], x)  # train split first, then test
    raw = dm.train_images[3].float() / 127.5 - 1
    assert torch.allclose(ref[3], raw)


def test_cifar10_random_flip(tmp_path):
    _fake_cifar(tmp_path)
    dm = CIFAR10DataModule(root=tmp_path, random_flip=True)
    dm.setup()
    x = dm.train_set.rows[0].float() / 127.5 - 1
    seen = {bool(torch.equal(dm.train_set[0], x.flip(-1))) for _ in range(40)}
    assert seen == {True, False}


def test_cifar10_missing_and_malformed(tmp_path, monkeypatch):
    dm = CIFAR10DataModule(root=tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError) as err:
        dm.setup()
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg and "\n" not in msg
    assert "cifar-10-python.tar.gz" in msg
    # download=True offline: a refused connection gives the same clear error, quickly
    monkeypatch.setattr(images_mod, "CIFAR10_URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    with pytest.raises(DataNotFoundError, match="download failed"):
        CIFAR10DataModule(root=tmp_path / "dl", download=True, download_timeout=5).setup()
    folder = _fake_cifar(tmp_path / "bad")
    _write_batch(folder / "test_batch", np.zeros((2, 100), np.uint8), [0, 1])
    with pytest.raises(ValueError, match="3072"):
        CIFAR10DataModule(root=tmp_path / "bad").setup()


# ---------------------------------------------------------------------------------- image folder


def _write_pngs(folder, n=5):
    from PIL import Image

    (folder / "sub").mkdir(parents=True)
    for i in range(n):
        # 24 x 16 (w x h): left third red, middle green, right third blue
        arr = np.zeros((16, 24, 3), np.uint8)
        arr[:, :8, 0], arr[:, 8:16, 1], arr[:, 16:, 2] = 255, 255, 255
        Image.fromarray(arr).save(folder / ("sub" if i % 2 else "") / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image")


def test_image_folder(tmp_path):
    _write_pngs(tmp_path)
    dm = ImageFolderDataModule(root=tmp_path, image_size=8, batch_size=2, val_fraction=0.2)
    dm.setup()
    assert dm.data_shape == (3, 8, 8) and dm.kind == "image"
    assert len(dm.train_files) == 4 and len(dm.val_files) == 1
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, torch.Tensor) and batch.shape == (2, 3, 8, 8) and batch.dtype == torch.float32
    x = dm.val_set[0]
    assert x.min() >= -1 and x.max() <= 1
    # shorter side 16 -> 8 (12 x 8), center crop 8: columns 2..9 of the 12; middle is green
    assert x[1, :, 4].min() > 0.9 and x[0, :, 4].max() < -0.9 and x[2, :, 4].max() < -0.9
    ref = dm.reference_data(7)
    assert ref.shape == (7, 3, 8, 8) and torch.equal(ref[0], x)  # val first


def test_image_folder_missing(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        CelebAHQDataModule(root=tmp_path / "celeba").setup()
    assert str(tmp_path / "celeba") in str(err.value) and "CelebA-HQ" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(DataNotFoundError, match="no images"):
        ImageFolderDataModule(root=tmp_path).setup()
    assert CelebAHQDataModule(root=tmp_path).data_shape == (3, 256, 256)


def test_image_reference_batches(tmp_path):
    _fake_cifar(tmp_path)
    dm = CIFAR10DataModule(root=tmp_path)
    batches = list(dm.reference_batches(40, batch_size=16))
    assert [len(b) for b in batches] == [16, 16, 8]
    assert torch.equal(torch.cat(batches), dm.reference_data(40))
    shuffled = dm.reference_data(17, generator=torch.Generator().manual_seed(1))
    assert torch.equal(shuffled[15:].sort(0).values, dm.reference_data(17)[15:].sort(0).values)
