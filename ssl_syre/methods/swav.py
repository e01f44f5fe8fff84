"""SwAV from lightly's projection head, prototypes, Sinkhorn loss, queue and multi-crop transform.

- [0] SwAV, 2020, https://arxiv.org/abs/2006.09882
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from lightly.loss import SwaVLoss
from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes
from lightly.models.modules.memory_bank import MemoryBankModule
from lightly.transforms import SwaVTransform
from lightly.transforms.swav_transform import SwaVViewTransform
from torch import Tensor, nn

from ssl_syre.backbones import backbone_kwargs_for_size, check_input_size
from ssl_syre.config import DataConfig, ranged
from ssl_syre.data import DataInfo, ssl_transform_kwargs
from ssl_syre.data.augment import BatchAugment, ViewRecipe
from ssl_syre.errors import UserError
from ssl_syre.methods.base import SSLMethod
from ssl_syre.methods.dino import local_crop_size
from ssl_syre.methods.prototype_koleo import add_prototype_koleo, prototype_koleo


@dataclass
class SwAVKwargs:
    projection_hidden_dim: int = ranged(2048, "[1, inf)")
    projection_output_dim: int = ranged(128, "[1, inf)")
    n_prototypes: int = ranged(3000, "[1, inf)")  # K (the paper's ImageNet value)
    temperature: float = ranged(0.1, "(0, inf)")
    sinkhorn_iterations: int = ranged(3, "[1, inf)")
    sinkhorn_epsilon: float = ranged(0.05, "(0, inf)")
    # Optimizer steps without a step on the prototypes (the paper's freeze_prototypes_niters:
    # 313, one ImageNet epoch at batch 4096).
    freeze_prototypes_steps: int = ranged(313, "[0, inf)")
    # Multi-crop: 2 crops at data.image_size + n_local_views smaller ones (the paper: 2 + 6).
    n_local_views: int = ranged(6, "[0, inf)")
    global_crop_scale: list[float] = field(default_factory=lambda: [0.14, 1.0])
    # None: 96/224 of the image size (the paper's ratio), for ViTs a multiple of the patch size.
    local_crop_size: int | None = ranged(None, "[1, inf)")
    local_crop_scale: list[float] = field(default_factory=lambda: [0.05, 0.14])
    # Embeddings of past batches added to the Sinkhorn codes' batch, per high-resolution crop
    # and process (the paper: 3840 for batches of 256, from epoch 15); 0: no queue.
    queue_length: int = ranged(0, "[0, inf)")
    queue_start_epoch: int = ranged(15, "[0, inf)")
    # Sinkhorn's sums over all processes under DDP (the paper's distributed Sinkhorn).
    gather_distributed: bool = True
    # KoLeo on the prototypes (their K rows, as unit vectors), the remedy of Govindarajan et al.
    # for partial prototype collapse, here on SwAV's; 0: off (the paper's). Costs K x K.
    prototype_koleo_weight: float = ranged(0.0, "[0, inf)")


def swav_transform_kwargs(
    info: DataInfo, data_cfg: DataConfig, kwargs: SwAVKwargs, local_size: int
) -> dict[str, Any]:
    """Arguments of lightly's SwaVTransform for this data set and these settings: the large
    crops at data.image_size with data.min_scale (or global_crop_scale's) as minimum scale,
    blur off for small images, data.cj_strength passed on."""
    base = ssl_transform_kwargs(info, data_cfg)
    for name, pair in (("global", kwargs.global_crop_scale), ("local", kwargs.local_crop_scale)):
        if len(pair) != 2 or not 0 < pair[0] <= pair[1] <= 1:
            raise UserError(
                f"method_kwargs.{name}_crop_scale must be [min, max] with 0 < min <= max <= 1, "
                f"got {list(pair)}"
            )
    global_min = float(base.get("min_scale", kwargs.global_crop_scale[0]))
    if global_min > kwargs.global_crop_scale[1]:
        raise UserError(
            f"data.min_scale={global_min} is above method_kwargs.global_crop_scale's maximum "
            f"{kwargs.global_crop_scale[1]}; lower data.min_scale"
        )
    transform: dict[str, Any] = {
        "crop_sizes": (int(base["input_size"]), int(local_size)),
        "crop_counts": (2, int(kwargs.n_local_views)),
        "crop_min_scales": (global_min, float(kwargs.local_crop_scale[0])),
        "crop_max_scales": (float(kwargs.global_crop_scale[1]), float(kwargs.local_crop_scale[1])),
    }
    accepted = set(inspect.signature(SwaVTransform).parameters)
    transform.update({k: v for k, v in base.items() if k in accepted})
    return transform


def swav_view_recipes(transform: dict[str, Any]) -> list[ViewRecipe]:
    """One recipe per crop of lightly's SwaVTransform(**transform): its view transform with
    the crop's size and scale range (lightly's MultiCropTranform puts a bilinear
    RandomResizedCrop before the shared SwaVViewTransform)."""
    accepted = set(inspect.signature(SwaVViewTransform).parameters)
    view = {k: v for k, v in transform.items() if k in accepted}
    recipes = []
    for size, count, low, high in zip(
        transform["crop_sizes"],
        transform["crop_counts"],
        transform["crop_min_scales"],
        transform["crop_max_scales"],
        strict=True,
    ):
        recipe = ViewRecipe.from_lightly(SwaVViewTransform, crop=(size, low, high), **view)
        recipes.extend([recipe] * count)
    return recipes


class SwAV(SSLMethod):
    """Online clustering: each crop's embedding predicts the Sinkhorn code (an equipartitioned
    soft assignment to K prototypes) of another crop of the same image [0].

    Codes come from the two full-size crops only, without gradient, optionally with a queue of
    past embeddings added to Sinkhorn's batch; every crop predicts them, multi-crop views
    included. The prototypes are unit vectors without bias (the paper's; lightly's layer has
    a bias, removed here), renormalized at every step, and take no step during the first
    `freeze_prototypes_steps` optimizer steps: their gradient is dropped after the backward
    pass, as the authors' code does (lightly's switch flips requires_grad instead, which DDP
    accepts only with find_unused_parameters, as lightly's ImageNet benchmark runs it). SyRe
    covers the prototypes with the other parts.
    """

    name = "swav"
    Kwargs = SwAVKwargs
    parts = ("backbone", "projection_head", "prototypes")

    def method_backbone_kwargs(self) -> dict[str, Any]:
        vit_like = backbone_kwargs_for_size(self.cfg.backbone.name, self.info.image_size)
        return {"dynamic_img_size": True} if vit_like and self.kwargs.n_local_views else {}

    def build_heads(self, feature_dim: int) -> None:
        k = self.kwargs
        out = k.projection_output_dim
        self.projection_head = SwaVProjectionHead(feature_dim, k.projection_hidden_dim, out)
        self.prototypes = SwaVPrototypes(out, k.n_prototypes)
        self.prototypes.heads = nn.ModuleList([nn.Linear(out, k.n_prototypes, bias=False)])
        self.criterion = SwaVLoss(
            temperature=k.temperature,
            sinkhorn_iterations=k.sinkhorn_iterations,
            sinkhorn_epsilon=k.sinkhorn_epsilon,
            sinkhorn_gather_distributed=k.gather_distributed,
        )
        self.queues = nn.ModuleList(
            [
                MemoryBankModule(size=(k.queue_length, out), feature_dim_first=False)
                for _ in range(2 if k.queue_length else 0)
            ]
        )
        self._queued = 0  # embeddings enqueued since the queue started (not saved: refills)
        patch = self.patch_size()
        self.local_size = local_crop_size(k, self.info.image_size, patch)
        if k.n_local_views:
            check_input_size(
                self.backbone,
                self.cfg.backbone.name,
                self.local_size,
                fix=f"set method_kwargs.local_crop_size to a multiple of {patch}",
            )

    def prototype_weights(self) -> dict[str, Tensor]:
        """The prototype layers' weights (K×d), for the prototype-collapse counter."""
        return {"prototypes": self.prototypes.heads[0].weight}

    def embed(self, views: Sequence[Tensor]) -> list[Tensor]:
        """L2-normalized projections of all crops: one forward pass per run of same-size
        crops (as the paper's multi-resolution forward), so BatchNorm sees them together."""
        outputs: list[Tensor] = []
        start = 0
        while start < len(views):
            end = start
            while end < len(views) and views[end].shape == views[start].shape:
                end += 1
            z = self.projection_head(self.backbone(torch.cat(list(views[start:end]))))
            outputs.extend(F.normalize(z, dim=1).chunk(end - start))
            start = end
        return outputs

    @torch.no_grad()
    def queue_scores(self, projections: Sequence[Tensor]) -> list[Tensor] | None:
        """Prototype scores of the queued embeddings of each full-size crop once the queue is
        full (None before), then this batch's embeddings join it."""
        k = self.kwargs
        if not self.queues or self.current_epoch < k.queue_start_epoch:
            return None
        full = self._queued >= k.queue_length
        banks = [
            queue(z, update=True)[1] for queue, z in zip(self.queues, projections, strict=True)
        ]
        self._queued += len(projections[0])
        return [self.prototypes(bank) for bank in banks] if full else None

    def training_loss(self, views: Sequence[Tensor]) -> Tensor:
        self.prototypes.normalize()  # unit prototypes at every step (lightly's, in place)
        projections = self.embed(views)
        scores = [self.prototypes(z) for z in projections]
        queue = self.queue_scores([z.detach() for z in projections[:2]])
        # lightly's loss has shape (1,); Lightning and the logs take a scalar.
        loss = self.criterion(scores[:2], scores[2:], queue_outputs=queue).squeeze(0)
        return add_prototype_koleo(
            self, loss, self.student_prototypes(), self.kwargs.prototype_koleo_weight
        )

    def student_prototypes(self) -> list[Tensor]:
        """The prototype layer's weight (K x d, with its gradient; frozen as the prototypes
        are during the first freeze_prototypes_steps)."""
        return [self.prototypes.heads[0].weight]

    def prototype_koleo(self) -> Tensor:
        """KoLeo over the prototypes (prototype_koleo.py)."""
        return prototype_koleo(self.student_prototypes())

    def on_after_backward(self) -> None:
        if self.global_step < self.kwargs.freeze_prototypes_steps:
            # No gradient, hence no step and no decay (SyRe skips grad-less parameters).
            for param in self.prototypes.parameters():
                param.grad = None

    # ----- views -------------------------------------------------------------------------------
    def transform_kwargs(self) -> dict[str, Any]:
        return swav_transform_kwargs(self.info, self.cfg.data, self.kwargs, self.local_size)

    def make_transform(self) -> SwaVTransform:
        return SwaVTransform(**self.transform_kwargs())

    def make_augmentation(self) -> BatchAugment:
        recipes = swav_view_recipes(self.transform_kwargs())
        return BatchAugment(recipes, self.cfg.data.compile_augment)

    @classmethod
    def build_transform(cls, info: DataInfo, data_cfg: DataConfig) -> SwaVTransform:
        """lightly's SwaVTransform at the default settings (no backbone: no patch rounding)."""
        kwargs = SwAVKwargs()
        size = local_crop_size(kwargs, info.image_size)
        return SwaVTransform(**swav_transform_kwargs(info, data_cfg, kwargs, size))

    @classmethod
    def view_recipes(cls, info: DataInfo, data_cfg: DataConfig) -> list[ViewRecipe]:
        kwargs = SwAVKwargs()
        size = local_crop_size(kwargs, info.image_size)
        return swav_view_recipes(swav_transform_kwargs(info, data_cfg, kwargs, size))
