"""SimSiam from lightly's heads, negative cosine similarity and transform.

- [0] SimSiam, 2021, https://arxiv.org/abs/2011.10566
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead
from lightly.transforms import SimSiamTransform, SimSiamViewTransform
from torch import Tensor

from ssl_syre.config import DataConfig, ranged
from ssl_syre.data import DataInfo, ssl_transform_kwargs
from ssl_syre.data.augment import ViewRecipe
from ssl_syre.methods.base import SSLMethod


@dataclass
class SimSiamKwargs:
    projection_hidden_dim: int = ranged(2048, "[1, inf)")
    projection_output_dim: int = ranged(2048, "[1, inf)")
    prediction_hidden_dim: int = ranged(512, "[1, inf)")
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
        out = self.kwargs.projection_output_dim
        self.projection_head = SimSiamProjectionHead(
            feature_dim, self.kwargs.projection_hidden_dim, out
        )
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
