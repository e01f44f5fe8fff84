"""BYOL from lightly's heads, momentum utilities and transforms.

- [0] BYOL, 2020, https://arxiv.org/abs/2006.07733
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform
from torch import Tensor

from ssl_syre.config import DataConfig, ranged
from ssl_syre.data import DataInfo, ssl_transform_kwargs
from ssl_syre.data.augment import ViewRecipe
from ssl_syre.errors import check_choice
from ssl_syre.methods.momentum import MomentumMethod


@dataclass
class BYOLKwargs:
    projection_hidden_dim: int = ranged(4096, "[1, inf)")
    projection_output_dim: int = ranged(256, "[1, inf)")
    prediction_hidden_dim: int = ranged(4096, "[1, inf)")
    # target-network momentum, cosine-scheduled to momentum_end
    momentum_start: float = ranged(0.99, "[0, 1]")
    momentum_end: float = ranged(1.0, "[0, 1]")
    # The loss's scale, where the references differ (see LOSS_FORMS): "paper" sums 2 - 2cos over
    # the two symmetric pairs; "lightly_cifar10" averages -cos, a quarter of the gradient.
    loss_form: str = "paper"


# loss_form -> (constant, factor): loss = constant + factor * (-cos(p0, z1') - cos(p1, z0')).
LOSS_FORMS = {
    # The paper [0] (eq. 2 and its symmetrized sum), solo-learn's byol.py and lightly's ImageNet
    # benchmark (benchmarks/imagenet/resnet50/byol.py): sum over the pairs of 2 - 2cos.
    "paper": (4.0, 2.0),
    # lightly's CIFAR-10 benchmark script: 0.5 * (NegativeCosineSimilarity of each pair).
    "lightly_cifar10": (0.0, 0.5),
}


class BYOL(MomentumMethod):
    """An online network predicts a momentum (EMA) target network's projection [0].

    The loss is the paper's sum over both symmetric pairs of 2 - 2cos by default
    (`loss_form`); the scale sets the balance between the loss and the decay, the balance SyRe
    acts on. The momentum copies are not trained by the optimizer and never decayed by SyRe:
    they follow the online weights, anchors included.
    """

    name = "byol"
    Kwargs = BYOLKwargs
    parts = ("backbone", "projection_head", "prediction_head")

    def build_heads(self, feature_dim: int) -> None:
        hidden, out = self.kwargs.projection_hidden_dim, self.kwargs.projection_output_dim
        self.projection_head = BYOLProjectionHead(feature_dim, hidden, out)
        self.prediction_head = BYOLPredictionHead(out, self.kwargs.prediction_hidden_dim, out)
        self.build_momentum_copies()  # backbone_momentum, projection_head_momentum
        self.criterion = NegativeCosineSimilarity()
        check_choice("method_kwargs.loss_form", self.kwargs.loss_form, LOSS_FORMS)

    def training_loss(self, views: Sequence[Tensor]) -> Tensor:
        self.update_momentum_copies()
        x0, x1 = views[:2]
        p0 = self.prediction_head(self.projection_head(self.backbone(x0)))
        p1 = self.prediction_head(self.projection_head(self.backbone(x1)))
        z0 = self.projection_head_momentum(self.backbone_momentum(x0)).detach()
        z1 = self.projection_head_momentum(self.backbone_momentum(x1)).detach()
        constant, factor = LOSS_FORMS[self.kwargs.loss_form]
        return constant + factor * (self.criterion(p0, z1) + self.criterion(p1, z0))

    @classmethod
    def build_transform(cls, info: DataInfo, data_cfg: DataConfig) -> BYOLTransform:
        kwargs = ssl_transform_kwargs(info, data_cfg)
        return BYOLTransform(
            view_1_transform=BYOLView1Transform(**kwargs),
            view_2_transform=BYOLView2Transform(**kwargs),
        )

    @classmethod
    def view_recipes(cls, info: DataInfo, data_cfg: DataConfig) -> list[ViewRecipe]:
        """Asymmetric, as lightly's BYOLTransform: blur 1.0 / 0.1, solarization 0 / 0.2."""
        kwargs = ssl_transform_kwargs(info, data_cfg)
        return [
            ViewRecipe.from_lightly(BYOLView1Transform, **kwargs),
            ViewRecipe.from_lightly(BYOLView2Transform, **kwargs),
        ]
