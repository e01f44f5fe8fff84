"""DINO from lightly's projection head, loss, momentum utilities and multi-crop transform.

- [0] DINO, 2021, https://arxiv.org/abs/2104.14294
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from lightly.models.modules.heads import ProjectionHead
from lightly.transforms import DINOTransform
from lightly.transforms.dino_transform import DINOViewTransform
from timm.layers import PatchEmbed
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from ssl_syre.backbones import backbone_kwargs_for_size, check_input_size
from ssl_syre.config import DataConfig, ranged
from ssl_syre.data import DataInfo, ssl_transform_kwargs
from ssl_syre.data.augment import BatchAugment, ViewRecipe
from ssl_syre.errors import UserError
from ssl_syre.methods.momentum import MomentumMethod
from ssl_syre.methods.prototype_koleo import add_prototype_koleo, prototype_koleo

# lightly's (and the paper's) local crop of 96 px for 224-px global crops.
LOCAL_TO_GLOBAL = 96 / 224


@dataclass
class DINOKwargs:
    projection_hidden_dim: int = ranged(2048, "[1, inf)")
    bottleneck_dim: int = ranged(256, "[1, inf)")
    # Linear layers before the bottleneck's normalization: 3 in the paper and lightly's head,
    # 2 in lightly's CIFAR-10 benchmark (Linear-BN-GELU, then Linear to the bottleneck).
    projection_layers: int = ranged(3, "[2, inf)")
    # K, the prototypes (lightly's CIFAR benchmark; the paper: 65536).
    projection_output_dim: int = ranged(2048, "[1, inf)")
    batch_norm: bool | None = None  # None: in the head for CNNs, not for ViTs (lightly's advice)
    freeze_last_layer: int = ranged(1, "[0, inf)")  # epochs without a step on the last layer
    norm_last_layer: bool = True  # weight norm's g fixed at 1
    # The paper [0] (Appendix, implementation details): the teacher temperature rises linearly
    # from 0.04 to 0.07 over the first 30 epochs, one value per epoch (lightly's DINOLoss).
    warmup_teacher_temp: float = ranged(0.04, "(0, inf)")
    teacher_temp: float = ranged(0.07, "(0, inf)")
    warmup_teacher_temp_epochs: int = ranged(30, "[0, inf)")
    # Largest gradient norm of each parameter tensor, 0: off (the paper's code: clip_grad 3.0,
    # utils.clip_gradients, which clips every parameter's gradient on its own, not their
    # global norm as trainer.gradient_clip_val does).
    clip_grad: float = ranged(3.0, "[0, inf)")
    student_temp: float = ranged(0.1, "(0, inf)")
    center_momentum: float = ranged(0.9, "[0, 1]")
    # Teacher EMA momentum, cosine-scheduled to momentum_end.
    momentum_start: float = ranged(0.996, "[0, 1]")
    momentum_end: float = ranged(1.0, "[0, 1]")
    # Multi-crop: 2 global crops (data.image_size) + n_local_views local ones.
    n_local_views: int = ranged(6, "[0, inf)")
    global_crop_scale: list[float] = field(default_factory=lambda: [0.4, 1.0])
    # None: 96/224 of the image size (lightly's ratio), for ViTs a multiple of the patch size.
    local_crop_size: int | None = ranged(None, "[1, inf)")
    local_crop_scale: list[float] = field(default_factory=lambda: [0.05, 0.4])
    # KoLeo on the student's prototypes (each head's K rows), the remedy of Govindarajan et al.
    # for partial prototype collapse; 0: off (the published methods). Costs K x K.
    prototype_koleo_weight: float = ranged(0.0, "[0, inf)")


def set_head_depth(head: DINOProjectionHead, layers: int, batch_norm: bool) -> None:
    """Rebuild the head's MLP (before the weight-normalized last layer) with `layers` linear
    layers from lightly's blocks, initialized as DINOProjectionHead initializes its own.

    lightly's CIFAR-10 benchmark replaces `head.layers` the same way for its 2-layer head.
    """
    first, *_, last = [m for m in head.layers if isinstance(m, nn.Linear)]
    hidden, bottleneck = first.out_features, last.out_features
    dims = [first.in_features] + [hidden] * (layers - 1)
    blocks = [
        (i, o, nn.BatchNorm1d(o) if batch_norm else None, nn.GELU())
        for i, o in zip(dims[:-1], dims[1:], strict=True)
    ]
    head.layers = ProjectionHead([*blocks, (hidden, bottleneck, None, None)]).layers
    head.layers.apply(head._init_weights)


def parametrize_last_layer(head: DINOProjectionHead, norm_last_layer: bool) -> None:
    """Swap the head's last layer for the same weight-normalized layer in torch's
    parametrization form, with the same g (1) and v.

    lightly builds it with the deprecated `torch.nn.utils.weight_norm`, whose computed weight
    is a non-leaf tensor attribute: a module holding it cannot be deep-copied (the teacher,
    EMA or SWA callbacks). The parametrization computes the same w = g·v/‖v‖ on access.
    """
    old = head.last_layer
    layer = nn.Linear(old.in_features, old.out_features, bias=False)
    with torch.no_grad():
        layer.weight.copy_(old.weight_v)
    layer = weight_norm(layer)
    magnitude = layer.parametrizations.weight.original0
    with torch.no_grad():
        magnitude.fill_(1.0)
    magnitude.requires_grad = not norm_last_layer  # norm_last_layer: g stays 1
    head.last_layer = layer


def clip_gradients_per_parameter(parameters: Iterable[Tensor], max_norm: float) -> None:
    """Scale each parameter's gradient to a norm of at most `max_norm`, each on its own, as
    the DINO code's `clip_gradients` (factor max_norm / (norm + 1e-6) where below 1); on the
    device, with no host sync."""
    for param in parameters:
        if param.grad is not None:
            norm = torch.linalg.vector_norm(param.grad.detach())
            param.grad.mul_((max_norm / (norm + 1e-6)).clamp(max=1.0))


def is_vit(backbone: nn.Module) -> bool:
    return any(isinstance(module, PatchEmbed) for module in backbone.modules())


def local_crop_size(kwargs: Any, image_size: int, patch: int | None = None) -> int:
    """The local crops' size: `kwargs.local_crop_size` (of any multi-crop method: DINO, SwAV,
    LeJEPA), else 96/224 of the image, for a patch backbone rounded to a multiple of its patch
    (at least one patch)."""
    if kwargs.local_crop_size is not None:
        return int(kwargs.local_crop_size)
    size = max(1, round(image_size * LOCAL_TO_GLOBAL))
    return size if patch is None else max(patch, round(size / patch) * patch)


def dino_augmentation(transform_kwargs: dict[str, Any], compile_augment: bool) -> BatchAugment:
    """The batched device-path views of lightly's DINOTransform with these arguments."""
    recipes = [
        ViewRecipe.from_lightly(DINOViewTransform, **view)
        for view in dino_view_kwargs(transform_kwargs)
    ]
    return BatchAugment(recipes, compile_augment)


def dino_transform_kwargs(
    info: DataInfo, data_cfg: DataConfig, kwargs: DINOKwargs, local_size: int
) -> dict[str, Any]:
    """Arguments of lightly's DINOTransform for this data set and these settings.

    The data set's augmentation settings map onto DINO's: input_size is the global crop,
    min_scale (data.min_scale or the data set's own) the global crops' minimum scale, and a
    blur switched off for small images (lightly's CIFAR-10 benchmark) is off on every view.
    """
    base = ssl_transform_kwargs(info, data_cfg)
    for name, pair in (("global", kwargs.global_crop_scale), ("local", kwargs.local_crop_scale)):
        if len(pair) != 2 or not 0 < pair[0] <= pair[1] <= 1:
            raise UserError(
                f"method_kwargs.{name}_crop_scale must be [min, max] with 0 < min <= max <= 1, "
                f"got {list(pair)}"
            )
    if kwargs.n_local_views < 0:
        raise UserError(f"method_kwargs.n_local_views must be >= 0, got {kwargs.n_local_views}")
    global_scale = (
        float(base.get("min_scale", kwargs.global_crop_scale[0])),
        float(kwargs.global_crop_scale[1]),
    )
    if global_scale[0] > global_scale[1]:
        raise UserError(
            f"data.min_scale={global_scale[0]} is above method_kwargs.global_crop_scale's "
            f"maximum {global_scale[1]}; lower data.min_scale"
        )
    transform: dict[str, Any] = {
        "global_crop_size": base["input_size"],
        "global_crop_scale": global_scale,
        "local_crop_size": local_size,
        "local_crop_scale": tuple(float(s) for s in kwargs.local_crop_scale),
        "n_local_views": kwargs.n_local_views,
        "normalize": base["normalize"],
    }
    if base.get("gaussian_blur") == 0.0:
        transform["gaussian_blur"] = (0.0, 0.0, 0.0)
    # Other settings the data set or config gives (data.cj_strength, a data set's own) pass on.
    accepted = set(inspect.signature(DINOTransform).parameters)
    handled = {"input_size", "min_scale", "normalize", "gaussian_blur"}
    transform.update({k: v for k, v in base.items() if k in accepted and k not in handled})
    return transform


def dino_view_kwargs(transform: dict[str, Any]) -> list[dict[str, Any]]:
    """DINOViewTransform's arguments for each view, as lightly's DINOTransform builds them.

    Mirrors its asymmetry: blur (1.0, 0.1, 0.5 by default) per view, solarization on the
    second global view only, and cj_strength not passed to the second global view (which
    keeps DINOViewTransform's default 0.5).
    """
    defaults = {
        name: param.default for name, param in inspect.signature(DINOTransform).parameters.items()
    }
    t = {**defaults, **transform}
    shared = {
        name: t[name]
        for name in (
            "hf_prob",
            "vf_prob",
            "rr_prob",
            "rr_degrees",
            "cj_prob",
            "cj_bright",
            "cj_contrast",
            "cj_sat",
            "cj_hue",
            "random_gray_scale",
            "sigmas",
            "normalize",
        )
    }
    blur = t["gaussian_blur"]
    global_crop = {"crop_size": t["global_crop_size"], "crop_scale": t["global_crop_scale"]}
    local_crop = {"crop_size": t["local_crop_size"], "crop_scale": t["local_crop_scale"]}
    strength = {"cj_strength": t["cj_strength"]}
    first = {**shared, **global_crop, **strength, "gaussian_blur": blur[0], "solarization_prob": 0}
    second = {
        **shared,
        **global_crop,
        "gaussian_blur": blur[1],
        "solarization_prob": t["solarization_prob"],
    }
    local = {**shared, **local_crop, **strength, "gaussian_blur": blur[2], "solarization_prob": 0}
    return [first, second] + [local] * int(t["n_local_views"])


class DINO(MomentumMethod):
    """Self-distillation: a student matches a momentum teacher's centered, sharpened
    distribution over K prototypes, across crops [0].

    The teacher (backbone and head copies) sees the two global crops, the student all crops.
    The teacher is not trained by the optimizer and never decayed by SyRe: it follows the
    student's weights, anchors included (as BYOL's momentum copies).
    """

    name = "dino"
    Kwargs = DINOKwargs

    def method_backbone_kwargs(self) -> dict[str, Any]:
        # timm ViTs take local crops of another size with dynamic_img_size (position
        # embeddings interpolated per input size).
        vit_like = backbone_kwargs_for_size(self.cfg.backbone.name, self.info.image_size)
        return {"dynamic_img_size": True} if vit_like and self.kwargs.n_local_views else {}

    def build_heads(self, feature_dim: int) -> None:
        k = self.kwargs
        batch_norm = not is_vit(self.backbone) if k.batch_norm is None else k.batch_norm

        with warnings.catch_warnings():  # lightly's head uses torch's deprecated weight_norm
            warnings.simplefilter("ignore", FutureWarning)
            self.projection_head = DINOProjectionHead(
                feature_dim,
                k.projection_hidden_dim,
                k.bottleneck_dim,
                k.projection_output_dim,
                batch_norm=batch_norm,
                freeze_last_layer=k.freeze_last_layer,
                norm_last_layer=k.norm_last_layer,
            )
        if k.projection_layers != 3:
            set_head_depth(self.projection_head, k.projection_layers, batch_norm)
        parametrize_last_layer(self.projection_head, k.norm_last_layer)
        # The teacher starts as the student, as in the paper's code.
        self.build_momentum_copies()
        self.criterion = DINOLoss(
            output_dim=k.projection_output_dim,
            warmup_teacher_temp=k.warmup_teacher_temp,
            teacher_temp=k.teacher_temp,
            warmup_teacher_temp_epochs=k.warmup_teacher_temp_epochs,
            student_temp=k.student_temp,
            center_momentum=k.center_momentum,
        )
        self.local_size = local_crop_size(k, self.info.image_size, self.patch_size())
        if k.n_local_views:
            check_input_size(
                self.backbone,
                self.cfg.backbone.name,
                self.local_size,
                fix=f"set method_kwargs.local_crop_size to a multiple of {self.patch_size()}",
            )

    @torch.no_grad()
    def teacher(self, views: Sequence[Tensor]) -> list[Tensor]:
        """Teacher outputs for the global crops, one forward pass, no gradient."""
        out = self.projection_head_momentum(self.backbone_momentum(torch.cat(list(views))))
        return list(out.detach().chunk(len(views)))

    def student(self, views: Sequence[Tensor]) -> list[Tensor]:
        """Student outputs for all crops, as the paper's MultiCropWrapper: one backbone pass
        per run of same-size crops, then one head pass on all crops' features together (a
        BatchNorm head then normalizes with the statistics of every crop)."""
        if not views:  # iBOT runs its global crops itself and passes only the local ones
            return []
        features: list[Tensor] = []
        start = 0
        while start < len(views):
            end = start
            while end < len(views) and views[end].shape == views[start].shape:
                end += 1
            features.append(self.backbone(torch.cat(list(views[start:end]))))
            start = end
        return list(self.projection_head(torch.cat(features)).chunk(len(views)))

    def training_loss(self, views: Sequence[Tensor]) -> Tensor:
        self.update_momentum_copies()  # the teacher: once per optimizer step
        teacher_out = self.teacher(views[:2])
        student_out = self.student(views)
        loss = self.criterion(teacher_out, student_out, epoch=self.current_epoch)
        return add_prototype_koleo(
            self, loss, self.student_prototypes(), self.kwargs.prototype_koleo_weight
        )

    def student_prototypes(self) -> list[Tensor]:
        """Each student head's prototype layer weight (K x bottleneck, with its gradient)."""
        return [self.projection_head.last_layer.weight]

    def prototype_koleo(self) -> Tensor:
        """KoLeo over the student's prototypes, summed over the heads (prototype_koleo.py)."""
        return prototype_koleo(self.student_prototypes())

    def prototype_weights(self) -> dict[str, Tensor]:
        """The K prototypes: the rows of the weight-normalised last layer, g·v/‖v‖ normalised."""
        weight = self.projection_head.last_layer.weight.detach()
        return {"projection_head.last_layer": nn.functional.normalize(weight, dim=1)}

    def on_after_backward(self) -> None:
        # No gradient, hence no step (and no decay: AdamW and SyRe skip grad-less
        # parameters) on the last layer during the first freeze_last_layer epochs.
        self.projection_head.cancel_last_layer_gradients(self.current_epoch)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """The paper's per-parameter clipping at `clip_grad` (after the gradients are unscaled
        and before the step, where SyRe's pull is added), after Lightning's own clipping where
        trainer.gradient_clip_val is set."""
        if gradient_clip_val:
            super().configure_gradient_clipping(
                optimizer, gradient_clip_val, gradient_clip_algorithm
            )
        if self.kwargs.clip_grad > 0:
            parts = self.trainable_parts().values()
            clip_gradients_per_parameter(
                (p for part in parts for p in part.parameters()), self.kwargs.clip_grad
            )

    # ----- views -------------------------------------------------------------------------------
    def transform_kwargs(self) -> dict[str, Any]:
        return dino_transform_kwargs(self.info, self.cfg.data, self.kwargs, self.local_size)

    def make_transform(self) -> DINOTransform:
        return DINOTransform(**self.transform_kwargs())

    def make_augmentation(self) -> BatchAugment:
        return dino_augmentation(self.transform_kwargs(), self.cfg.data.compile_augment)

    @classmethod
    def build_transform(cls, info: DataInfo, data_cfg: DataConfig) -> DINOTransform:
        """lightly's DINOTransform at the default settings (no backbone: no patch rounding)."""
        kwargs = DINOKwargs()
        return DINOTransform(
            **dino_transform_kwargs(
                info, data_cfg, kwargs, local_crop_size(kwargs, info.image_size)
            )
        )

    @classmethod
    def view_recipes(cls, info: DataInfo, data_cfg: DataConfig) -> list[ViewRecipe]:
        kwargs = DINOKwargs()
        transform = dino_transform_kwargs(
            info, data_cfg, kwargs, local_crop_size(kwargs, info.image_size)
        )
        return [
            ViewRecipe.from_lightly(DINOViewTransform, **v) for v in dino_view_kwargs(transform)
        ]
