"""DCL and DCLW from lightly's losses, on SimCLR's projection head and views.

- [0] Decoupled Contrastive Learning, 2022, https://arxiv.org/abs/2110.06848
- [1] SimCLR, 2020, https://arxiv.org/abs/2002.05709
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lightly.loss import DCLLoss, DCLWLoss
from lightly.models.modules import SimCLRProjectionHead
from torch import Tensor

from ssl_syre.config import ranged
from ssl_syre.errors import check_choice
from ssl_syre.methods.simclr import SimCLR

LOSSES = ("dcl", "dclw")


@dataclass
class DCLKwargs:
    projection_hidden_dim: int = ranged(2048, "[1, inf)")
    projection_output_dim: int = ranged(128, "[1, inf)")
    projection_layers: int = ranged(2, "[2, inf)")
    projection_batch_norm: bool = True
    temperature: float = ranged(0.1, "(0, inf)")  # the paper's and lightly's default
    loss: str = "dcl"  # dcl | dclw (the positive term weighted by a von Mises-Fisher kernel)
    sigma: float = ranged(0.5, "(0, inf)")  # DCLW's kernel width (the paper's and lightly's)
    # Negatives from all processes under DDP (lightly gathers them with gradients).
    gather_distributed: bool = True


class DCL(SimCLR):
    """SimCLR without the positive pair in the denominator [0].

    NT-Xent's denominator holds the positive pair, so a confident positive shrinks the
    gradient of every negative (the "negative-positive coupling"); DCL drops it, and DCLW
    weights each positive term by w = 2 − exp(z·z'/σ)/E[exp(z·z'/σ)], so that hard positives
    (dissimilar views) count more. Everything else is SimCLR's [1]: head, views, recipe.
    """

    name = "dcl"
    Kwargs = DCLKwargs

    @classmethod
    def check_kwargs(cls, kwargs: Any) -> Any:
        checked = super().check_kwargs(kwargs)
        check_choice("method_kwargs.loss", checked.loss, LOSSES)
        return checked

    def build_heads(self, feature_dim: int) -> None:
        k = self.kwargs
        self.projection_head = SimCLRProjectionHead(
            feature_dim,
            k.projection_hidden_dim,
            k.projection_output_dim,
            num_layers=k.projection_layers,
            batch_norm=k.projection_batch_norm,
        )
        if k.loss == "dclw":
            self.criterion = DCLWLoss(
                temperature=k.temperature, sigma=k.sigma, gather_distributed=k.gather_distributed
            )
        else:
            self.criterion = DCLLoss(
                temperature=k.temperature, gather_distributed=k.gather_distributed
            )

    def training_loss(self, views: Sequence[Tensor]) -> Tensor:
        z0, z1 = (self.projection_head(self.backbone(view)) for view in views[:2])
        return self.criterion(z0, z1)
