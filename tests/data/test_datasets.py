"""Tests for ssl_syre.data.datasets and registry: in-memory data sets, subsets, user errors."""

from __future__ import annotations

import gzip
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets
from lightly.transforms import (
    SimCLRTransform,
)

from ssl_syre import data
from ssl_syre.config import DataConfig
from ssl_syre.errors import UserError


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    """Write a uint8 array as an IDX file: 0, 0, type 0x08, ndim, big-endian dims, bytes."""
    raw = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)


def fake_fashion_mnist(folder: Path, compress: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (7, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 7, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 3, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(folder / name, array, compress)
    return arrays


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST


@pytest.mark.skipif(
    not (data.DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason="needs apt-get install -y dataset-fashion-mnist",
)
def test_fashion_mnist_from_debian_folder() -> None:
    cfg = DataConfig(name="fashion_mnist")
    info = data.data_info(cfg)
    assert (info.in_chans, info.num_classes, info.image_size) == (1, 10, 28)

    train, test = data.build_eval_datasets(cfg, seed=0)
    assert (len(train), len(test)) == (60000, 10000)
    image, label = train[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert isinstance(label, int)
    assert set(np.unique(train.labels)) == set(range(10))
    assert set(np.unique(test.labels)) == set(range(10))
    raw, _ = data.build_eval_datasets(cfg, seed=0, normalize=False)
    assert 0.0 <= raw[0][0].min() and raw[0][0].max() <= 1.0

    ssl = data.build_ssl_dataset(
        cfg, SimCLRTransform(**data.ssl_transform_kwargs(info, cfg)), seed=0
    )
    views, _ = ssl[0]
    assert len(views) == 2 and all(view.shape == (1, 28, 28) for view in views)

    subset_cfg = DataConfig(name="fashion_mnist", train_subset=500, test_subset=200)
    train_a, test_a = data.build_eval_datasets(subset_cfg, seed=1)
    train_b, _ = data.build_eval_datasets(subset_cfg, seed=1)
    train_c, _ = data.build_eval_datasets(subset_cfg, seed=2)
    ssl_a = data.build_ssl_dataset(subset_cfg, transform=None, seed=1)
    assert (len(train_a), len(test_a)) == (500, 200)
    assert np.array_equal(train_a.indices, train_b.indices)
    assert np.array_equal(train_a.indices, ssl_a.indices)  # SSL and eval see the same images
    assert not np.array_equal(train_a.indices, train_c.indices)
    assert torch.equal(train_a[3][0], train_b[3][0])


@pytest.mark.parametrize("layout", ["flat_gz", "torchvision_raw"])
def test_fashion_mnist_from_root_round_trips_pixels(tmp_path: Path, layout: str) -> None:
    if layout == "flat_gz":
        arrays = fake_fashion_mnist(tmp_path)
    else:
        arrays = fake_fashion_mnist(tmp_path / "FashionMNIST" / "raw", compress=False)
    cfg = DataConfig(name="fashion_mnist", root=str(tmp_path), download=False)
    train, test = data.build_eval_datasets(cfg, seed=0, normalize=False)
    assert (len(train), len(test)) == (7, 3)
    for dataset, prefix in ((train, "train"), (test, "t10k")):
        images = arrays[f"{prefix}-images-idx3-ubyte"]
        labels = arrays[f"{prefix}-labels-idx1-ubyte"]
        for i in range(len(dataset)):
            pixels, label = dataset[i]
            assert np.array_equal(np.round(pixels[0].numpy() * 255).astype(np.uint8), images[i])
            assert label == labels[i]

    ssl = data.build_ssl_dataset(cfg, transform=None, seed=0)
    image, _ = ssl[2]
    assert image.mode == "L" and np.array_equal(
        np.asarray(image), arrays["train-images-idx3-ubyte"][2]
    )


def test_read_idx_rejects_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, np.zeros((2, 4, 4), np.uint8), compress=False)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(UserError, match="train-images-idx3-ubyte"):
        data.read_idx(path)
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="bad.gz"):
        data.read_idx(tmp_path / "bad.gz")


def test_fashion_mnist_missing_names_every_way_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = DataConfig(name="fashion_mnist", root=str(tmp_path), download=False)
    with pytest.raises(UserError, match="apt-get install -y dataset-fashion-mnist") as error:
        data.build_ssl_dataset(cfg, transform=None, seed=0)
    assert str(tmp_path) in str(error.value) and "data.download=true" in str(error.value)

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    cfg = DataConfig(name="fashion_mnist", root=str(tmp_path), download=True)
    with pytest.raises(UserError, match="could not download Fashion-MNIST") as error:
        data.build_ssl_dataset(cfg, transform=None, seed=0)
    assert "no network in tests" in str(error.value) and "\n" not in str(error.value)


# ---------------------------------------------------------------------------------------------
# digits


def test_digits_fixed_split_and_determinism() -> None:
    cfg = DataConfig(name="digits")
    info = data.data_info(cfg)
    assert (info.in_chans, info.num_classes, info.image_size) == (1, 10, 16)
    train, test = data.build_eval_datasets(cfg, seed=0)
    assert (len(train), len(test)) == (1437, 360)
    assert train[0][0].shape == (1, 16, 16)
    _, test_other_seed = data.build_eval_datasets(cfg, seed=123)
    assert np.array_equal(test.labels, test_other_seed.labels)
    assert torch.equal(test[7][0], test_other_seed[7][0])

    ssl = data.build_ssl_dataset(cfg, transform=None, seed=0)
    assert len(ssl) == 1437 and np.array_equal(ssl.labels, train.labels)
    pixels = np.stack([np.asarray(ssl[i][0]) for i in range(len(ssl))])
    assert pixels.max() == 255 and pixels.min() == 0

    cfg = DataConfig(name="digits", train_subset=100, test_subset=5000)
    first = data.build_ssl_dataset(cfg, transform=None, seed=4)
    again = data.build_ssl_dataset(cfg, transform=None, seed=4)
    other = data.build_ssl_dataset(cfg, transform=None, seed=5)
    train, test = data.build_eval_datasets(cfg, seed=4)
    assert len(first) == 100 and len(test) == 360  # a subset larger than the data: all of it
    assert np.array_equal(first.indices, again.indices)
    assert np.array_equal(first.indices, train.indices)
    assert not np.array_equal(first.indices, other.indices)
    with pytest.raises(UserError, match="data.train_subset"):
        data.build_ssl_dataset(DataConfig(name="digits", train_subset=0), transform=None, seed=0)


# ---------------------------------------------------------------------------------------------
# torchvision data sets, never touching the network


@pytest.mark.parametrize(
    "name, folder", [("cifar10", "cifar-10-batches-py"), ("stl10", "stl10_binary")]
)
def test_torchvision_data_missing_gives_a_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, folder: str
) -> None:
    cfg = DataConfig(name=name, root=str(tmp_path), download=False)
    with pytest.raises(UserError) as error:
        data.build_eval_datasets(cfg, seed=0)
    message = str(error.value)
    assert str(tmp_path / folder) in message and "data.download=true" in message
    assert "\n" not in message

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network in tests")

    class_name = {"cifar10": "CIFAR10", "stl10": "STL10"}[name]
    monkeypatch.setattr(torchvision.datasets, class_name, offline)
    cfg = DataConfig(name=name, root=str(tmp_path), download=True)
    with pytest.raises(UserError, match="could not download") as error:
        data.build_ssl_dataset(cfg, transform=None, seed=0)
    assert str(tmp_path) in str(error.value) and "no network in tests" in str(error.value)


def test_cifar_arrays_are_served_as_rgb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeCIFAR10:
        def __init__(self, root: str, download: bool, train: bool) -> None:
            self.data = np.full((4, 32, 32, 3), 200 if train else 100, dtype=np.uint8)
            self.targets = [0, 1, 2, 3]

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    cfg = DataConfig(name="cifar10", root=str(tmp_path))
    ssl = data.build_ssl_dataset(cfg, transform=None, seed=0)
    image, label = ssl[1]
    assert image.mode == "RGB" and image.size == (32, 32) and label == 1
    train, test = data.build_eval_datasets(cfg, seed=0, normalize=False)
    assert train[0][0].shape == (3, 32, 32)
    assert torch.allclose(test[0][0], torch.full((3, 32, 32), 100 / 255))
