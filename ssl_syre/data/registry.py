"""The data set registry and the public entry points: describe, build SSL and eval splits."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig
from torch.utils.data import Dataset

from ssl_syre.config import DataConfig
from ssl_syre.data.datasets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataInfo,
    DatasetSpec,
    Transform,
    load_digits,
    load_fashion_mnist,
    torchvision_loader,
)
from ssl_syre.data.imagefolder import class_folders, imagefolder_root, load_imagefolder
from ssl_syre.data.subsets import seeded_subset
from ssl_syre.data.transforms import eval_transform
from ssl_syre.errors import UserError, check_choice, suggest

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
            load=load_fashion_mnist,
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
            load=load_digits,
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
            load=torchvision_loader(
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
            load=torchvision_loader(
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
            load=torchvision_loader(
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
            load=load_imagefolder,
        ),
    )
}


# --------------------------------------------------------------------------------------------
# Public API


def _spec(data_cfg: DataConfig) -> DatasetSpec:
    name = data_cfg.name
    if name not in DATASETS:
        raise UserError(
            f"unknown data.name '{name}'{suggest(name, DATASETS)}; choose one of: "
            f"{', '.join(DATASETS)}"
        )
    return DATASETS[name]


def data_info(data_cfg: DataConfig) -> DataInfo:
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
        root = imagefolder_root(data_cfg.root, "data.root")
        num_classes = len(class_folders(root, "data.root")) if data_cfg.labelled else 0
    return DataInfo(
        name=spec.name,
        in_chans=spec.in_chans,
        num_classes=num_classes,
        image_size=image_size,
        mean=spec.mean,
        std=spec.std,
    )


# Lightly's CIFAR-10 recipe turns blur off: at 32 px and below it wipes out the image.
BLUR_MAX_SIZE = 32


def ssl_transform_kwargs(info: DataInfo, data_cfg: DataConfig) -> dict[str, Any]:
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


def build_ssl_dataset(data_cfg: DataConfig, transform: Transform | None, seed: int) -> Dataset:
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
    return seeded_subset(dataset, data_cfg.train_subset, seed, "data.train_subset")


def build_eval_datasets(
    data_cfg: DataConfig, seed: int, normalize: bool = True
) -> tuple[Dataset, Dataset | None]:
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
    train = seeded_subset(train, data_cfg.train_subset, seed, "data.train_subset")
    test = spec.load(data_cfg, "test", transform)
    if test is not None:
        test = seeded_subset(test, data_cfg.test_subset, seed, "data.test_subset")
    return train, test


def check_config(cfg: DictConfig) -> None:
    """Check that `data.name` is a registered data set (run by `ssl_syre.config.validate`)."""
    check_choice("data.name", cfg.data.name, DATASETS)
