"""Per-image PIL transforms: the deterministic eval transform, and the decode step that image
folders run in DataLoader workers before the device path augments the batch."""

from __future__ import annotations

import math
from typing import Any

import torch
from PIL import Image
from torch import Tensor
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


def decode_size(image_size: int, min_scale: float) -> int:
    """Side of the square that image folders decode to on the device path.

    The smallest crop (min_scale of the picture's area) then still holds about image_size
    pixels a side, so views are as sharp as lightly's crops of the full-size file; capped at
    4 x image_size (min_scale 1/16), which bounds a batch's memory.
    """
    return min(math.ceil(image_size / math.sqrt(min_scale)), 4 * image_size)


class DeviceDecode:
    """Decode step of the device path for image folders: the whole picture, resized to a
    `size` x `size` square (its aspect squashed), as uint8 (C, size, size), with the picture's
    own (height, width).

    Only this runs per image (in DataLoader workers); crops, flips, jitter and the rest run
    batched on the training device, which draws each crop box in the picture's own pixels, as
    lightly's RandomResizedCrop on the file does, and maps it into the square: the resize from
    the square box to the view then restores the picture's aspect. Every image of a batch has
    one shape, and no part of a picture is lost (a centre square would never show the outer
    strips of a 4:3 photo). Squashing rather than padding spends every decoded pixel on the
    picture; see `decode_size` for how many.

    Lanczos, not bilinear: the view is resampled twice (here, then on the device), and a
    bilinear first pass blurs the crops of a real photo measurably more than lightly's single
    pass (tests/data/test_transforms.py); Lanczos keeps the detail the second pass needs.
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self.resize = T.Resize(
            (self.size, self.size), interpolation=T.InterpolationMode.LANCZOS, antialias=True
        )

    def __call__(self, image: Image.Image) -> tuple[Tensor, Tensor]:
        picture = torch.tensor([image.height, image.width], dtype=torch.int64)
        return T.functional.pil_to_tensor(self.resize(image)), picture


def uint8_transform(info: DataInfo, min_scale: float = 1.0) -> DeviceDecode:
    """`DeviceDecode` at `decode_size(info.image_size, min_scale)`; pass the smallest
    min_scale of the method's views."""
    return DeviceDecode(decode_size(info.image_size, min_scale))
