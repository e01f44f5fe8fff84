"""Backbone factory: any timm model as a feature extractor, with optional small-image stems."""

from __future__ import annotations

import math
from typing import Any

import timm
import torch
from timm.layers import PatchEmbed
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


def drop_stem_max_pool(model: nn.Module) -> nn.Module:
    """Drop a ResNet's stem max-pool and keep its strided first conv (for 28x28 inputs).

    The first stage then sees a 14x14 map instead of 7x7 at 28 px, for about twice the step
    time: the quick start's best use of that time (benchmarks/results/quickstart.md). timm has
    no argument for it either (`replace_stem_pool` swaps the pool for a strided conv). A backbone
    without a stem max-pool (a ViT, as `python train.py method=mae` builds on the quick start's
    config) has nothing to drop and is left as it is.
    """
    if hasattr(model, "maxpool"):
        model.maxpool = nn.Identity()
    return model


def has_stem_max_pool(name: str, kwargs: dict[str, Any] | None = None) -> bool:
    """Whether timm's `name` has a stem max-pool (a ResNet) for `drop_stem_max_pool` to drop.

    Built on the meta device (no memory, no weights), so the config can be checked before the
    run; a model timm cannot build counts as having one, and the build itself then says why.
    """
    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False, num_classes=0, **(kwargs or {}))
    except (RuntimeError, TypeError):  # unknown name or arguments: create_backbone says so
        return True
    return hasattr(model, "maxpool")


def custom_stem(
    small_image_stem: bool = False, stem_max_pool: bool = True, has_max_pool: bool = True
) -> dict[str, bool]:
    """The stem settings that differ from timm's own stem, as export model arguments.

    timm does not know these keys, so `timm.create_model("local-dir:...")` refuses such an
    export ("unexpected keyword argument") rather than building the wrong stem silently; an
    empty dict means timm alone rebuilds the backbone. `stem_max_pool=False` differs only on a
    backbone that `has_max_pool` (not a ViT: `drop_stem_max_pool` leaves it as it is).
    """
    args: dict[str, bool] = {}
    if small_image_stem:
        args["small_image_stem"] = True
    if not stem_max_pool and has_max_pool:
        args["stem_max_pool"] = False
    return args


def apply_custom_stem(
    model: nn.Module, small_image_stem: bool = False, stem_max_pool: bool = True
) -> nn.Module:
    """Apply the stems timm cannot express (`custom_stem`'s settings) to a timm model."""
    if small_image_stem:
        apply_small_image_stem(model)
    if not stem_max_pool:
        drop_stem_max_pool(model)
    return model


def create_backbone(
    name: str,
    in_chans: int = 3,
    small_image_stem: bool = False,
    stem_max_pool: bool = True,
    pretrained: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Create a timm model without its classifier; `model.num_features` is the feature size.

    Args:
        name: any name from `timm.list_models()`.
        in_chans: input channels of the data (1 for Fashion-MNIST).
        small_image_stem: see `apply_small_image_stem`.
        stem_max_pool: False drops a ResNet's stem max-pool, see `drop_stem_max_pool`.
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
    return apply_custom_stem(model, small_image_stem, stem_max_pool)


def patch_embed_of(model: nn.Module) -> PatchEmbed | None:
    """The model's timm `PatchEmbed` (a ViT's), or None for a backbone without one."""
    return next((m for m in model.modules() if isinstance(m, PatchEmbed)), None)


def patch_size_of(model: nn.Module) -> int | None:
    """The patch size of a patch-embedding backbone (a timm ViT), else None."""
    embed = patch_embed_of(model)
    return None if embed is None else int(embed.patch_size[0])


def check_input_size(model: nn.Module, name: str, image_size: int, fix: str | None = None) -> None:
    """Refuse an image size a patch-embedding backbone (a timm ViT) cannot cut into patches.

    timm's `PatchEmbed` asserts in its forward pass, that is in the middle of training, that
    the patch size divides the input (unless `dynamic_img_pad`), and that a model with a fixed
    input size gets exactly that size; this says so when the backbone is built.

    Args:
        fix: What to do instead of the default advice, which changes the model (backbone
            settings); evaluation, whose weights fix the model, passes its own.

    Raises:
        UserError: naming both numbers and the settings that fix it.
    """
    embed = patch_embed_of(model)
    if embed is None or embed.img_size is None:
        return
    size = (image_size, image_size)
    if embed.strict_img_size and tuple(embed.img_size) != size:
        raise UserError(
            f"backbone.name={name} is built for {embed.img_size[0]}-px images but "
            f"data.image_size={image_size}; "
            + (
                fix
                or "remove backbone.kwargs.img_size (it follows data.image_size) or set "
                f"data.image_size={embed.img_size[0]}"
            )
        )
    patch = int(embed.patch_size[0])
    if embed.dynamic_img_pad or image_size % patch == 0:
        return
    divisors = [str(d) for d in range(3, min(patch, image_size // 2) + 1) if image_size % d == 0]
    patch_fix = (
        f"backbone.kwargs.patch_size={' or '.join(divisors)} (dividing {image_size}), "
        if divisors
        else ""
    )
    raise UserError(
        f"backbone.name={name} cuts {patch}-px patches, which do not divide "
        f"data.image_size={image_size}; "
        + (
            fix
            or f"set data.image_size={math.ceil(image_size / patch) * patch} (a multiple of "
            f"{patch}), {patch_fix}or backbone.kwargs.dynamic_img_pad=true (timm pads each image)"
        )
    )


def backbone_kwargs_for_size(name: str, image_size: int) -> dict[str, Any]:
    """Arguments some timm families need to match the input size: ViT-like models, whose
    pretrained config says `fixed_input_size`, take `img_size`."""
    cfg = timm.models.get_pretrained_cfg(name)
    return {"img_size": image_size} if cfg is not None and cfg.fixed_input_size else {}
