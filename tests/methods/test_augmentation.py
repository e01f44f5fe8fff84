"""The methods' device augmentation: views in the step, under bf16 autocast and channels_last."""

from __future__ import annotations

import pytest
import torch

from ssl_syre.methods import METHODS
from tests.conftest import build_method

pytestmark = pytest.mark.usefixtures("one_thread")


def build(method: str, *extra: str):
    return build_method(method, *extra)[0]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_step_makes_normalised_views_from_uint8(method: str) -> None:
    model = build(method)
    images = torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8)
    views = model.views((images, torch.zeros(8)), batch_idx=0)
    # DINO: 2 global + local crops; MAE: one view.
    assert len(views) == len(model.augment.recipes) >= (1 if method == "mae" else 2)
    size = model.info.image_size  # 16 px digits; 32 for the other ViT-only methods
    assert views[0].shape == (8, 1, size, size) and views[0].dtype == torch.float32
    if len(views) > 1:
        assert not torch.equal(views[0], views[1])
    assert torch.equal(views[0], model.views((images, torch.zeros(8)), batch_idx=0)[0])
    assert not torch.equal(views[0], model.views((images, torch.zeros(8)), batch_idx=1)[0])
    assert model.state_dict().keys() == build(method, "data.augment_on=workers").state_dict().keys()


def test_bf16_autocast_and_channels_last() -> None:
    model = build("simclr", "backbone.channels_last=true")
    images = torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        views = model.views((images, None), batch_idx=0)
        loss = model.training_loss(views)
    assert all(view.dtype == torch.float32 for view in views)  # augmentation is not autocast
    assert all(view.is_contiguous(memory_format=torch.channels_last) for view in views)
    assert torch.isfinite(loss)


def test_views_follow_the_weights_dtype_under_true_precisions() -> None:
    model = build("simclr", "syre.enabled=false").to(torch.float64)
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    views = model.views((images, None), batch_idx=0)
    assert views[0].dtype == torch.float64 and torch.isfinite(model.training_loss(views))


def test_workers_path_passes_the_loaders_views_through() -> None:
    model = build("simclr", "data.augment_on=workers")
    assert model.augment is None
    views = [torch.randn(4, 1, 16, 16) for _ in range(2)]
    assert model.views((views, None), batch_idx=0) == views


@pytest.mark.slow
def test_device_path_trains_under_bf16_mixed_and_channels_last(tmp_path) -> None:
    from tests.conftest import train_in_process

    run = train_in_process(
        tmp_path,
        "trainer.precision=bf16-mixed",
        "backbone.channels_last=true",
        # 32 px, not TINY's 16: at 16 px test_resnet's last stage convolves a 1 x 1 map with
        # stride 2, and torch's CPU bf16 backward of that conv returns NaN weight gradients
        # in some runs of the very same inputs (seen in 6 of 8; none of 8 at 32 px).
        "data.image_size=32",
        "eval.online_every_n_epochs=0",
        "eval.linear_probe=false",
    )
    assert (run / "metrics.json").is_file()
