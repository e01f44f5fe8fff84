"""Per-image PIL transforms: the deterministic eval transform, and the decode step that image
folders run in DataLoader workers before the device path augments the batch."""

from __future__ import annotations

from typing import Any

from torchvision import transforms as T

from ssl_syre.data.datasets import DataInfo


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


def uint8_transform(info: DataInfo) -> T.Compose:
    """Decode step of the device path for image folders: resize the shorter side to
    `image_size`, centre-crop, and return a uint8 (C, H, W) tensor.

    Only this runs per image (in DataLoader workers); random crops, flips, jitter and the rest
    run batched on the training device. Cropping to the centre square first is what keeps the
    batch one tensor; the random crop then samples from that square, not the whole picture.
    """
    return T.Compose(
        [
            T.Resize(info.image_size, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop(info.image_size),
            T.PILToTensor(),
        ]
    )
