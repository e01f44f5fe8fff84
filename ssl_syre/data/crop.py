"""Batched random resized crop: torchvision's box sampling and PIL's resampling, per sample.

Crop boxes are sampled as torchvision's `RandomResizedCrop.get_params` does (10 tries, area and
log-ratio uniform, center-crop fallback), vectorized by hand because kornia's generator differs
in its fallback; they are resampled by hand with PIL's own filter weights (antialiased when
shrinking, clamped at the crop's border) as two batched matrix products, because neither
torchvision's `roi_align` nor kornia's crop-and-warp reproduces PIL there.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# torchvision's RandomResizedCrop defaults, which lightly keeps.
CROP_RATIO = (3 / 4, 4 / 3)
CROP_TRIES = 10


def sample_crop_boxes(
    count: int,
    height: int | Tensor,
    width: int | Tensor,
    min_scale: float,
    generator: torch.Generator,
    max_scale: float = 1.0,
) -> Tensor:
    """(count, 4) integer pixel boxes (x0, y0, x1, y1), as RandomResizedCrop.get_params with
    scale=(min_scale, max_scale).

    Each sample takes its first of 10 tries whose box fits; samples with none fall back to
    the largest centre crop within the allowed aspect ratios, as torchvision does. `height`
    and `width` are one image size for all, or (count,) tensors of each image's own size.
    """
    device = generator.device
    height = torch.as_tensor(height, dtype=torch.float32, device=device).expand(count)
    width = torch.as_tensor(width, dtype=torch.float32, device=device).expand(count)
    height_, width_ = height.unsqueeze(1), width.unsqueeze(1)
    draws = torch.rand(count, CROP_TRIES, 4, generator=generator, device=device)
    target_area = height_ * width_ * (min_scale + (max_scale - min_scale) * draws[..., 0])
    log_low, log_high = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    ratio = torch.exp(log_low + (log_high - log_low) * draws[..., 1])
    w = torch.round(torch.sqrt(target_area * ratio))
    h = torch.round(torch.sqrt(target_area / ratio))
    fits = (w > 0) & (h > 0) & (w <= width_) & (h <= height_)
    # randint(0, H - h + 1) from a uniform draw; min() guards the draw 1.0 - ulp at the edge.
    top = torch.minimum(torch.floor(draws[..., 2] * (height_ - h + 1)), height_ - h)
    left = torch.minimum(torch.floor(draws[..., 3] * (width_ - w + 1)), width_ - w)
    first = torch.argmax(fits.int(), dim=1, keepdim=True)  # first try that fits (0 if none)
    any_fit = fits.any(dim=1)

    def pick(values: Tensor) -> Tensor:
        return values.gather(1, first).squeeze(1)

    w, h, top, left = pick(w), pick(h), pick(top), pick(left)
    in_ratio = width / height
    tall, wide = in_ratio < CROP_RATIO[0], in_ratio > CROP_RATIO[1]
    fallback_w = torch.where(wide, torch.round(height * CROP_RATIO[1]), width)
    fallback_h = torch.where(tall, torch.round(width / CROP_RATIO[0]), height)
    w = torch.where(any_fit, w, fallback_w)
    h = torch.where(any_fit, h, fallback_h)
    top = torch.where(any_fit, top, torch.floor((height - fallback_h) / 2))
    left = torch.where(any_fit, left, torch.floor((width - fallback_w) / 2))
    return torch.stack([left, top, left + w, top + h], dim=1)


def _triangle(distance: Tensor) -> Tensor:
    return torch.clamp(1 - distance, min=0)


def _cubic(distance: Tensor) -> Tensor:
    """PIL's bicubic filter (Keys, a = -0.5), zero from distance 2 on."""
    a = -0.5
    near = ((a + 2) * distance - (a + 3)) * distance * distance + 1
    far = (((distance - 5) * distance + 8) * distance - 4) * a
    return torch.where(distance < 1, near, torch.where(distance < 2, far, 0.0))


# PIL's resampling filters by torchvision's interpolation names.
FILTERS = {"bilinear": _triangle, "bicubic": _cubic}


def resize_weights(
    start: Tensor, length: Tensor, in_size: int, out_size: int, interpolation: str = "bilinear"
) -> Tensor:
    """(B, out_size, in_size) rows of PIL's resize of the pixels [start, start+length).

    PIL's filter (triangle for bilinear, Keys cubic for bicubic), widened by the scale when
    shrinking (its antialiasing), each row normalised over the pixels inside the crop: what
    PIL computes after cropping.
    """
    scale = (length / out_size).unsqueeze(1)  # (B, 1)
    support = torch.clamp(scale, min=1.0)
    centre = start.unsqueeze(1) + (torch.arange(out_size, device=start.device) + 0.5) * scale
    pixel = torch.arange(in_size, device=start.device) + 0.5  # (in,)
    distance = (pixel - centre.unsqueeze(2)).abs() / support.unsqueeze(2)
    weights = FILTERS[interpolation](distance)
    inside = (pixel >= start.view(-1, 1, 1)) & (pixel < (start + length).view(-1, 1, 1))
    weights = weights * inside
    return weights / weights.sum(dim=2, keepdim=True)


def resized_crop(
    images: Tensor, boxes: Tensor, size: int, interpolation: str = "bilinear"
) -> Tensor:
    """Crop each image to its box (x0, y0, x1, y1) and resize to size x size, as PIL's
    resize after a crop: two batched matrix products with per-sample weights.

    Written by hand: torchvision's `roi_align` (faster than kornia's crop on CPU) samples across the
    crop's border and averages without PIL's triangle weights; these weights are PIL's.
    Bicubic overshoots, so each pass is clipped to [0, 1] as PIL clips its 8-bit passes
    (horizontal first, then vertical).
    """
    _, _, height, width = images.shape
    boxes = boxes.to(images.dtype)
    rows = resize_weights(boxes[:, 1], boxes[:, 3] - boxes[:, 1], height, size, interpolation)
    columns = resize_weights(boxes[:, 0], boxes[:, 2] - boxes[:, 0], width, size, interpolation)
    if interpolation == "bilinear":  # non-negative weights: nothing to clip
        return rows.unsqueeze(1) @ images @ columns.transpose(1, 2).unsqueeze(1)
    horizontal = (images @ columns.transpose(1, 2).unsqueeze(1)).clamp_(0.0, 1.0)
    return (rows.unsqueeze(1) @ horizontal).clamp_(0.0, 1.0)
