"""SimCLR from lightly's projection head, NT-Xent loss (sync-free in one process) and transform.

- [0] SimCLR, 2020, https://arxiv.org/abs/2002.05709
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform, SimCLRViewTransform
from torch import Tensor

from ssl_syre.config import DataConfig, ranged
from ssl_syre.data import DataInfo, ssl_transform_kwargs
from ssl_syre.data.augment import ViewRecipe
from ssl_syre.methods.base import SSLMethod
from ssl_syre.methods.losses import NTXentLoss


@dataclass
class SimCLRKwargs:
    projection_hidden_dim: int = ranged(2048, "[1, inf)")
    projection_output_dim: int = ranged(128, "[1, inf)")
    projection_layers: int = ranged(2, "[2, inf)")  # lightly's head: 2 for v1, 3+ for v2
    # BatchNorm in the head; per-process batch statistics under DDP unless trainer.sync_batchnorm.
    projection_batch_norm: bool = True
    temperature: float = ranged(0.5, "(0, inf)")
    # Negatives from all processes under DDP (lightly gathers them with gradients).
    gather_distributed: bool = True


class SimCLR(SSLMethod):
    """Contrastive learning: two views of an image attract, all other images repel [0]."""

    name = "simclr"
    Kwargs = SimCLRKwargs

    def build_heads(self, feature_dim: int) -> None:
        self.projection_head = SimCLRProjectionHead(
            feature_dim,
            self.kwargs.projection_hidden_dim,
            self.kwargs.projection_output_dim,
            num_layers=self.kwargs.projection_layers,
            batch_norm=self.kwargs.projection_batch_norm,
        )
        self.criterion = NTXentLoss(
            temperature=self.kwargs.temperature,
            gather_distributed=self.kwargs.gather_distributed,
        )

    def training_loss(self, views: Sequence[Tensor]) -> Tensor:
        z0, z1 = (self.projection_head(self.backbone(view)) for view in views[:2])
        return self.criterion(z0, z1)

    @classmethod
    def build_transform(cls, info: DataInfo, data_cfg: DataConfig) -> SimCLRTransform:
        return SimCLRTransform(**ssl_transform_kwargs(info, data_cfg))

    @classmethod
    def view_recipes(cls, info: DataInfo, data_cfg: DataConfig) -> list[ViewRecipe]:
        recipe = ViewRecipe.from_lightly(
            SimCLRViewTransform, **ssl_transform_kwargs(info, data_cfg)
        )
        return [recipe, recipe]
