"""BYOL from lightly's heads, momentum utilities and transforms.

- [0] BYOL, 2020, https://arxiv.org/abs/2006.07733
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform
from lightly.utils.scheduler import cosine_schedule
from torch import Tensor

from ssl_syre.config import DataConfig, ranged
from ssl_syre.data import DataInfo, ssl_transform_kwargs
from ssl_syre.data.augment import ViewRecipe
from ssl_syre.methods.base import SSLMethod


@dataclass
class BYOLKwargs:
    projection_hidden_dim: int = ranged(4096, "[1, inf)")
    projection_output_dim: int = ranged(256, "[1, inf)")
    prediction_hidden_dim: int = ranged(4096, "[1, inf)")
    # target-network momentum, cosine-scheduled to momentum_end
    momentum_start: float = ranged(0.99, "[0, 1]")
    momentum_end: float = ranged(1.0, "[0, 1]")


class BYOL(SSLMethod):
    """An online network predicts a momentum (EMA) target network's projection [0].

    The momentum copies are not trained by the optimizer and never decayed by SyRe: they
    follow the online weights, anchors included.
    """

    name = "byol"
    Kwargs = BYOLKwargs

    def build_heads(self, feature_dim: int) -> None:
        hidden, out = self.kwargs.projection_hidden_dim, self.kwargs.projection_output_dim
        self.projection_head = BYOLProjectionHead(feature_dim, hidden, out)
        self.prediction_head = BYOLPredictionHead(out, self.kwargs.prediction_hidden_dim, out)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        # global_step of the last momentum update; a resumed run starts unset and updates at
        # its first step, as the uninterrupted run does.
        self._momentum_step: int | None = None
        self.criterion = NegativeCosineSimilarity()

    def momentum(self) -> float:
        if self._trainer is None:  # outside fit (tests, notebooks): the schedule's start
            return self.kwargs.momentum_start
        total = max(1, int(self.trainer.estimated_stepping_batches))
        return cosine_schedule(
            self.global_step, total, self.kwargs.momentum_start, self.kwargs.momentum_end
        )

    def training_loss(self, views: Sequence[Tensor]) -> Tensor:
        momentum = self.momentum()
        # One EMA step per optimizer step: with trainer.accumulate_grad_batches > 1 several
        # micro-batches share a global_step and the online weights have not moved between
        # them (solo-learn guards its update the same way). Outside a Trainer every call is a step.
        step = self.global_step if self._trainer is not None else None
        if step is None or step != self._momentum_step:
            update_momentum(self.backbone, self.backbone_momentum, m=momentum)
            update_momentum(self.projection_head, self.projection_head_momentum, m=momentum)
            self._momentum_step = step
        self.log("train/momentum", momentum)
        x0, x1 = views[:2]
        p0 = self.prediction_head(self.projection_head(self.backbone(x0)))
        p1 = self.prediction_head(self.projection_head(self.backbone(x1)))
        z0 = self.projection_head_momentum(self.backbone_momentum(x0)).detach()
        z1 = self.projection_head_momentum(self.backbone_momentum(x1)).detach()
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))

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
