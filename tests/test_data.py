"""Tests for ssl_syre.data: every data set's loading, subsets, transforms and user errors."""

from __future__ import annotations

import gzip
import struct
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets
from lightly.transforms import (
    BYOLView1Transform,
    BYOLView2Transform,
    SimCLRTransform,
    SimSiamTransform,
)
from PIL import Image

from ssl_syre import data
from ssl_syre.config import DataConfig
from ssl_syre.errors import UserError

LIGHTLY_TRANSFORMS = [SimCLRTransform, SimSiamTransform, BYOLView1Transform, BYOLView2Transform]


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
# Transforms


@pytest.mark.parametrize("transform_class", LIGHTLY_TRANSFORMS)
@pytest.mark.parametrize(
    "name, mode", [("fashion_mnist", "L"), ("cifar10", "RGB"), ("stl10", "RGB")]
)
def test_kwargs_work_with_every_lightly_transform(
    transform_class: type, name: str, mode: str
) -> None:
    cfg = DataConfig(name=name)
    info = data.data_info(cfg)  # no files needed
    kwargs = data.ssl_transform_kwargs(info, cfg)
    size = info.image_size
    image = Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    ).convert(mode)
    output = transform_class(**kwargs)(image)
    views = output if isinstance(output, list) else [output]
    for view in views:
        assert view.shape == (info.in_chans, size, size)
        assert view.dtype == torch.float32


def test_ssl_transform_kwargs_defaults_and_overrides() -> None:
    small = DataConfig(name="cifar10")
    kwargs = data.ssl_transform_kwargs(data.data_info(small), small)
    assert kwargs["gaussian_blur"] == 0.0  # lightly's CIFAR recipe
    assert kwargs["normalize"] == {
        "mean": [0.4914, 0.4822, 0.4465],
        "std": [0.2470, 0.2435, 0.2616],
    }
    assert "min_scale" not in kwargs and "cj_strength" not in kwargs  # the method's defaults

    large = DataConfig(name="stl10", min_scale=0.3, cj_strength=0.5)
    kwargs = data.ssl_transform_kwargs(data.data_info(large), large)
    assert "gaussian_blur" not in kwargs  # BYOL's two views keep their own blur
    assert (kwargs["input_size"], kwargs["min_scale"], kwargs["cj_strength"]) == (96, 0.3, 0.5)

    upsampled = DataConfig(name="digits", image_size=64)
    kwargs = data.ssl_transform_kwargs(data.data_info(upsampled), upsampled)
    assert kwargs["gaussian_blur"] == 0.0 and kwargs["min_scale"] == 0.4

    with pytest.raises(UserError, match="data.min_scale"):
        bad = DataConfig(name="cifar10", min_scale=1.5)
        data.ssl_transform_kwargs(data.data_info(bad), bad)
    with pytest.raises(UserError, match="data.name"):
        data.data_info(DataConfig(name="cifar"))


def test_eval_transform_resizes_and_center_crops() -> None:
    info = data.DataInfo("x", 3, 0, 32, data.IMAGENET_MEAN, data.IMAGENET_STD)
    tensor = data.eval_transform(info, normalize=False)(Image.new("RGB", (80, 50), (255, 0, 0)))
    assert tensor.shape == (3, 32, 32)
    assert torch.allclose(tensor[0], torch.ones(32, 32))


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


# ---------------------------------------------------------------------------------------------
# imagefolder


def make_image_folder(root: Path) -> None:
    """Two classes of small images in every mode and several sizes, plus junk."""
    rng = np.random.default_rng(0)

    def noise(size: tuple[int, int]) -> Image.Image:
        return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))

    (root / "cat").mkdir(parents=True)
    (root / "dog" / "nested").mkdir(parents=True)
    noise((20, 30)).convert("L").save(root / "cat" / "grey.png")
    noise((40, 40)).convert("RGBA").save(root / "cat" / "alpha.png")
    palette = noise((16, 24)).convert("P")
    palette.info["transparency"] = 0
    palette.save(root / "cat" / "palette.png", transparency=0)
    noise((50, 35)).save(root / "dog" / "colour.png")
    noise((64, 64)).save(root / "dog" / "nested" / "deep.PNG")
    (root / "dog" / "corrupt.jpg").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    (root / "dog" / "notes.txt").write_text("not an image")


def test_imagefolder_labelled_skips_corrupt_files_with_one_warning(tmp_path: Path) -> None:
    make_image_folder(tmp_path)
    cfg = DataConfig(name="imagefolder", root=str(tmp_path), image_size=32)
    info = data.data_info(cfg)
    assert (info.in_chans, info.num_classes, info.image_size) == (3, 2, 32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ssl = data.build_ssl_dataset(
            cfg, SimCLRTransform(**data.ssl_transform_kwargs(info, cfg)), seed=0
        )
        train, test = data.build_eval_datasets(cfg, seed=0)
    messages = [str(warning.message) for warning in caught]
    assert len(messages) == 1, messages  # the second scan of the same files stays quiet
    assert "skipping 1 of 6" in messages[0] and "corrupt.jpg" in messages[0]

    assert len(ssl) == len(train) == 5 and test is None
    assert sorted(train.labels.tolist()) == [0, 0, 0, 1, 1]
    names = {Path(path).name: label for path, label in zip(train.paths, train.labels, strict=True)}
    assert names == {
        "alpha.png": 0,
        "grey.png": 0,
        "palette.png": 0,
        "colour.png": 1,
        "deep.PNG": 1,
    }
    for i in range(len(train)):
        tensor, _ = train[i]
        assert tensor.shape == (3, 32, 32)
    views, label = ssl[0]
    assert len(views) == 2 and views[0].shape == (3, 32, 32) and label in (0, 1)


def test_imagefolder_unlabelled_and_test_root(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "train")
    make_image_folder(tmp_path / "test")
    cfg = DataConfig(name="imagefolder", root=str(tmp_path / "train"), labelled=False)
    assert data.data_info(cfg).num_classes == 0
    with pytest.warns(UserWarning, match="skipping 1 of 6"):
        ssl = data.build_ssl_dataset(cfg, transform=None, seed=0)
    assert len(ssl) == 5 and set(ssl.labels.tolist()) == {-1}
    assert all(ssl[i][0].mode == "RGB" for i in range(len(ssl)))

    cfg = DataConfig(
        name="imagefolder", root=str(tmp_path / "train"), test_root=str(tmp_path / "test")
    )
    with pytest.warns(UserWarning):
        _, test = data.build_eval_datasets(cfg, seed=0)
    assert test is not None and sorted(test.labels.tolist()) == [0, 0, 0, 1, 1]
    assert test[0][0].shape == (3, 64, 64)  # imagefolder's default image_size

    (tmp_path / "test" / "bird").mkdir()
    with pytest.raises(UserError, match="bird"):
        data.build_eval_datasets(cfg, seed=0)


def test_imagefolder_skips_a_file_that_fails_at_load_time(tmp_path: Path) -> None:
    make_image_folder(tmp_path)
    whole = (tmp_path / "cat" / "grey.png").read_bytes()
    (tmp_path / "cat" / "grey.png").write_bytes(whole[: len(whole) // 2])  # header still reads
    cfg = DataConfig(name="imagefolder", root=str(tmp_path), image_size=16)
    with pytest.warns(UserWarning, match="skipping 1 of 6"):
        train, _ = data.build_eval_datasets(cfg, seed=0)
    position = [Path(p).name for p in np.asarray(train.paths)[train.indices]].index("grey.png")
    with pytest.warns(UserWarning, match="grey.png"):
        tensor, label = train[position]
    assert tensor.shape == (3, 16, 16)
    assert label == train.labels[position + 1]


def test_imagefolder_user_errors(tmp_path: Path) -> None:
    def info(**kwargs: object) -> None:
        data.data_info(DataConfig(name="imagefolder", **kwargs))

    with pytest.raises(UserError, match="data.root is not set"):
        info()
    with pytest.raises(UserError, match="does not exist"):
        info(root=str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="no class sub-folders.*data.labelled=false"):
        info(root=str(tmp_path))
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "empty_class" / "readme.txt").write_text("no images here")
    cfg = DataConfig(name="imagefolder", root=str(tmp_path))
    with pytest.raises(UserError, match="holds no image files"):
        data.build_ssl_dataset(cfg, transform=None, seed=0)
    (tmp_path / "empty_class" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.warns(UserWarning), pytest.raises(UserError, match="none of the image files"):
        data.build_ssl_dataset(cfg, transform=None, seed=0)
