"""MoCo v3 from lightly's heads, momentum utilities and BYOL's views, with the paper's loss.

- [0] MoCo v3, 2021, https://arxiv.org/abs/2104.02057
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from lightly.models.modules import BYOLPredictionHead, MoCoProjectionHead
from lightly.utils import dist
from torch import Tensor, nn

from ssl_syre.config import ranged
from ssl_syre.errors import UserError
from ssl_syre.methods.byol import BYOL
from ssl_syre.methods.dino import is_vit


@dataclass
class MoCoV3Kwargs:
    projection_hidden_dim: int = ranged(4096, "[1, inf)")
    projection_output_dim: int = ranged(256, "[1, inf)")
    # None: the paper's depth, 2 layers after a CNN, 3 after a ViT.
    projection_layers: int | None = ranged(None, "[2, inf)")
    prediction_hidden_dim: int = ranged(4096, "[1, inf)")
    # 0.2: the paper's ViT recipe and solo-learn's CIFAR recipe (the authors' ResNet-50: 1.0).
    temperature: float = ranged(0.2, "(0, inf)")
    # Momentum-encoder EMA, cosine from 0.99 to 1 (the paper's schedule).
    momentum_start: float = ranged(0.99, "[0, 1]")
    momentum_end: float = ranged(1.0, "[0, 1]")
    # ViTs: keep the patch projection at its random init (the paper's fix for the training
    # instability it traces to the first layer); it then takes no step and no decay.
    freeze_patch_embed: bool = False


def contrastive_loss(query: Tensor, key: Tensor, temperature: float) -> Tensor:
    """The paper's ctr(q, k): cross-entropy of each query against all keys of the (global)
    batch, its own key the positive, scaled by 2τ [0, Algorithm 1].

    Written here because lightly has no MoCo v3 loss (its NT-Xent adds query-query
    negatives). Keys carry no gradient; under DDP they are gathered from every process and
    the positives sit at this process's offset.
    """
    query = F.normalize(query, dim=1)
    key = F.normalize(key, dim=1)
    offset = 0
    if dist.world_size() > 1:
        key = torch.cat(dist.gather(key.contiguous()), dim=0)
        offset = dist.rank() * query.shape[0]
    logits = query @ key.T / temperature
    labels = torch.arange(query.shape[0], device=query.device) + offset
    return F.cross_entropy(logits, labels) * (2 * temperature)


class MoCoV3(BYOL):
    """Contrastive learning against the keys of a momentum encoder, without a queue [0].

    Each view's query (online backbone, projection and prediction heads) must pick out the
    other view's key (momentum backbone and projection head) among the batch's keys; the loss
    is the sum of both directions, each scaled by 2τ (Algorithm 1). The momentum copies are
    never trained or decayed; they follow the online weights, anchors included. With
    `freeze_patch_embed` a ViT's patch projection stays at its random init, outside SyRe.
    """

    name = "mocov3"
    Kwargs = MoCoV3Kwargs
    parts = ("backbone", "projection_head", "prediction_head")

    def build_heads(self, feature_dim: int) -> None:
        k = self.kwargs
        vit = is_vit(self.backbone)
        if k.freeze_patch_embed:
            if not vit:
                raise UserError(
                    f"method_kwargs.freeze_patch_embed needs a ViT backbone, not "
                    f"{self.cfg.backbone.name}; set it to false"
                )
            self.backbone.patch_embed.proj.requires_grad_(False)
        layers = k.projection_layers or (3 if vit else 2)
        hidden, out = k.projection_hidden_dim, k.projection_output_dim
        self.projection_head = MoCoProjectionHead(
            feature_dim, hidden, out, num_layers=layers, batch_norm=True
        )
        # The authors' predictor: BatchNorm on its output after a ViT, not after a ResNet.
        self.prediction_head: nn.Module = (
            MoCoProjectionHead(out, k.prediction_hidden_dim, out, num_layers=2, batch_norm=True)
            if vit
            else BYOLPredictionHead(out, k.prediction_hidden_dim, out)
        )
        self.build_momentum_copies()  # backbone_momentum, projection_head_momentum

    @torch.no_grad()
    def keys(self, x: Tensor) -> Tensor:
        """The momentum encoder's projections, without gradient."""
        return self.projection_head_momentum(self.backbone_momentum(x))

    def training_loss(self, views: Sequence[Tensor]) -> Tensor:
        self.update_momentum_copies()
        x0, x1 = views[:2]
        q0, q1 = (self.prediction_head(self.projection_head(self.backbone(x))) for x in (x0, x1))
        k0, k1 = self.keys(x0), self.keys(x1)
        tau = self.kwargs.temperature
        return contrastive_loss(q0, k1, tau) + contrastive_loss(q1, k0, tau)
