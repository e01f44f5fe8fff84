"""Tests for the per-image transforms and lightly's settings per data set."""

from __future__ import annotations

import numpy as np
import pytest
import torch
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
# The device path's decode step for image folders


def view_statistics(views: torch.Tensor) -> dict[str, np.ndarray]:
    """Per view: sharpness (mean absolute gradient along x and y) and color (channel means)."""
    return {
        "gradient_x": (views[..., 1:] - views[..., :-1]).abs().mean((1, 2, 3)).numpy(),
        "gradient_y": (views[..., 1:, :] - views[..., :-1, :]).abs().mean((1, 2, 3)).numpy(),
        **{f"mean_{c}": views[:, c].mean((1, 2)).numpy() for c in range(3)},
        "std": views.std((1, 2, 3)).numpy(),
    }


@pytest.mark.usefixtures("one_thread")
def test_image_folder_views_on_the_device_match_lightlys_on_a_real_photo() -> None:
    """A real 427x640 photo at 64 px: the device path's crops (from `DeviceDecode`) are as
    sharp as lightly's crops of the full file and show the same parts of it (two-sample KS).

    A centre square resized to 64 px first gave 0.77x lightly's horizontal gradient and never
    showed the photo's outer strips.
    """
    from lightly.transforms import SimCLRViewTransform
    from scipy.stats import ks_2samp
    from sklearn.datasets import load_sample_image

    from ssl_syre.data.augment import BatchAugment, ViewRecipe

    photo = Image.fromarray(load_sample_image("china.jpg"))
    assert photo.size == (640, 427)
    # Crop and flip only: color, grey and blur are the same code on either path.
    settings = dict(input_size=64, cj_prob=0.0, random_gray_scale=0.0, gaussian_blur=0.0)
    count = 400
    lightly_view = SimCLRViewTransform(**settings, normalize=None)
    torch.manual_seed(0)
    reference = torch.stack([lightly_view(photo) for _ in range(count)])

    recipe = ViewRecipe.from_lightly(SimCLRViewTransform, **settings, normalize=None)
    decode = data.uint8_transform(
        data.DataInfo("photo", 3, 0, 64, (0.5,) * 3, (0.5,) * 3), recipe.min_scale
    )
    square, size = decode(photo)
    assert square.shape == (3, 227, 227) and size.tolist() == [427, 640]  # 64 / sqrt(0.08)
    augment = BatchAugment([recipe], compile_jitter=False)
    images, sizes = square.expand(count, -1, -1, -1), size.expand(count, -1)
    views = augment(images, torch.Generator().manual_seed(0), sizes)[0]

    ours, theirs = view_statistics(views), view_statistics(reference)
    # Within 7%: the device's resampling of the full-size photo itself gives 0.97.
    ratio = ours["gradient_x"].mean() / theirs["gradient_x"].mean()
    assert 0.93 < ratio < 1.07, ratio
    for name in ours:
        assert ks_2samp(ours[name], theirs[name]).pvalue > 1e-3, name
