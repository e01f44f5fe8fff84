"""The device path's multi-crop pieces: crop scale ranges (min and max), PIL's bicubic resize,
and DINO's view transform read as a recipe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightly.transforms.dino_transform import DINOViewTransform
from PIL import Image
from scipy.stats import ks_2samp
from torchvision import transforms as T

from ssl_syre.data.augment import ViewRecipe, resized_crop, sample_crop_boxes

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("channels", [1, 3])
def test_bicubic_resized_crop_matches_pil_to_its_rounding(channels: int) -> None:
    """PIL rounds each 8-bit pass (the second rounding then goes through bicubic's negative
    lobes: up to 1.5 levels) and clips the overshoot; we clip per pass too."""
    rng = np.random.default_rng(channels)
    shape = (28, 28) if channels == 1 else (40, 36, 3)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    image = Image.fromarray(pixels)
    tensor = torch.from_numpy(pixels).float().div(255)
    tensor = tensor[None, None] if channels == 1 else tensor.permute(2, 0, 1)[None]
    for box, size in [((3, 5, 20, 19), 12), ((0, 0, 28, 28), 32), ((2, 7, 27, 26), 16)]:
        theirs = np.asarray(image.crop(box).resize((size, size), Image.BICUBIC)) / 255
        ours = resized_crop(tensor, torch.tensor([box]), size, "bicubic")[0]
        ours = ours[0] if channels == 1 else ours.permute(1, 2, 0)
        difference = np.abs(ours.numpy() - theirs) * 255
        assert difference.max() <= 1.5 and difference.mean() < 0.5, box
    bilinear = resized_crop(tensor, torch.tensor([(3, 5, 20, 19)]), 12)
    assert not torch.equal(
        bilinear, resized_crop(tensor, torch.tensor([(3, 5, 20, 19)]), 12, "bicubic")
    )


def test_crop_areas_follow_torchvisions_scale_range() -> None:
    """Boxes with scale=(0.05, 0.4) against RandomResizedCrop.get_params on the same image."""
    count, size = 2000, 32
    boxes = sample_crop_boxes(count, size, size, 0.05, torch.Generator().manual_seed(0), 0.4)
    ours = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).float() / size**2
    torch.manual_seed(0)
    image = torch.zeros(1, size, size)
    theirs = []
    for _ in range(count):
        _, _, h, w = T.RandomResizedCrop.get_params(image, scale=(0.05, 0.4), ratio=(3 / 4, 4 / 3))
        theirs.append(h * w / size**2)
    assert ks_2samp(ours.numpy(), np.array(theirs)).pvalue > 1e-3
    assert ours.max() <= 0.45 and ours.min() >= 0.03  # rounding of w and h aside


def test_dino_view_transform_reads_as_a_recipe() -> None:
    recipe = ViewRecipe.from_lightly(
        DINOViewTransform, crop_size=12, crop_scale=(0.05, 0.4), normalize=None
    )
    assert (recipe.input_size, recipe.min_scale, recipe.max_scale) == (12, 0.05, 0.4)
    assert recipe.interpolation == "bicubic" and recipe.solarization_prob == 0.2
