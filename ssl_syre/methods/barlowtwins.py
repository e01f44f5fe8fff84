"""Barlow Twins from lightly's projection head and loss, with BYOL's views.

- [0] Barlow Twins, 2021, https://arxiv.org/abs/2103.03230
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from lightly.loss import BarlowTwinsLoss
from lightly.models.modules import BarlowTwinsProjectionHead
from lightly.models.modules.heads import ProjectionHead
from lightly.transforms import BYOLTransform
from torch import Tensor, nn

from ssl_syre.config import DataConfig, ranged
from ssl_syre.data import DataInfo
from ssl_syre.data.augment import ViewRecipe
from ssl_syre.methods.base import SSLMethod
from ssl_syre.methods.byol import BYOL


@dataclass
class BarlowTwinsKwargs:
    projection_hidden_dim: int = ranged(2048, "[1, inf)")
    projection_output_dim: int = ranged(2048, "[1, inf)")
    # Linear layers of the projector: 3 in the paper and lightly's head, 2 in lightly's
    # CIFAR-10 benchmark (Linear-BN-ReLU, then Linear).
    projection_layers: int = ranged(3, "[2, inf)")
    # Weight of the off-diagonal (redundancy) terms against the diagonal (invariance) ones.
    lambda_param: float = ranged(5e-3, "[0, inf)")
    gather_distributed: bool = True  # the cross-correlation over all processes' batches


class BarlowTwins(SSLMethod):
    """The cross-correlation of the two views' embeddings is pushed toward the identity [0].

    Its diagonal makes the embedding invariant to the views; its off-diagonal terms
    (weighted by lambda_param) decorrelate the dimensions, which is what keeps the embedding
    from collapsing. The views are BYOL's asymmetric pair, as in lightly's benchmarks.
    """

    name = "barlowtwins"
    Kwargs = BarlowTwinsKwargs

    def build_heads(self, feature_dim: int) -> None:
        hidden, out = self.kwargs.projection_hidden_dim, self.kwargs.projection_output_dim
        layers = self.kwargs.projection_layers
        if layers == 3:
            self.projection_head = BarlowTwinsProjectionHead(feature_dim, hidden, out)
        else:
            # lightly's blocks as its Barlow Twins head builds them, with hidden blocks
            # added or removed (its CIFAR-10 benchmark builds the 2-layer head the same way).
            dims = [feature_dim] + [hidden] * (layers - 1)
            blocks = [(i, o, nn.BatchNorm1d(o), nn.ReLU()) for i, o in itertools.pairwise(dims)]
            self.projection_head = ProjectionHead([*blocks, (hidden, out, None, None)])
        self.criterion = BarlowTwinsLoss(
            lambda_param=self.kwargs.lambda_param,
            gather_distributed=self.kwargs.gather_distributed,
        )

    def training_loss(self, views: Sequence[Tensor]) -> Tensor:
        z0, z1 = (self.projection_head(self.backbone(view)) for view in views[:2])
        return self.criterion(z0, z1)

    @classmethod
    def build_transform(cls, info: DataInfo, data_cfg: DataConfig) -> BYOLTransform:
        return BYOL.build_transform(info, data_cfg)

    @classmethod
    def view_recipes(cls, info: DataInfo, data_cfg: DataConfig) -> list[ViewRecipe]:
        return BYOL.view_recipes(info, data_cfg)
