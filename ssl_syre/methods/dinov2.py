"""DINOv2: iBOT with untied [CLS] and patch heads, DINOv2's head and a KoLeo regularizer, from
lightly's `DINOv2ProjectionHead` and `KoLeoLoss`.

- [0] DINOv2, 2023, https://arxiv.org/abs/2304.07193
- [1] KoLeo: Sablayrolles et al., Spreading vectors for similarity search, 2019,
  https://arxiv.org/abs/1806.03198
- [2] lightly's ImageNet benchmark, benchmarks/imagenet/vitb16/dinov2.py
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from lightly.loss import KoLeoLoss
from lightly.models.modules import DINOv2ProjectionHead
from torch import Tensor, nn

from ssl_syre.config import ranged
from ssl_syre.methods.dino import parametrize_last_layer
from ssl_syre.methods.ibot import IBOT, IBOTKwargs


@dataclass
class DINOv2Kwargs(IBOTKwargs):
    # The DINOv2 paper: "untying head weights" of the two objectives helps at both levels
    # (lightly's benchmark ties them by default).
    separate_patch_head: bool = True
    norm_last_layer: bool = False  # DINOv2's head trains the weight-norm magnitude g
    koleo_weight: float = ranged(0.1, "[0, inf)")  # on the student's [CLS] features
    momentum_start: float = ranged(0.992, "[0, 1]")
    min_patches_per_block: int | None = ranged(4, "[0, inf)")
    # lightly's DINOv2 benchmark transform: 8 local crops, scales split at 0.32.
    n_local_views: int = ranged(8, "[0, inf)")
    global_crop_scale: list[float] = field(default_factory=lambda: [0.32, 1.0])
    local_crop_scale: list[float] = field(default_factory=lambda: [0.05, 0.32])


class DINOv2(IBOT):
    """iBOT's two self-distillation losses with DINOv2's changes [0]: separate [CLS] and patch
    heads (`DINOv2ProjectionHead`: GELU MLP, L2-normalised bottleneck, weight-normalised K
    prototypes), and KoLeo [1] on the student's [CLS] features of each global crop, which
    spreads the batch's features apart (against feature collapse; it does not act on the
    prototypes). Teacher centering is lightly's mean centering, as in its benchmark [2]
    (the paper uses Sinkhorn-Knopp). ViT backbones only; teachers never anchored.
    """

    name = "dinov2"
    Kwargs = DINOv2Kwargs

    def build_heads(self, feature_dim: int) -> None:
        super().build_heads(feature_dim)
        self.koleo_criterion = KoLeoLoss()

    def make_head(self) -> nn.Module:
        k = self.kwargs
        with warnings.catch_warnings():  # lightly's head uses torch's deprecated weight_norm
            warnings.simplefilter("ignore", FutureWarning)
            head = DINOv2ProjectionHead(
                self.feature_dim,
                k.projection_hidden_dim,
                k.bottleneck_dim,
                k.projection_output_dim,
                batch_norm=bool(k.batch_norm),
            )
        parametrize_last_layer(head, k.norm_last_layer)
        return head

    def replace_cls_head(self) -> None:
        self.projection_head = self.make_head()

    def koleo(self, features: Tensor) -> Tensor:
        """KoLeo on each global crop's [CLS] features, summed over the crops (DINOv2's code)."""
        return torch.stack([self.koleo_criterion(chunk) for chunk in features.chunk(2)]).sum()

    def total_loss(self, losses: dict[str, Any]) -> Tensor:
        koleo = self.koleo(losses["student_features"])
        self.log("train/koleo_loss", koleo.detach())
        return super().total_loss(losses) + self.kwargs.koleo_weight * koleo
