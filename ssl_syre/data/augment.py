"""Batched SSL augmentation on the training device: lightly's recipes, per-sample random.

lightly's transforms run per image, in PIL, in DataLoader workers; on a few CPU cores they cost
as much as the model, and on a GPU box they set the ceiling. Here a whole uint8 batch becomes
its views in a handful of tensor operations on the device that trains, each sample with its
own random crop, flip, jitter, grey, blur and solarization, drawn as lightly's transforms draw
them (`ViewRecipe.from_lightly` reads the parameters from lightly's own classes).

What does what, and why:
- Resized crop: `ssl_syre.data.crop` (torchvision's box sampling, PIL's resampling, batched).
- Flips, greyscale, solarization: one `torch.where` each.
- Colour jitter: kornia's torchvision-compatible adjustments (brightness, contrast with mean
  subtraction, saturation with grey subtraction, hue) with per-sample factors; the order is
  drawn per sample by hand, because kornia's ColorJitter draws one order for the whole batch
  while torchvision (hence lightly) draws one per image. Grey images skip saturation and hue,
  which PIL leaves unchanged on 'L' images.
- Gaussian blur: PIL's own approximation (what lightly's GaussianBlur runs): three passes of
  an extended box filter per axis with replicated edges, the box radius derived from sigma as
  PIL derives it, per-sample sigma; written by hand because kornia's sampled Gaussian with
  reflected borders spreads a pixel 3x less at small sigma and darkens bright edges.

Randomness comes from a generator seeded per batch from (seed, epoch, process rank, batch
index): resumed runs replay the same views, DDP ranks draw different ones, and nothing touches
the global random state.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import kornia
import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ssl_syre.data.crop import (  # noqa: F401 (re-exported: imported from augment)
    CROP_RATIO,
    CROP_TRIES,
    FILTERS,
    resize_weights,
    resized_crop,
    sample_crop_boxes,
)

# PIL's ImageOps.solarize threshold (lightly's RandomSolarization), on the [0, 1] scale.
SOLARIZE_THRESHOLD = 128 / 255
# ITU-R 601-2 luma, as PIL's convert('L') and torchvision's rgb_to_grayscale.
GREY_WEIGHTS = (0.299, 0.587, 0.114)
# Stream tag of the augmentation seeds, apart from callbacks.epoch_seed's streams 0-2.
_AUGMENT_STREAM = 3


@dataclass(frozen=True)
class ViewRecipe:
    """The settings of one lightly view transform (SimCLRViewTransform, BYOLView1Transform, ...).

    Field names and meanings are lightly's; build one with `from_lightly` so that defaults and
    overrides follow the installed lightly exactly.
    """

    input_size: int
    cj_prob: float
    cj_strength: float
    cj_bright: float
    cj_contrast: float
    cj_sat: float
    cj_hue: float
    min_scale: float
    random_gray_scale: float
    gaussian_blur: float
    sigmas: tuple[float, float]
    vf_prob: float
    hf_prob: float
    solarization_prob: float = 0.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    # Crop area range is [min_scale, max_scale] of the image (DINO's local crops: 0.05-0.4).
    max_scale: float = 1.0
    # Resampling of the crop: "bilinear" (torchvision's default) or "bicubic" (DINO's views).
    interpolation: str = "bilinear"
    # VICReg's views solarize before they blur, BYOL's after: the order of lightly's Compose.
    solarize_before_blur: bool = False

    @classmethod
    def from_lightly(
        cls,
        view_transform: type,
        defaults_from: type | None = None,
        crop: tuple[int, float, float] | None = None,
        **kwargs: Any,
    ) -> ViewRecipe:
        """The recipe of `view_transform(**kwargs)`: lightly's defaults, then `kwargs`.

        DINO's view transform names its crop `crop_size` and `crop_scale` (min, max), read as
        `input_size`, `min_scale` and `max_scale`; the crop's interpolation, which no lightly
        transform takes as a setting, is read from the built transform.

        `crop` is (size, min_scale, max_scale) of the bilinear RandomResizedCrop that lightly's
        MultiCropTranform (SwaVTransform) puts before a view transform that has no crop.

        `defaults_from` is a multi-view transform whose own defaults replace the view
        transform's (MoCoV2Transform builds SimCLRViewTransform with other jitter and crop
        settings; VICRegTransform passes sigmas its view transform does not default to).

        Raises:
            ValueError: a setting the device path does not implement (random rotation).
        """
        settings = _defaults(view_transform)
        unknown = set(kwargs) - set(settings)
        if unknown:
            raise ValueError(f"{view_transform.__name__} has no setting {sorted(unknown)}")
        if defaults_from is not None:
            shared = _defaults(defaults_from).items()
            settings.update({name: value for name, value in shared if name in settings})
        settings.update(kwargs)
        if "solarize_prob" in settings:  # VICReg's name for BYOL's solarization_prob
            settings["solarization_prob"] = settings.pop("solarize_prob")
        if settings.pop("rr_prob", 0.0):
            raise ValueError("random rotation (rr_prob > 0) is not implemented on the device path")
        settings.pop("rr_degrees", None)
        if "crop_size" in settings:
            settings["input_size"] = settings.pop("crop_size")
        if "crop_scale" in settings:
            settings["min_scale"], settings["max_scale"] = settings.pop("crop_scale")
        if crop is not None:
            settings["input_size"], settings["min_scale"], settings["max_scale"] = crop
        settings["interpolation"] = _crop_interpolation(view_transform(**kwargs))
        normalize = settings.pop("normalize", None)
        names = {field.name for field in fields(cls)}
        recipe = {name: value for name, value in settings.items() if name in names}
        recipe["sigmas"] = tuple(float(s) for s in recipe["sigmas"])
        recipe["min_scale"], recipe["max_scale"] = (
            float(recipe["min_scale"]),
            float(recipe.get("max_scale", 1.0)),
        )
        if normalize:
            recipe["mean"] = tuple(float(m) for m in normalize["mean"])
            recipe["std"] = tuple(float(s) for s in normalize["std"])
        recipe["solarize_before_blur"] = _solarizes_before_blur(view_transform)
        return cls(**recipe)


def _crop_interpolation(view_transform: Any) -> str:
    """The interpolation of the RandomResizedCrop in a lightly view transform's Compose."""
    for step in getattr(getattr(view_transform, "transform", None), "transforms", []):
        if hasattr(step, "interpolation") and hasattr(step, "scale"):
            name = str(getattr(step.interpolation, "value", step.interpolation)).lower()
            if name not in FILTERS:
                raise ValueError(f"{name} interpolation is not implemented on the device path")
            return name
    return "bilinear"


def _defaults(transform: type) -> dict[str, Any]:
    """The keyword defaults of a lightly transform's constructor."""
    return {
        name: parameter.default
        for name, parameter in inspect.signature(transform.__init__).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


def _solarizes_before_blur(view_transform: type) -> bool:
    """Whether lightly's view transform solarizes before it blurs, read from its Compose."""
    from lightly.transforms.gaussian_blur import GaussianBlur
    from lightly.transforms.solarize import RandomSolarization

    steps = [type(step) for step in view_transform().transform.transforms]
    if GaussianBlur not in steps or RandomSolarization not in steps:
        return False
    return steps.index(RandomSolarization) < steps.index(GaussianBlur)


def augment_seed(seed: int, epoch: int, rank: int, batch_index: int) -> int:
    """A 63-bit seed that depends only on (seed, epoch, rank, batch index)."""
    state = np.random.SeedSequence([seed, epoch, _AUGMENT_STREAM, rank, batch_index])
    return int(state.generate_state(1, dtype=np.uint64)[0]) & 0x7FFF_FFFF_FFFF_FFFF


def process_rank() -> int:
    """This process's global rank under torch.distributed, else 0."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


_CONSTANTS: dict[tuple[tuple[float, ...], torch.device, torch.dtype], Tensor] = {}


def _constant(values: tuple[float, ...], like: Tensor) -> Tensor:
    """`values` as a tensor on `like`'s device, made once per device: `new_tensor` would copy
    from the host, which waits for the GPU, at every call."""
    key = (values, like.device, like.dtype)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.tensor(values, dtype=like.dtype, device=like.device)
    return _CONSTANTS[key]


def _grey(images: Tensor) -> Tensor:
    weights = _constant(GREY_WEIGHTS, images).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def _brightness(images: Tensor, factor: Tensor) -> Tensor:
    # torchvision multiplies (blend with black); kornia's adjust_brightness adds.
    return (images * factor.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def _contrast(images: Tensor, factor: Tensor) -> Tensor:
    if images.shape[1] == 3:
        return kornia.enhance.adjust_contrast_with_mean_subtraction(images, factor).clamp_(0, 1)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    factor = factor.view(-1, 1, 1, 1)
    return (factor * images + (1 - factor) * mean).clamp_(0.0, 1.0)


def _saturation(images: Tensor, factor: Tensor) -> Tensor:
    return kornia.enhance.adjust_saturation_with_gray_subtraction(images, factor).clamp_(0, 1)


def _hue(images: Tensor, factor: Tensor) -> Tensor:
    # torchvision's hue factor is a fraction of the colour circle; kornia's is in radians.
    return kornia.enhance.adjust_hue(images, factor * (2 * math.pi)).clamp_(0.0, 1.0)


def color_jitter(
    images: Tensor,
    apply: Tensor,
    factors: Tensor,
    order: Tensor,
    adjustments: Sequence[int],
    masked: bool | None = None,
) -> Tensor:
    """torchvision's ColorJitter per sample: `factors` (B, 4) are brightness, contrast,
    saturation and hue; `order` (B, 4) a permutation per sample; `apply` (B,) who is jittered;
    `adjustments` the indices (0-3) that the recipe uses at all. A neutral factor skips that
    adjustment for that sample, as torchvision does.

    Two ways to give each sample its own order, chosen by device unless `masked` says:
    - masked (GPU): each adjustment runs on the whole batch at each of the four positions and
      `torch.where` keeps it for the samples whose turn it is. Four times the arithmetic, but
      no host sync: indexing the chosen rows waits for the GPU at each (position, adjustment),
      up to 16 times per view, which can make the augmentation slower than the model step
      (benchmarks/RESULTS.md).
    - indexed (CPU): each adjustment runs on the rows whose turn it is only; on a CPU that is
      4x less arithmetic, and a sync costs nothing.
    """
    steps = [_brightness, _contrast, _saturation, _hue]
    # Python scalars, not a tensor of neutral values: no host-to-device copy.
    neutral = torch.cat([factors[:, :3] != 1.0, factors[:, 3:] != 0.0], dim=1)
    active = apply.unsqueeze(1) & neutral
    if masked is None:
        masked = images.device.type != "cpu"
    output = images if masked else images.clone()
    for position in range(4):
        for step_index in adjustments:
            chosen = active[:, step_index] & (order[:, position] == step_index)
            step = steps[step_index]
            if masked:
                adjusted = step(output, factors[:, step_index])
                output = torch.where(chosen.view(-1, 1, 1, 1), adjusted, output)
            else:
                rows = chosen.nonzero().squeeze(1)
                if len(rows):
                    output[rows] = step(output[rows], factors[rows, step_index])
    return output


# PIL's GaussianBlur: passes of its extended box filter per axis (ImageFilter.GaussianBlur).
BLUR_PASSES = 3


def box_radius(sigma: Tensor, passes: int = BLUR_PASSES) -> Tensor:
    """PIL's extended box radius for a Gaussian of std `sigma` made of `passes` box passes.

    Integer part l and fraction a of the radius, from Gwosdek et al., "Theoretical foundations
    of Gaussian convolution by extended box filtering" (SSVM 2011), eqs. 7, 11 and 14, as
    PIL's `_gaussian_blur_radius` computes them.
    """
    variance = sigma * sigma / passes
    length = torch.sqrt(12.0 * variance + 1.0)
    whole = torch.floor((length - 1.0) / 2.0)
    fraction = (2 * whole + 1) * (whole * (whole + 1) - 3 * variance)
    fraction = fraction / (6 * (variance - (whole + 1) * (whole + 1)))
    return whole + fraction


def box_kernels(radius: Tensor, reach: int) -> Tensor:
    """(B, 2 reach + 1) taps of PIL's extended box of each radius: weight 1 within the
    integer radius l, the fraction a at l + 1, all over 2 radius + 1."""
    whole = torch.floor(radius).unsqueeze(1)
    offset = torch.arange(-reach, reach + 1, device=radius.device, dtype=radius.dtype).abs()
    fraction = (radius.unsqueeze(1) - whole).expand(-1, offset.numel())
    taps = torch.where(offset <= whole, torch.ones_like(fraction), fraction)
    taps = torch.where(offset <= whole + 1, taps, torch.zeros_like(fraction))
    return taps / (2 * radius.unsqueeze(1) + 1)


def box_blur_matrices(taps: Tensor, size: int, passes: int = BLUR_PASSES) -> Tensor:
    """(B, size, size): `passes` box passes along one axis of `size` pixels as one matrix per
    sample, each pass with its edges replicated (PIL clamps at every pass, so the passes do
    not merge into one longer kernel)."""
    count, width = taps.shape
    reach = width // 2
    offsets = torch.arange(-reach, reach + 1, device=taps.device)
    columns = (torch.arange(size, device=taps.device).unsqueeze(1) + offsets).clamp_(0, size - 1)
    box = torch.zeros(count, size, size, device=taps.device, dtype=taps.dtype)
    box.scatter_add_(
        2,
        columns.unsqueeze(0).expand(count, -1, -1),
        taps.unsqueeze(1).expand(-1, size, -1).contiguous(),
    )
    matrix = box
    for _ in range(passes - 1):
        matrix = box @ matrix
    return matrix


def gaussian_blur(
    images: Tensor, apply: Tensor, sigma: Tensor, largest: float, masked: bool | None = None
) -> Tensor:
    """PIL's GaussianBlur(radius=sigma) on the samples in `apply`, each with its own sigma.

    PIL (hence lightly) approximates the Gaussian by three extended box passes along each
    axis, clamping at the image's edges in every pass; here the passes of each axis are one
    matrix per sample, applied as two batched matrix products (as `resized_crop`), to the whole
    batch: unblurred samples are kept with `torch.where`, so nothing waits for the host. The
    taps reach as far as the recipe's `largest` sigma needs, so a sample's view does not depend
    on the other samples. PIL rounds to 8 bits after every pass and this does not: views differ
    from PIL's by that rounding, at most 3 levels of 255 (tests/data/test_augment.py).

    `masked` as in `color_jitter`: on a GPU (the default there) every sample is blurred and
    `torch.where` keeps the chosen ones; on a CPU only the chosen rows are, found with
    `nonzero` (half the arithmetic at lightly's p = 0.5; a sync is free on a CPU).
    """
    variance = largest * largest / BLUR_PASSES  # box_radius's integer part, in Python
    reach = math.floor((math.sqrt(12.0 * variance + 1.0) - 1.0) / 2.0) + 1
    height, width = images.shape[-2:]
    if masked is None:
        masked = images.device.type != "cpu"
    if not masked:  # CPU: only the chosen samples (a sync costs nothing there)
        chosen = apply.nonzero().squeeze(1)
        output = images.clone()
        output[chosen] = gaussian_blur(images[chosen], apply[chosen], sigma[chosen], largest, True)
        return output
    taps = box_kernels(box_radius(sigma.to(images.dtype)), reach)
    rows = box_blur_matrices(taps, height).unsqueeze(1)
    columns = rows if height == width else box_blur_matrices(taps, width).unsqueeze(1)
    blurred = rows @ images @ columns.transpose(-1, -2)
    return torch.where(apply.view(-1, 1, 1, 1), blurred, images)


class BatchAugment(nn.Module):
    """uint8 images (B, C, H, W) -> one normalised float view per recipe, per-sample random.

    Args:
        recipes: One `ViewRecipe` per view (SimCLR: the same recipe twice; BYOL: two; DINO:
            two global and N local ones, whose sizes differ).
        compile_jitter: On CUDA, run the colour jitter through `torch.compile`.

    Example:
        >>> augment = BatchAugment([recipe, recipe])
        >>> generator = torch.Generator().manual_seed(0)
        >>> view_0, view_1 = augment(images, generator)
    """

    def __init__(self, recipes: Sequence[ViewRecipe], compile_jitter: bool = True) -> None:
        super().__init__()
        self.recipes = list(recipes)
        # On a GPU the colour jitter is ~1,000 tiny kernels per batch, bound by their launches;
        # torch.compile fuses them (compiled once, on the first CUDA batch). Never on a CPU,
        # where the indexed jitter is compute-bound and compiling takes a minute or more.
        self.compile_jitter = compile_jitter
        self._compiled_jitter: Any = None
        for index, recipe in enumerate(self.recipes):
            if recipe.mean is not None:
                # Not persistent: derived from the config, so checkpoints stay as they were.
                shape = (1, len(recipe.mean), 1, 1)
                mean = torch.tensor(recipe.mean).view(shape)
                std = torch.tensor(recipe.std).view(shape)
                self.register_buffer(f"mean_{index}", mean, persistent=False)
                self.register_buffer(f"std_{index}", std, persistent=False)

    def forward(
        self, images: Tensor, generator: torch.Generator, sizes: Tensor | None = None
    ) -> list[Tensor]:
        """Views of `images`; `sizes` (B, 2) are the (height, width) of the pictures each image
        shows, squashed to (H, W) (`ssl_syre.data.transforms.DeviceDecode`): crops are then
        drawn as in those pictures. None: each image is the picture itself."""
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"expected uint8 images (B, C, H, W), got {images.dtype} {images.shape}"
            )
        # Float32 whatever the autocast context: the views feed the model, not the other way.
        with torch.autocast(images.device.type, enabled=False):
            pixels = images.float().div_(255.0)
            return [
                self.view(pixels, index, generator, sizes) for index in range(len(self.recipes))
            ]

    def jitter_function(self, device: torch.device) -> Any:
        """`color_jitter`, compiled on CUDA when `compile_jitter` is set."""
        if device.type != "cuda" or not self.compile_jitter:
            return color_jitter
        if self._compiled_jitter is None:
            self._compiled_jitter = torch.compile(color_jitter, dynamic=False, fullgraph=True)
        return self._compiled_jitter

    def view(
        self, pixels: Tensor, index: int, generator: torch.Generator, sizes: Tensor | None = None
    ) -> Tensor:
        """One view of `pixels` (float in [0, 1]) with recipe `index`; `sizes` as in forward."""
        recipe = self.recipes[index]
        count, channels, height, width = pixels.shape
        device = pixels.device
        if sizes is None:
            boxes = sample_crop_boxes(
                count, height, width, recipe.min_scale, generator, recipe.max_scale
            )
        else:  # boxes in each picture's own pixels, then in the squashed image's
            picture = sizes.to(device=device, dtype=torch.float32)
            boxes = sample_crop_boxes(
                count, picture[:, 0], picture[:, 1], recipe.min_scale, generator, recipe.max_scale
            )
            scale = torch.stack([width / picture[:, 1], height / picture[:, 0]], dim=1)
            boxes = boxes * scale.repeat(1, 2)
        x = resized_crop(pixels, boxes, recipe.input_size, recipe.interpolation)

        # One uniform draw per decision, in a fixed layout, so a seed fixes the whole view.
        u = torch.rand(count, 12, generator=generator, device=device)
        x = torch.where((u[:, 0] < recipe.hf_prob).view(-1, 1, 1, 1), x.flip(-1), x)
        if recipe.vf_prob > 0:
            x = torch.where((u[:, 1] < recipe.vf_prob).view(-1, 1, 1, 1), x.flip(-2), x)

        strength = recipe.cj_strength
        spreads = [
            recipe.cj_bright * strength,
            recipe.cj_contrast * strength,
            recipe.cj_sat * strength,
            recipe.cj_hue * strength,
        ]
        if recipe.cj_prob > 0 and any(spreads):
            factors = torch.empty(count, 4, device=device)
            for column, spread in enumerate(spreads[:3]):  # uniform in [max(0, 1 - s), 1 + s]
                low = max(0.0, 1.0 - spread)
                factors[:, column] = low + (1.0 + spread - low) * u[:, 3 + column]
            factors[:, 3] = spreads[3] * (2 * u[:, 6] - 1)  # uniform in [-h, h]
            order = torch.argsort(torch.rand(count, 4, generator=generator, device=device), dim=1)
            # PIL leaves saturation and hue of 'L' images unchanged.
            used = tuple(i for i, s in enumerate(spreads) if s and (channels == 3 or i < 2))
            jitter = self.jitter_function(device)  # masks or row indexing: by device
            x = jitter(x, u[:, 2] < recipe.cj_prob, factors, order, used)

        if channels == 3 and recipe.random_gray_scale > 0:
            grey = _grey(x).expand(-1, 3, -1, -1)
            x = torch.where((u[:, 7] < recipe.random_gray_scale).view(-1, 1, 1, 1), grey, x)

        solarize = (u[:, 10] < recipe.solarization_prob).view(-1, 1, 1, 1)
        if recipe.solarize_before_blur and recipe.solarization_prob > 0:
            x = torch.where(solarize & (x >= SOLARIZE_THRESHOLD), 1.0 - x, x)

        if recipe.gaussian_blur > 0:
            low, high = recipe.sigmas
            sigma = low + (high - low) * u[:, 9]
            x = gaussian_blur(x, u[:, 8] < recipe.gaussian_blur, sigma, largest=high)

        if not recipe.solarize_before_blur and recipe.solarization_prob > 0:
            x = torch.where(solarize & (x >= SOLARIZE_THRESHOLD), 1.0 - x, x)

        if recipe.mean is not None:
            x = (x - getattr(self, f"mean_{index}")) / getattr(self, f"std_{index}")
        return x
