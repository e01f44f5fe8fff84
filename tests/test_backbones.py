"""Backbones: a ViT whose patches do not tile the image is refused when built, with fixes that work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ssl_syre.backbones import create_backbone, has_stem_max_pool
from ssl_syre.config import load_config
from ssl_syre.data import data_info
from ssl_syre.errors import UserError
from ssl_syre.methods import METHODS
from tests.conftest import train_in_process

VIT = [
    "backbone.name=test_vit",  # 16-px patches
    "data.name=digits",
    "method_kwargs.projection_hidden_dim=32",
    "method_kwargs.projection_output_dim=16",
]


def build(*overrides: str):
    cfg = load_config(None, [*VIT, *overrides])
    return METHODS[cfg.method](cfg, data_info(cfg.data))


def test_patch_size_that_does_not_divide_the_image_is_refused_with_its_fixes() -> None:
    with pytest.raises(UserError) as info:
        build("data.image_size=28")
    message = str(info.value)
    assert "16-px patches" in message and "data.image_size=28" in message
    for fix in ("data.image_size=32", "backbone.kwargs.patch_size=", "dynamic_img_pad=true"):
        assert fix in message


@pytest.mark.parametrize(
    "fix",
    ["data.image_size=32", "backbone.kwargs.patch_size=4", "backbone.kwargs.dynamic_img_pad=true"],
)
def test_each_proposed_fix_gives_a_vit_that_runs(fix: str, one_thread: None) -> None:
    extra = [] if fix.startswith("data.") else ["data.image_size=28"]
    model = build(fix, *extra)
    size = model.info.image_size
    features = model.backbone(torch.randn(2, 1, size, size))
    assert features.shape == (2, model.feature_dim) and torch.isfinite(features).all()


def test_a_vit_built_for_another_size_is_refused() -> None:
    cfg = load_config(None, [*VIT, "backbone.name=vit_tiny_patch16_224", "data.image_size=32"])
    cfg.backbone.kwargs = {"img_size": 224}
    with pytest.raises(UserError, match="224-px images but data.image_size=32"):
        METHODS[cfg.method](cfg, data_info(cfg.data))


@pytest.mark.slow
def test_a_vit_at_32_px_trains_evaluates_and_exports(tmp_path: Path, one_thread: None) -> None:
    run_dir = train_in_process(
        tmp_path, "backbone.name=test_vit", "data.image_size=32", "eval.linear_epochs=1"
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["run"]["steps"] == 3
    assert {r["features"] for r in metrics["knn"]} == {"raw_pixels", "backbone", "projector"}
    exported = json.loads((run_dir / "export" / "config.json").read_text())
    assert (
        exported["architecture"] == "test_vit"
        and exported["pretrained_cfg"]["input_size"][-1] == 32
    )


def test_stem_max_pool_false_doubles_the_first_stage_map_and_keeps_the_weights() -> None:
    images = torch.randn(2, 1, 28, 28)
    pooled = create_backbone("test_resnet", in_chans=1)
    unpooled = create_backbone("test_resnet", in_chans=1, stem_max_pool=False)
    # Same parameters (the pool has none); test_resnet's 28-px input reaches stage 1 at 14x14
    # instead of 7x7, so its last map is 2x2 instead of 1x1.
    assert pooled.state_dict().keys() == unpooled.state_dict().keys()
    assert pooled.forward_features(images).shape[-2:] == (1, 1)
    assert unpooled.forward_features(images).shape[-2:] == (2, 2)
    assert isinstance(unpooled.maxpool, torch.nn.Identity)


def test_stem_max_pool_false_leaves_a_backbone_without_one_as_it_is() -> None:
    # The quick start's config sets it; `python train.py method=mae` builds a ViT on top.
    vit = create_backbone("test_vit", in_chans=1, stem_max_pool=False)
    assert not hasattr(vit, "maxpool")
    assert vit.state_dict().keys() == create_backbone("test_vit", in_chans=1).state_dict().keys()


@pytest.mark.parametrize(
    ("name", "expected"), [("test_resnet", True), ("test_vit", False), ("no_such_model", True)]
)
def test_has_stem_max_pool_reads_the_architecture_without_building_weights(
    name: str, expected: bool
) -> None:
    assert has_stem_max_pool(name) is expected
