"""In-memory data sets: Fashion-MNIST (our IDX reader), scikit-learn digits, CIFAR and STL-10.

Each split is held as one uint8 array; `ArrayImageDataset` serves PIL images per item for the
workers path and `uint8_images()` hands the array to the device path as a tensor.
"""

from __future__ import annotations

import gzip
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ssl_syre.config import DataConfig
from ssl_syre.errors import UserError

Transform = Callable[[Image.Image], Any]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Debian's `dataset-fashion-mnist` package puts the four IDX .gz files here.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class DataInfo:
    """What models and transforms need to know about a data set, without loading it.

    Attributes:
        name: The registry name (`data.name`).
        in_chans: 1 for grey data sets ('L' images), 3 for colour ('RGB' images).
        num_classes: Number of classes, 0 when the data are unlabelled.
        image_size: The side of the square images models see (`data.image_size` or the
            data set's default).
        mean: Per-channel mean for `Normalize`.
        std: Per-channel standard deviation for `Normalize`.
    """

    name: str
    in_chans: int
    num_classes: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class DatasetSpec:
    """One entry of `DATASETS`: how a data set is described, found and loaded.

    Attributes:
        name: The registry name.
        title: The name people know it by, for messages.
        in_chans: Channels of the images handed to transforms.
        num_classes: Number of classes (imagefolder counts its sub-folders instead).
        image_size: Default side of the images models see.
        native_size: Side of the stored images, None when it varies (imagefolder).
        mean: Per-channel mean.
        std: Per-channel standard deviation.
        load: `load(data_cfg, split, transform)` returns the whole split ('ssl', 'train' or
            'test') as a data set, or None when the split does not exist.
        augment: Defaults for lightly's transforms that this data set needs, overriding the
            method's own defaults (and overridden in turn by `data.min_scale`, `data.cj_strength`).
    """

    name: str
    title: str
    in_chans: int
    num_classes: int
    image_size: int
    native_size: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    load: Callable[[DataConfig, str, Transform | None], ImageDataset | None]
    augment: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Data set classes


class ImageDataset(Dataset):
    """A whole split of PIL images with integer labels (-1 when unlabelled).

    Items are `(transform(image), label)`; `seeded_subset` (subsets.py) restricts a split
    to some of its items with torch's `Subset`, sharing the storage.
    """

    def __init__(self, labels: np.ndarray, transform: Transform | None = None) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def _image(self, index: int) -> Image.Image:
        raise NotImplementedError

    def _item(self, index: int, image: Image.Image) -> tuple[Any, int]:
        sample = self.transform(image) if self.transform is not None else image
        return sample, int(self.labels[index])

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self._item(index, self._image(index))


class ArrayImageDataset(ImageDataset):
    """Images held in memory as a uint8 array, (N, H, W) for grey or (N, H, W, 3) for colour.

    PIL images ('L' or 'RGB') are built per item: the compact array is what forked DataLoader
    workers share, and a subset is only a list of positions over it.
    """

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, transform: Transform | None = None
    ) -> None:
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) != len(labels):
            raise ValueError(
                f"expected uint8 images (N, H, W[, 3]) and N labels, got {images.dtype} "
                f"{images.shape} and {len(labels)} labels"
            )
        super().__init__(labels, transform)
        self.images = images

    def _image(self, index: int) -> Image.Image:
        return Image.fromarray(np.ascontiguousarray(self.images[index]))

    def uint8_images(self, positions: Sequence[int] | None = None) -> torch.Tensor:
        """The images at `positions` (default: all) as one uint8 tensor (N, C, H, W)."""
        chosen = self.images if positions is None else self.images[np.asarray(positions)]
        images = torch.from_numpy(np.ascontiguousarray(chosen))
        if images.ndim == 3:
            return images.unsqueeze(1)
        return images.permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------------------------
# Fashion-MNIST


def read_idx(path: str | Path) -> np.ndarray:
    """Read an unsigned-byte IDX file (the MNIST format), gzipped or not, as a uint8 array.

    We read IDX ourselves because torchvision's FashionMNIST reads only unzipped files under
    `<root>/FashionMNIST/raw`, while Debian's `dataset-fashion-mnist` ships the .gz files in a
    read-only system folder.

    Raises:
        UserError: the file cannot be read, is not unsigned-byte IDX, or is truncated.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as file:
            raw = file.read()
    except (OSError, EOFError) as error:
        raise UserError(
            f"cannot read IDX file '{path}' ({error}); replace it with a fresh copy"
        ) from error
    # Header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions,
    # then each dimension as a big-endian uint32.
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or raw[3] == 0:
        raise UserError(f"'{path}' is not an unsigned-byte IDX file; replace it with a fresh copy")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"IDX file '{path}' is truncated; replace it with a fresh copy")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) != header + math.prod(shape):
        raise UserError(
            f"IDX file '{path}' holds {len(raw) - header} bytes of data, its header says "
            f"{math.prod(shape)}; replace it with a fresh copy"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx_pair(folder: Path, split: str) -> tuple[Path, Path] | None:
    """The (images, labels) IDX files of `split` directly in `folder` or in torchvision's
    `FashionMNIST/raw` layout under it, gzipped or not."""
    for directory in (folder, folder / "FashionMNIST" / "raw"):
        found = []
        for stem in FASHION_MNIST_FILES[split]:
            for name in (stem, stem + ".gz"):
                if (directory / name).is_file():
                    found.append(directory / name)
                    break
        if len(found) == 2:
            return found[0], found[1]
    return None


def load_fashion_mnist(
    data_cfg: DataConfig, split: str, transform: Transform | None
) -> ArrayImageDataset:
    split = "test" if split == "test" else "train"
    if data_cfg.root:
        folders = [Path(data_cfg.root).expanduser()]
    else:
        folders = [DEBIAN_FASHION_MNIST, Path("data")]
    for folder in folders:
        pair = _find_idx_pair(folder, split)
        if pair is not None:
            images, labels = read_idx(pair[0]), read_idx(pair[1])
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise UserError(
                    f"'{pair[0]}' and '{pair[1]}' do not match ({images.shape} images, "
                    f"{labels.shape} labels); replace them with fresh copies"
                )
            return ArrayImageDataset(images, labels, transform)

    where = " or ".join(f"'{folder}'" for folder in folders)
    how = (
        "install it with `apt-get install -y dataset-fashion-mnist`, set data.root to a folder "
        "holding its four IDX files"
    )
    if not data_cfg.download:
        raise UserError(
            f"Fashion-MNIST ({split} split) not found in {where}; {how}, "
            "or set data.download=true with internet access"
        )
    import torchvision.datasets

    target = folders[0] if data_cfg.root else Path("data")
    try:
        # Looked up at call time so tests can replace it and never touch the network.
        downloaded = torchvision.datasets.FashionMNIST(
            root=str(target), train=split == "train", download=True
        )
    except Exception as error:  # urllib, HTTP, checksum and disk errors alike
        raise UserError(
            f"could not download Fashion-MNIST into '{target}' ({_one_line(error)}); {how}, "
            "or retry with internet access"
        ) from error
    return ArrayImageDataset(downloaded.data.numpy(), downloaded.targets.numpy(), transform)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


# --------------------------------------------------------------------------------------------
# scikit-learn digits


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)  # values are 0..16
    labels = digits.target.astype(np.int64)
    # A constant seed: the test set must not change with the run's seed.
    train, test = train_test_split(
        np.arange(len(labels)), test_size=0.2, random_state=0, stratify=labels
    )
    for array in (images, labels):
        array.flags.writeable = False  # cached and shared between data sets
    return images, labels, np.sort(train), np.sort(test)


def load_digits(data_cfg: DataConfig, split: str, transform: Transform | None) -> ArrayImageDataset:
    images, labels, train, test = _digits_arrays()
    rows = test if split == "test" else train
    return ArrayImageDataset(images[rows], labels[rows], transform)


# --------------------------------------------------------------------------------------------
# torchvision data sets (CIFAR-10/100, STL-10)


def torchvision_loader(
    title: str,
    class_name: str,
    default_root: str,
    folder: str,
    url: str,
    splits: dict[str, dict[str, Any]],
) -> Callable[[DataConfig, str, Transform | None], ArrayImageDataset]:
    """A loader for a torchvision data set held in memory as uint8 arrays.

    `splits` maps 'ssl', 'train' and 'test' to the torchvision keyword arguments that select
    that split (train=True, split='train+unlabeled', ...).
    """

    def load(data_cfg: DataConfig, split: str, transform: Transform | None) -> ArrayImageDataset:
        import torchvision.datasets

        root = Path(data_cfg.root or default_root).expanduser()
        how = f"download {url} and extract it so that '{root / folder}' exists"
        try:
            # Looked up at call time so tests can replace it and never touch the network.
            dataset = getattr(torchvision.datasets, class_name)(
                root=str(root), download=bool(data_cfg.download), **splits[split]
            )
        except Exception as error:  # urllib, HTTP, checksum and disk errors alike
            if data_cfg.download:
                raise UserError(
                    f"could not download {title} into '{root}' ({_one_line(error)}); {how}, "
                    "or retry with internet access"
                ) from error
            raise UserError(
                f"{title} not found in '{root}' (torchvision looks for '{root / folder}'); "
                f"{how}, or set data.download=true with internet access"
            ) from error
        images = np.asarray(dataset.data)
        if images.ndim == 4 and images.shape[1] == 3:  # STL-10 stores (N, 3, H, W)
            images = images.transpose(0, 2, 3, 1)  # a view: copied per item, not here
        labels = getattr(dataset, "targets", None)
        if labels is None:
            labels = dataset.labels
        return ArrayImageDataset(images, np.asarray(labels, dtype=np.int64), transform)

    return load
