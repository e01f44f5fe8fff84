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
