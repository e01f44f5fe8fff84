"""SimSiam from lightly's heads, negative cosine similarity and transform.

- [0] SimSiam, 2021, https://arxiv.org/abs/2011.10566
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead
from lightly.models.modules.heads import ProjectionHead
from lightly.transforms import SimSiamTransform, SimSiamViewTransform
from torch import Tensor, nn

from ssl_syre.config import DataConfig, ranged
from ssl_syre.data import DataInfo, ssl_transform_kwargs
from ssl_syre.data.augment import ViewRecipe
from ssl_syre.methods.base import SSLMethod


@dataclass
class SimSiamKwargs:
    projection_hidden_dim: int = ranged(2048, "[1, inf)")
    projection_output_dim: int = ranged(2048, "[1, inf)")
    prediction_hidden_dim: int = ranged(512, "[1, inf)")
    # Linear layers of the projector: 3 in the paper's ImageNet model and lightly's head, 2 in
    # the paper's CIFAR-10 model and lightly's CIFAR-10 benchmark.
    projection_layers: int = ranged(3, "[2, inf)")
    # true: the predictor trains at the peak lr throughout, no warm-up or cosine, as in the
    # paper [0] (Table 1: a little better than a decayed one) and solo-learn; false: lightly's CIFAR-10
    # benchmark, where one cosine schedule covers every parameter.
    fix_predictor_lr: bool = False


class SimSiam(SSLMethod):
    """A predictor on one branch and a stop-gradient on the other, no negatives [0].

    Known to be fragile with small batches and weak augmentations (lightly #134).
    """

    name = "simsiam"
    Kwargs = SimSiamKwargs
    parts = ("backbone", "projection_head", "prediction_head")

    def build_heads(self, feature_dim: int) -> None:
        hidden, out = self.kwargs.projection_hidden_dim, self.kwargs.projection_output_dim
        layers = self.kwargs.projection_layers
        if layers == 3:
            self.projection_head = SimSiamProjectionHead(feature_dim, hidden, out)
        else:
            # SimSiamProjectionHead's blocks with hidden blocks added or removed; its output
            # BatchNorm has no affine parameters, as the paper's (lightly's CIFAR-10 script
            # gives its 2-layer head an affine one).
            dims = [feature_dim] + [hidden] * (layers - 1)
            blocks = [(i, o, nn.BatchNorm1d(o), nn.ReLU()) for i, o in itertools.pairwise(dims)]
            output = (hidden, out, nn.BatchNorm1d(out, affine=False), None)
            self.projection_head = ProjectionHead([*blocks, output])
        self.prediction_head = SimSiamPredictionHead(out, self.kwargs.prediction_hidden_dim, out)
        self.criterion = NegativeCosineSimilarity()

    def fixed_lr_parts(self) -> tuple[str, ...]:
        return ("prediction_head",) if self.kwargs.fix_predictor_lr else ()

    def training_loss(self, views: Sequence[Tensor]) -> Tensor:
        z0, z1 = (self.projection_head(self.backbone(view)) for view in views[:2])
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
        return 0.5 * (self.criterion(p0, z1.detach()) + self.criterion(p1, z0.detach()))

    @classmethod
    def build_transform(cls, info: DataInfo, data_cfg: DataConfig) -> SimSiamTransform:
        return SimSiamTransform(**ssl_transform_kwargs(info, data_cfg))

    @classmethod
    def view_recipes(cls, info: DataInfo, data_cfg: DataConfig) -> list[ViewRecipe]:
        recipe = ViewRecipe.from_lightly(
            SimSiamViewTransform, **ssl_transform_kwargs(info, data_cfg)
        )
        return [recipe, recipe]
