"""Data sets (a registry), lightly augmentation settings and the deterministic eval transform."""

from __future__ import annotations

import gzip
import math
import os
import struct
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from ssl_syre.errors import UserError, suggest

Transform = Callable[[Image.Image], Any]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Debian's `dataset-fashion-mnist` package puts the four IDX .gz files here.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# torchvision's image extensions, plus GIF; matched case-insensitively.
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".ppm",
    ".bmp",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
    ".gif",
)
# Lightly's CIFAR-10 recipe turns blur off: at 32 px and below it wipes out the image.
BLUR_MAX_SIZE = 32
# Consecutive undecodable files after which loading gives up instead of skipping on.
MAX_SKIPPED_IN_A_ROW = 32


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
    load: Callable[[Any, str, Transform | None], ImageDataset | None]
    augment: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Data set classes


class ImageDataset(Dataset):
    """A split of PIL images with integer labels (-1 when unlabelled), restricted to `indices`.

    Items are `(transform(image), label)`; `select` makes a subset that shares the storage.
    """

    def __init__(
        self,
        all_labels: np.ndarray,
        transform: Transform | None = None,
        indices: np.ndarray | None = None,
    ) -> None:
        self._all_labels = np.asarray(all_labels, dtype=np.int64)
        self.indices = np.arange(len(self._all_labels)) if indices is None else indices
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> np.ndarray:
        """The labels of this split (or subset), in item order, without decoding any image."""
        return self._all_labels[self.indices]

    def select(self, positions: np.ndarray) -> ImageDataset:
        """Return the items at `positions` of this data set as a new data set (no copy)."""
        subset = object.__new__(type(self))
        subset.__dict__.update(self.__dict__)
        subset.indices = self.indices[np.asarray(positions, dtype=np.int64)]
        return subset

    def _image(self, index: int) -> Image.Image:
        raise NotImplementedError

    def _item(self, index: int, image: Image.Image) -> tuple[Any, int]:
        sample = self.transform(image) if self.transform is not None else image
        return sample, int(self._all_labels[index])

    def __getitem__(self, position: int) -> tuple[Any, int]:
        index = int(self.indices[position])
        return self._item(index, self._image(index))


class ArrayImageDataset(ImageDataset):
    """Images held in memory as a uint8 array, (N, H, W) for grey or (N, H, W, 3) for colour.

    PIL images ('L' or 'RGB') are built per item: the compact array is what forked DataLoader
    workers share, and a subset is only an index array over it.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        transform: Transform | None = None,
        indices: np.ndarray | None = None,
    ) -> None:
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) != len(labels):
            raise ValueError(
                f"expected uint8 images (N, H, W[, 3]) and N labels, got {images.dtype} "
                f"{images.shape} and {len(labels)} labels"
            )
        super().__init__(labels, transform, indices)
        self.images = images

    def _image(self, index: int) -> Image.Image:
        return Image.fromarray(np.ascontiguousarray(self.images[index]))


class ImageFileDataset(ImageDataset):
    """Image files decoded on access and converted to RGB.

    A file that fails to decode is skipped with a warning naming it, and the next index's
    sample is returned instead, so one bad file does not end a long run.
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: np.ndarray,
        transform: Transform | None = None,
        indices: np.ndarray | None = None,
    ) -> None:
        super().__init__(labels, transform, indices)
        self.paths = list(paths)

    def _image(self, index: int) -> Image.Image:
        return _open_rgb(self.paths[index])

    def __getitem__(self, position: int) -> tuple[Any, int]:
        for attempt in range(min(len(self), MAX_SKIPPED_IN_A_ROW)):
            index = int(self.indices[(position + attempt) % len(self)])
            try:
                image = self._image(index)
            except Exception as error:  # PIL raises many types for corrupt or truncated files
                warnings.warn(
                    f"skipping image file '{self.paths[index]}' that fails to decode "
                    f"({type(error).__name__}: {error}); remove or replace it",
                    stacklevel=2,
                )
                continue
            return self._item(index, image)
        raise UserError(
            f"{MAX_SKIPPED_IN_A_ROW} image files in a row failed to decode, starting at "
            f"'{self.paths[int(self.indices[position])]}'; check that the image folder is intact"
        )


def _open_rgb(path: str) -> Image.Image:
    with Image.open(path) as image:
        # Palette images with a transparent colour warn when converted straight to RGB.
        if image.mode == "P" and "transparency" in image.info:
            return image.convert("RGBA").convert("RGB")
        return image.convert("RGB")


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


def _load_fashion_mnist(
    data_cfg: Any, split: str, transform: Transform | None
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
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)  # values are 0..16
    labels = digits.target.astype(np.int64)
    # A constant seed: the test set must not change with the run's seed.
    train, test = train_test_split(
        np.arange(len(labels)), test_size=0.2, random_state=0, stratify=labels
    )
    for array in (images, labels):
        array.flags.writeable = False  # cached and shared between data sets
    return images, labels, np.sort(train), np.sort(test)


def _load_digits(data_cfg: Any, split: str, transform: Transform | None) -> ArrayImageDataset:
    images, labels, train, test = _digits_arrays()
    rows = test if split == "test" else train
    return ArrayImageDataset(images[rows], labels[rows], transform)


# --------------------------------------------------------------------------------------------
# torchvision data sets (CIFAR-10/100, STL-10)


def _torchvision_loader(
    title: str,
    class_name: str,
    default_root: str,
    folder: str,
    url: str,
    splits: dict[str, dict[str, Any]],
) -> Callable[[Any, str, Transform | None], ArrayImageDataset]:
    """A loader for a torchvision data set held in memory as uint8 arrays.

    `splits` maps 'ssl', 'train' and 'test' to the torchvision keyword arguments that select
    that split (train=True, split='train+unlabeled', ...).
    """

    def load(data_cfg: Any, split: str, transform: Transform | None) -> ArrayImageDataset:
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


# --------------------------------------------------------------------------------------------
# imagefolder


def _imagefolder_root(path: str | None, key: str) -> Path:
    if not path:
        raise UserError(f"{key} is not set; set {key}=<folder of images> for data.name=imagefolder")
    root = Path(path).expanduser()
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise UserError(f"{key} '{root}' {what}; set {key} to a folder of images")
    return root


def _class_folders(root: Path, key: str) -> list[str]:
    classes = sorted(
        entry.name
        for entry in os.scandir(root)
        if entry.is_dir() and not entry.name.startswith(".")
    )
    if not classes:
        raise UserError(
            f"{key} '{root}' has no class sub-folders; put each class's images in its own "
            f"sub-folder ({root}/<class>/<image>), or set data.labelled=false"
        )
    return classes


def _image_files(folder: Path) -> list[str]:
    """Every file with an image extension under `folder`, recursively, hidden ones excepted."""
    found = []
    for directory, subdirectories, files in os.walk(folder, followlinks=True):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        found.extend(
            os.path.join(directory, name)
            for name in files
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)
        )
    return sorted(found)


def _has_readable_header(path: str) -> bool:
    try:
        with Image.open(path) as image:  # lazy: reads the header, not the pixels
            return image.width > 0 and image.height > 0
    except Exception:  # PIL raises many types for corrupt files
        return False


# Header checks of recent scans, keyed on the files' paths, sizes and modification times, so
# that building the SSL and the eval data sets from one folder opens each file (and warns) once.
_HEADER_CHECKS: dict[int, list[bool]] = {}


def _drop_unreadable(
    paths: list[str], labels: list[int], root: Path
) -> tuple[list[str], list[int]]:
    """Keep the files whose header PIL can read; warn once, counting and naming the others."""
    stats = [os.stat(path) for path in paths]
    key = hash(tuple((p, s.st_size, s.st_mtime_ns) for p, s in zip(paths, stats, strict=True)))
    readable = _HEADER_CHECKS.get(key)
    if readable is None:
        # Threads: opening headers waits on the disk (or network file system), not the CPU.
        with ThreadPoolExecutor(max_workers=8) as pool:
            readable = list(pool.map(_has_readable_header, paths))
        if len(_HEADER_CHECKS) >= 8:
            _HEADER_CHECKS.pop(next(iter(_HEADER_CHECKS)))
        _HEADER_CHECKS[key] = readable
        bad = [path for path, ok in zip(paths, readable, strict=True) if not ok]
        if bad:
            names = ", ".join(f"'{os.path.relpath(path, root)}'" for path in bad[:3])
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            warnings.warn(
                f"skipping {len(bad)} of {len(paths)} image files under '{root}' that PIL "
                f"cannot open: {names}{more}; remove or replace them",
                stacklevel=3,
            )
    kept = [i for i, ok in enumerate(readable) if ok]
    return [paths[i] for i in kept], [labels[i] for i in kept]


def _scan_imagefolder(
    root: Path, key: str, class_to_index: dict[str, int] | None
) -> ImageFileDataset:
    """All readable images under `root`: by class sub-folder when `class_to_index` is given
    (sub-folders missing from it are an error), else all of them, unlabelled (-1)."""
    paths: list[str] = []
    labels: list[int] = []
    if class_to_index is None:
        paths = _image_files(root)
        labels = [-1] * len(paths)
    else:
        classes = _class_folders(root, key)
        unknown = [name for name in classes if name not in class_to_index]
        if unknown:
            raise UserError(
                f"{key} '{root}' has class folders that data.root lacks: "
                f"{', '.join(unknown[:5])}; use the same class names in both folders"
            )
        for name in classes:
            files = _image_files(root / name)
            paths.extend(files)
            labels.extend([class_to_index[name]] * len(files))
    if not paths:
        raise UserError(
            f"{key} '{root}' holds no image files ({', '.join(IMAGE_EXTENSIONS)}); "
            f"point {key} at a folder of images"
        )
    paths, labels = _drop_unreadable(paths, labels, root)
    if not paths:
        raise UserError(
            f"none of the image files under {key} '{root}' can be opened; check that they are "
            "intact images"
        )
    return ImageFileDataset(paths, np.asarray(labels, dtype=np.int64))


def _load_imagefolder(
    data_cfg: Any, split: str, transform: Transform | None
) -> ImageFileDataset | None:
    root = _imagefolder_root(data_cfg.root, "data.root")
    train_classes = _class_folders(root, "data.root") if data_cfg.labelled else None
    if split != "test":
        mapping = None if train_classes is None else {c: i for i, c in enumerate(train_classes)}
        dataset = _scan_imagefolder(root, "data.root", mapping)
    else:
        if not data_cfg.test_root:
            return None
        test_root = _imagefolder_root(data_cfg.test_root, "data.test_root")
        classes = train_classes or _class_folders(test_root, "data.test_root")
        dataset = _scan_imagefolder(
            test_root, "data.test_root", {c: i for i, c in enumerate(classes)}
        )
    dataset.transform = transform
    return dataset


# --------------------------------------------------------------------------------------------
# The registry

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="fashion_mnist",
            title="Fashion-MNIST",
            in_chans=1,
            num_classes=10,
            image_size=28,
            native_size=28,
            mean=(0.2860,),
            std=(0.3530,),
            load=_load_fashion_mnist,
        ),
        DatasetSpec(
            name="digits",
            title="scikit-learn digits",
            in_chans=1,
            num_classes=10,
            image_size=16,  # the 8x8 images upsampled: room for a crop to keep some shape
            native_size=8,
            mean=(0.3053,),  # over all 1,797 images scaled to [0, 1]
            std=(0.3759,),
            load=_load_digits,
            # A crop below ~40% of an 8x8 digit keeps a few pixels and no digit.
            augment={"min_scale": 0.4},
        ),
        DatasetSpec(
            name="cifar10",
            title="CIFAR-10",
            in_chans=3,
            num_classes=10,
            image_size=32,
            native_size=32,
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2470, 0.2435, 0.2616),
            load=_torchvision_loader(
                "CIFAR-10",
                "CIFAR10",
                "data/cifar10",
                "cifar-10-batches-py",
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                {"ssl": {"train": True}, "train": {"train": True}, "test": {"train": False}},
            ),
        ),
        DatasetSpec(
            name="cifar100",
            title="CIFAR-100",
            in_chans=3,
            num_classes=100,
            image_size=32,
            native_size=32,
            mean=(0.5071, 0.4865, 0.4409),
            std=(0.2673, 0.2564, 0.2762),
            load=_torchvision_loader(
                "CIFAR-100",
                "CIFAR100",
                "data/cifar100",
                "cifar-100-python",
                "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                {"ssl": {"train": True}, "train": {"train": True}, "test": {"train": False}},
            ),
        ),
        DatasetSpec(
            name="stl10",
            title="STL-10",
            in_chans=3,
            num_classes=10,
            image_size=96,
            native_size=96,
            mean=(0.4467, 0.4398, 0.4066),
            std=(0.2603, 0.2566, 0.2713),
            load=_torchvision_loader(
                "STL-10",
                "STL10",
                "data/stl10",
                "stl10_binary",
                "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
                {
                    "ssl": {"split": "train+unlabeled"},
                    "train": {"split": "train"},
                    "test": {"split": "test"},
                },
            ),
        ),
        DatasetSpec(
            name="imagefolder",
            title="image folder",
            in_chans=3,
            num_classes=0,  # counted from the class sub-folders by data_info
            image_size=64,
            native_size=None,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            load=_load_imagefolder,
        ),
    )
}


# --------------------------------------------------------------------------------------------
# Public API


def _spec(data_cfg: Any) -> DatasetSpec:
    name = data_cfg.name
    if name not in DATASETS:
        raise UserError(
            f"unknown data.name '{name}'{suggest(name, DATASETS)}; choose one of: "
            f"{', '.join(DATASETS)}"
        )
    return DATASETS[name]


def data_info(data_cfg: Any) -> DataInfo:
    """Describe the configured data set without decoding it.

    Only imagefolder touches the disk: it checks the root and counts class sub-folders.

    Raises:
        UserError: unknown data set, bad image_size, or (imagefolder) a missing root or no
            class sub-folders when labelled.
    """
    spec = _spec(data_cfg)
    image_size = spec.image_size if data_cfg.image_size is None else int(data_cfg.image_size)
    if image_size <= 0:
        raise UserError(f"data.image_size must be a positive integer, got {image_size}")
    num_classes = spec.num_classes
    if spec.name == "imagefolder":
        root = _imagefolder_root(data_cfg.root, "data.root")
        num_classes = len(_class_folders(root, "data.root")) if data_cfg.labelled else 0
    return DataInfo(
        name=spec.name,
        in_chans=spec.in_chans,
        num_classes=num_classes,
        image_size=image_size,
        mean=spec.mean,
        std=spec.std,
    )


def ssl_transform_kwargs(info: DataInfo, data_cfg: Any) -> dict[str, Any]:
    """Keyword arguments for lightly's SimCLRTransform, SimSiamTransform, BYOLView1Transform
    and BYOLView2Transform.

    Always `input_size` and `normalize`; `gaussian_blur=0.0` for images of 32 px or less (as
    lightly's CIFAR-10 benchmark does); the data set's own defaults (digits: min_scale 0.4);
    then `data.min_scale` and `data.cj_strength` when set. Anything not given keeps the
    method's default, so BYOL's two views keep their different blur and solarization.

    Raises:
        UserError: min_scale outside (0, 1] or negative cj_strength.
    """
    spec = _spec(data_cfg)
    kwargs: dict[str, Any] = {
        "input_size": info.image_size,
        "normalize": {"mean": list(info.mean), "std": list(info.std)},
    }
    sizes = [info.image_size] + ([spec.native_size] if spec.native_size else [])
    if min(sizes) <= BLUR_MAX_SIZE:
        kwargs["gaussian_blur"] = 0.0
    kwargs.update(spec.augment)
    if data_cfg.min_scale is not None:
        if not 0 < data_cfg.min_scale <= 1:
            raise UserError(f"data.min_scale must be in (0, 1], got {data_cfg.min_scale}")
        kwargs["min_scale"] = float(data_cfg.min_scale)
    if data_cfg.cj_strength is not None:
        if data_cfg.cj_strength < 0:
            raise UserError(f"data.cj_strength must be >= 0, got {data_cfg.cj_strength}")
        kwargs["cj_strength"] = float(data_cfg.cj_strength)
    return kwargs


def eval_transform(info: DataInfo, normalize: bool = True) -> T.Compose:
    """The deterministic transform for evaluation and export: resize the shorter side to
    `image_size` and center-crop (both no-ops at the native size), ToTensor, Normalize.

    With `normalize=False` the tensors are raw pixels in [0, 1] (the raw-pixel kNN baseline).
    """
    steps: list[Any] = [
        T.Resize(info.image_size, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
        T.CenterCrop(info.image_size),
        T.ToTensor(),
    ]
    if normalize:
        steps.append(T.Normalize(mean=list(info.mean), std=list(info.std)))
    return T.Compose(steps)


def _subset(dataset: ImageDataset, size: int | None, seed: int, key: str) -> ImageDataset:
    """A seeded random subset; the same seed and split length give the same items."""
    if size is None:
        return dataset
    if size <= 0:
        raise UserError(f"{key} must be a positive integer or null (all), got {size}")
    if size >= len(dataset):
        return dataset
    generator = torch.Generator().manual_seed(int(seed))
    positions = torch.randperm(len(dataset), generator=generator)[:size]
    return dataset.select(positions.sort().values.numpy())


def subset_record(dataset: Dataset, size: int | None, seed: int) -> dict[str, Any]:
    """How an evaluation split was drawn, in words a reader can redo without this package.

    `size` and `seed` are what `_subset` was given (`data.train_subset` / `data.test_subset`,
    the run's seed); the rule is the one `_subset` applies.
    """
    total = len(dataset._all_labels) if isinstance(dataset, ImageDataset) else len(dataset)  # type: ignore[arg-type]
    record: dict[str, Any] = {"size": len(dataset), "of": total}  # type: ignore[arg-type]
    if size is None or size >= total:
        record["rule"] = "all items, in the split's order"
    else:
        record["rule"] = (
            f"positions sorted(torch.randperm({total}, generator=torch.Generator()"
            f".manual_seed({seed}))[:{size}]) of the split, in its order"
        )
    return record


def build_ssl_dataset(data_cfg: Any, transform: Transform, seed: int) -> ImageDataset:
    """The split used for self-supervised training, with `data.train_subset` applied.

    Items are `(transform(image), label)`: images are PIL 'L' (1 channel) or 'RGB' (3), the
    transform is typically a lightly multi-view transform (the item is then a list of views),
    and the label is -1 for unlabelled images (STL-10's unlabeled split, imagefolder with
    labelled=false). Fashion-MNIST, digits and CIFAR train on their train split, so the
    subset equals `build_eval_datasets`' train subset for the same seed.

    Raises:
        UserError: the data are missing, cannot be downloaded, or are unreadable.
    """
    spec = _spec(data_cfg)
    dataset = spec.load(data_cfg, "ssl", transform)
    assert dataset is not None  # every data set has a training split
    return _subset(dataset, data_cfg.train_subset, seed, "data.train_subset")


def build_eval_datasets(
    data_cfg: Any, seed: int, normalize: bool = True
) -> tuple[ImageDataset, ImageDataset | None]:
    """(train split, test split or None) with `eval_transform`; items `(CxHxW float tensor,
    int label)`. `data.train_subset` and `data.test_subset` apply, seeded with `seed`.

    The test split is None only for imagefolder without `data.test_root`.

    Raises:
        UserError: the data are missing, cannot be downloaded, or are unreadable.
    """
    spec = _spec(data_cfg)
    transform = eval_transform(data_info(data_cfg), normalize=normalize)
    train = spec.load(data_cfg, "train", transform)
    assert train is not None
    train = _subset(train, data_cfg.train_subset, seed, "data.train_subset")
    test = spec.load(data_cfg, "test", transform)
    if test is not None:
        test = _subset(test, data_cfg.test_subset, seed, "data.test_subset")
    return train, test
