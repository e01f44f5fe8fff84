"""LeJEPA from lightly's projection head, LeJEPA loss (SIGReg + invariance) and DINO's
multi-crop views, as lightly's ImageNet benchmark (benchmarks/imagenet/vitb16/lejepa.py) runs it.

- [0] LeJEPA, 2025, https://arxiv.org/abs/2511.08544
- [1] https://github.com/galilai-group/lejepa
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from lightly.loss import LeJEPALoss
from lightly.loss.lejepa_loss import lejepa_invariance_loss
from lightly.models.modules import LeJEPAProjectionHead
from lightly.transforms import DINOTransform
from lightly.transforms.dino_transform import DINOViewTransform
from torch import Tensor

from ssl_syre.backbones import backbone_kwargs_for_size, check_input_size
from ssl_syre.config import DataConfig, ranged
from ssl_syre.data import DataInfo
from ssl_syre.data.augment import BatchAugment, ViewRecipe
from ssl_syre.methods.base import SSLMethod
from ssl_syre.methods.dino import (
    dino_augmentation,
    dino_transform_kwargs,
    dino_view_kwargs,
    local_crop_size,
)

# lightly's LeJEPA benchmark blurs every view with probability 0.5 (DINO: 1.0 / 0.1 / 0.5).
BLUR = (0.5, 0.5, 0.5)


@dataclass
class LeJEPAKwargs:
    # lightly's LeJEPAProjectionHead defaults, the reference implementation's [1]: a 3-layer
    # MLP with BatchNorm, 2048 wide, 64 outputs.
    projection_hidden_dim: int = ranged(2048, "[1, inf)")
    projection_output_dim: int = ranged(64, "[1, inf)")
    projection_layers: int = ranged(3, "[2, inf)")
    # Weight of SIGReg; the invariance term gets 1 - lambda (reference: 0.05; the paper
    # explores 0.01-0.1).
    lambda_param: float = ranged(0.05, "[0, 1]")
    # SIGReg's random directions per step, and its Epps-Pulley frequency grid (lightly's and
    # the reference's defaults).
    sigreg_num_vectors: int = ranged(1024, "[1, inf)")
    sigreg_knots: int = ranged(17, "[2, inf)")
    sigreg_t_max: float = ranged(3.0, "(0, inf)")
    # SIGReg's statistics over all processes under DDP (lightly's benchmark).
    gather_distributed: bool = True
    # Multi-crop as lightly's benchmark: 2 global crops of data.image_size, scale 0.3-1, and
    # n_local_views local ones (96/224 of the image, scale 0.05-0.3). With 0 local views the
    # loss is the same formula over the global views alone.
    n_local_views: int = ranged(6, "[0, inf)")
    global_crop_scale: list[float] = field(default_factory=lambda: [0.3, 1.0])
    local_crop_size: int | None = ranged(None, "[1, inf)")
    local_crop_scale: list[float] = field(default_factory=lambda: [0.05, 0.3])


def lejepa_transform_kwargs(
    info: DataInfo, data_cfg: DataConfig, kwargs: LeJEPAKwargs, local_size: int
) -> dict[str, Any]:
    """lightly's DINOTransform arguments for LeJEPA: DINO's mapping of the data set's
    settings, with the benchmark's crop scales and blur (0.5 on every view; off for small
    images, as for every method)."""
    transform = dino_transform_kwargs(info, data_cfg, kwargs, local_size)  # type: ignore[arg-type]
    transform.setdefault("gaussian_blur", BLUR)
    return transform


class LeJEPA(SSLMethod):
    """Joint-embedding prediction with a provable anti-collapse term [0]: every view's
    embedding is pulled toward the mean of the global views' embeddings (invariance), and
    SIGReg pulls the distribution of all embeddings toward an isotropic Gaussian, which a
    collapsed embedding is not. No teacher, no predictor, no stop-gradient.
    """

    name = "lejepa"
    Kwargs = LeJEPAKwargs
    # lightly's benchmark: AdamW lr 5e-4 (not scaled with the batch), weight decay 0.05, one
    # warm-up epoch, cosine.
    config_defaults: ClassVar[dict[str, Any]] = {
        "optimizer": {
            "name": "adamw",
            "lr": 5e-4,
            "scale_lr": False,
            "weight_decay": 0.05,
            "warmup_epochs": 1,
        }
    }

    def method_backbone_kwargs(self) -> dict[str, Any]:
        # A timm ViT takes the local crops' other size with dynamic_img_size (lightly's
        # benchmark builds its ViT so).
        vit_like = backbone_kwargs_for_size(self.cfg.backbone.name, self.info.image_size)
        return {"dynamic_img_size": True} if vit_like and self.kwargs.n_local_views else {}

    def build_heads(self, feature_dim: int) -> None:
        k = self.kwargs
        self.projection_head = LeJEPAProjectionHead(
            feature_dim,
            hidden_dim=k.projection_hidden_dim,
            output_dim=k.projection_output_dim,
            num_layers=k.projection_layers,
        )
        self.criterion = LeJEPALoss(
            lambda_param=k.lambda_param,
            gather_distributed=k.gather_distributed,
            sigreg_knots=k.sigreg_knots,
            sigreg_t_max=k.sigreg_t_max,
            sigreg_num_vectors=k.sigreg_num_vectors,
        )
        patch = self.patch_size()
        self.local_size = local_crop_size(k, self.info.image_size, patch)
        if k.n_local_views:
            check_input_size(
                self.backbone,
                self.cfg.backbone.name,
                self.local_size,
                fix=f"set method_kwargs.local_crop_size to a multiple of {patch}",
            )

    def embed(self, views: Sequence[Tensor]) -> Tensor:
        """(V, N, D) projections of same-size views, in one forward pass."""
        out = self.projection_head(self.backbone(torch.cat(list(views))))
        return torch.stack(out.chunk(len(views)))

    def training_loss(self, views: Sequence[Tensor]) -> Tensor:
        global_proj = self.embed(views[:2])
        if len(views) > 2:
            return self.criterion(local_proj=self.embed(views[2:]), global_proj=global_proj)
        # No local views: LeJEPALoss's formula with the global views as all views (lightly's
        # loss refuses an empty local set).
        lam = self.criterion.lambda_param
        invariance = lejepa_invariance_loss(all_proj=global_proj, global_proj=global_proj)
        return lam * self.criterion.sigreg(global_proj) + (1.0 - lam) * invariance

    # ----- views -------------------------------------------------------------------------------
    def transform_kwargs(self) -> dict[str, Any]:
        return lejepa_transform_kwargs(self.info, self.cfg.data, self.kwargs, self.local_size)

    def make_transform(self) -> DINOTransform:
        return DINOTransform(**self.transform_kwargs())

    def make_augmentation(self) -> BatchAugment:
        return dino_augmentation(self.transform_kwargs(), self.cfg.data.compile_augment)

    @classmethod
    def default_transform_kwargs(cls, info: DataInfo, data_cfg: DataConfig) -> dict[str, Any]:
        kwargs = LeJEPAKwargs()
        size = local_crop_size(kwargs, info.image_size)
        return lejepa_transform_kwargs(info, data_cfg, kwargs, size)

    @classmethod
    def build_transform(cls, info: DataInfo, data_cfg: DataConfig) -> DINOTransform:
        """lightly's DINOTransform at the default settings (no backbone: no patch rounding)."""
        return DINOTransform(**cls.default_transform_kwargs(info, data_cfg))

    @classmethod
    def view_recipes(cls, info: DataInfo, data_cfg: DataConfig) -> list[ViewRecipe]:
        transform = cls.default_transform_kwargs(info, data_cfg)
        return [
            ViewRecipe.from_lightly(DINOViewTransform, **v) for v in dino_view_kwargs(transform)
        ]
