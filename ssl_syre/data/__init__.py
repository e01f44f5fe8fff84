"""Data: data sets held as uint8 arrays (datasets.py), image folders (imagefolder.py), the
registry and build functions (registry.py), seeded subsets (subsets.py), per-image transforms
(transforms.py), batched augmentation on the training device (augment.py, crop.py) and the training
loaders (loaders.py)."""

from ssl_syre.data.datasets import (
    DEBIAN_FASHION_MNIST,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ArrayImageDataset,
    DataInfo,
    DatasetSpec,
    ImageDataset,
    read_idx,
)
from ssl_syre.data.imagefolder import IMAGE_EXTENSIONS, ImageFileDataset
from ssl_syre.data.registry import (
    BLUR_MAX_SIZE,
    DATASETS,
    build_eval_datasets,
    build_ssl_dataset,
    check_config,
    data_info,
    ssl_transform_kwargs,
)
from ssl_syre.data.subsets import LabelledSubset, seeded_subset, subset_record, whole_split
from ssl_syre.data.transforms import eval_transform, uint8_transform

__all__ = [
    "BLUR_MAX_SIZE",
    "DATASETS",
    "DEBIAN_FASHION_MNIST",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "ArrayImageDataset",
    "DataInfo",
    "DatasetSpec",
    "ImageDataset",
    "ImageFileDataset",
    "LabelledSubset",
    "build_eval_datasets",
    "build_ssl_dataset",
    "check_config",
    "data_info",
    "eval_transform",
    "read_idx",
    "seeded_subset",
    "ssl_transform_kwargs",
    "subset_record",
    "uint8_transform",
    "whole_split",
]
