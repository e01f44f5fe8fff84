"""Backbone factory: any timm model as a feature extractor, with an optional small-image stem."""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

from ssl_syre.errors import UserError


def apply_small_image_stem(model: nn.Module) -> nn.Module:
    """Replace a ResNet's stem by a 3x3 stride-1 conv and drop its max-pool (for 32x32 inputs).

    timm has no argument for this stem (its `stem_type` options all downsample), which is why
    it is done here and why such exports need `ssl_syre.load_backbone` to rebuild.
    """
    if not hasattr(model, "conv1") or not hasattr(model, "maxpool"):
        raise UserError(
            f"backbone.small_image_stem=true needs a timm ResNet (with conv1 and maxpool), "
            f"not {type(model).__name__}; set backbone.small_image_stem=false"
        )
    conv = model.conv1
    if isinstance(conv, nn.Sequential):  # deep stems (resnet*d, test_resnet): keep the last width
        first = conv[0]
        first.stride = (1, 1)
    else:
        model.conv1 = nn.Conv2d(
            conv.in_channels, conv.out_channels, kernel_size=3, stride=1, padding=1, bias=False
        )
    model.maxpool = nn.Identity()
    return model


def create_backbone(
    name: str,
    in_chans: int = 3,
    small_image_stem: bool = False,
    pretrained: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Create a timm model without its classifier; `model.num_features` is the feature size.

    Args:
        name: any name from `timm.list_models()`.
        in_chans: input channels of the data (1 for Fashion-MNIST).
        small_image_stem: see `apply_small_image_stem`.
        pretrained: load timm's pretrained weights (needs internet or a local HF cache).
        kwargs: passed to `timm.create_model` (img_size for ViTs, drop_path_rate, ...).
    """
    try:
        model = timm.create_model(
            name, pretrained=pretrained, num_classes=0, in_chans=in_chans, **kwargs
        )
    except TypeError as error:
        raise UserError(
            f"timm model '{name}' does not accept these arguments ({error}); check backbone.kwargs"
        ) from None
    except RuntimeError as error:
        if "Unknown model" in str(error):
            raise UserError(f"unknown backbone.name '{name}'") from None
        raise
    if small_image_stem:
        apply_small_image_stem(model)
    return model


def backbone_kwargs_for_size(name: str, image_size: int) -> dict[str, Any]:
    """Arguments some timm families need to match the input size: ViT-like models, whose
    pretrained config says `fixed_input_size`, take `img_size`."""
    cfg = timm.models.get_pretrained_cfg(name)
    return {"img_size": image_size} if cfg is not None and cfg.fixed_input_size else {}


@torch.no_grad()
def feature_dim(model: nn.Module) -> int:
    """Size of the pooled features a timm model without classifier returns."""
    return int(model.num_features)
