"""NNCLR from lightly's heads, nearest-neighbour memory bank, NT-Xent loss and SimCLR views.

- [0] NNCLR, 2021, https://arxiv.org/abs/2104.14548
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lightly.models.modules import (
    NNCLRPredictionHead,
    NNCLRProjectionHead,
    NNMemoryBankModule,
)
from lightly.models.modules.heads import ProjectionHead
from torch import Tensor, nn

from ssl_syre.config import ranged
from ssl_syre.methods.losses import NTXentLoss
from ssl_syre.methods.simclr import SimCLR


@dataclass
class NNCLRKwargs:
    projection_hidden_dim: int = ranged(2048, "[1, inf)")
    projection_output_dim: int = ranged(256, "[1, inf)")
    # 3: the paper's NNCLRProjectionHead; 2: lightly's CIFAR-10 benchmark head.
    projection_layers: int = ranged(3, "[2, 3]")
    prediction_hidden_dim: int = ranged(4096, "[1, inf)")
    temperature: float = ranged(0.1, "(0, inf)")  # the paper's τ
    # The support set: embeddings of past batches whose nearest neighbour replaces the positive.
    # The paper uses 98304 on ImageNet; 4096 (lightly's CIFAR-10 benchmark) fits a CPU run.
    support_set_size: int = ranged(4096, "[1, inf)")
    # Negatives from all processes under DDP (lightly gathers them with gradients).
    gather_distributed: bool = True


class NNCLR(SimCLR):
    """Contrastive learning whose positive is the nearest neighbour of a view's embedding in a
    support set of past embeddings [0].

    Each view's projection z looks up its nearest neighbour NN(z) among the support set's
    entries (cosine similarity); the other view's prediction p must pick it out against the
    batch, the loss symmetrized over the views. NN(z) is a stored row, so no gradient flows
    through the lookup (the paper's stop-gradient); the backbone learns through p. The support
    set is a non-persistent buffer, filled with the second view's z each step: a resumed run
    refills it. Views are SimCLR's, as in lightly's benchmark.
    """

    name = "nnclr"
    Kwargs = NNCLRKwargs
    parts = ("backbone", "projection_head", "prediction_head")

    def build_heads(self, feature_dim: int) -> None:
        k = self.kwargs
        hidden, out = k.projection_hidden_dim, k.projection_output_dim
        if k.projection_layers == 3:
            self.projection_head: nn.Module = NNCLRProjectionHead(feature_dim, hidden, out)
        else:
            self.projection_head = ProjectionHead(
                [
                    (feature_dim, hidden, nn.BatchNorm1d(hidden), nn.ReLU()),
                    (hidden, out, nn.BatchNorm1d(out), None),
                ]
            )
        self.prediction_head = NNCLRPredictionHead(out, k.prediction_hidden_dim, out)
        self.support_set = NNMemoryBankModule(size=(k.support_set_size, out))
        self.criterion = NTXentLoss(
            temperature=k.temperature, gather_distributed=k.gather_distributed
        )

    def nearest_neighbour(self, z: Tensor, update: bool = False) -> Tensor:
        """The support set's entry nearest to each row of z (cosine), looked up before z
        enters the set when `update`."""
        return self.support_set(z.detach(), update=update)

    def training_loss(self, views: Sequence[Tensor]) -> Tensor:
        z0, z1 = (self.projection_head(self.backbone(view)) for view in views[:2])
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
        nn0 = self.nearest_neighbour(z0, update=False)
        nn1 = self.nearest_neighbour(z1, update=True)
        return 0.5 * (self.criterion(nn0, p1) + self.criterion(nn1, p0))
