"""MoCo v2 from lightly's projection head, NT-Xent loss with a memory bank, and transform.

- [0] MoCo, 2020, https://arxiv.org/abs/1911.05722
- [1] MoCo v2, 2020, https://arxiv.org/abs/2003.04297
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from lightly.models.utils import batch_shuffle, batch_unshuffle
from lightly.transforms import MoCoV2Transform, SimCLRViewTransform
from lightly.utils import dist
from torch import Tensor

from ssl_syre.config import DataConfig, ranged
from ssl_syre.data import DataInfo, ssl_transform_kwargs
from ssl_syre.data.augment import ViewRecipe
from ssl_syre.errors import UserError
from ssl_syre.methods.momentum import MomentumMethod
from ssl_syre.methods.split_batchnorm import split_batch_norms


@dataclass
class MoCoV2Kwargs:
    projection_hidden_dim: int = ranged(2048, "[1, inf)")
    projection_output_dim: int = ranged(128, "[1, inf)")
    temperature: float = ranged(0.1, "(0, inf)")  # lightly's benchmarks (the paper: 0.2)
    # Keys of past batches kept as negatives (lightly's memory_bank_size; the paper: 65536).
    queue_size: int = ranged(4096, "[1, inf)")
    # Key-encoder momentum, cosine-scheduled to momentum_end.
    momentum_start: float = ranged(0.99, "[0, 1]")
    momentum_end: float = ranged(1.0, "[0, 1]")
    # BatchNorm subsets per device in training, in the query and key encoders (lightly's CIFAR-10
    # benchmark: 8): on one device, shuffle-BN's stand-in. Under DDP the key batch is shuffled
    # across processes instead and BatchNorm is not split. 1: plain BatchNorm.
    split_bn: int = ranged(8, "[1, inf)")


class MoCoV2(MomentumMethod):
    """Contrastive learning against a queue of keys from a momentum encoder [0, 1].

    Each view's query (online network) must pick out the other view's key (momentum copy)
    among the queued keys of earlier batches. The loss is symmetrized over the two views; both
    terms score against the queue as it stood before the step, then both views' keys enter it
    (solo-learn's MoCo V2+ and the MoCo reference code: a term that saw the other term's keys
    would find the key of its own image among its negatives). Under DDP the keys of every
    process enter the queue (the reference code's concat_all_gather). The queue is a
    non-persistent buffer: a resumed run refills it. The momentum copies are never trained or
    decayed; they follow the online weights, anchors included.
    """

    name = "mocov2"
    Kwargs = MoCoV2Kwargs

    def build_heads(self, feature_dim: int) -> None:
        if self.kwargs.split_bn > 1:
            self.split_backbone_bn(self.kwargs.split_bn)
        out = self.kwargs.projection_output_dim
        self.projection_head = MoCoProjectionHead(
            feature_dim, self.kwargs.projection_hidden_dim, out
        )
        self.build_momentum_copies()  # backbone_momentum, projection_head_momentum
        # gather_distributed: lightly's memory bank gathers the keys of every process before
        # they enter the queue (with a memory bank the negatives come from the queue alone).
        self.criterion = NTXentLoss(
            temperature=self.kwargs.temperature,
            memory_bank_size=(self.kwargs.queue_size, out),
            gather_distributed=True,
        )

    def split_backbone_bn(self, num_splits: int) -> None:
        """Split the backbone's BatchNorm into `num_splits` subsets in training (its momentum
        copy follows: it is a copy, or is split alike); same parameters, buffers and names."""
        for part in ("backbone", "backbone_momentum"):
            if hasattr(self, part):
                others = split_batch_norms(getattr(self, part), num_splits)
                if others and num_splits > 1:
                    raise UserError(
                        f"method_kwargs.split_bn={num_splits} splits nn.BatchNorm2d layers only, "
                        f"and {self.cfg.backbone.name} has another BatchNorm at '{others[0]}'; "
                        "set method_kwargs.split_bn=1"
                    )

    def on_fit_start(self) -> None:
        # Under DDP the key batch is shuffled across processes (see `keys`): plain BatchNorm.
        if self.trainer.world_size > 1:
            self.split_backbone_bn(1)

    def keys(self, x: Tensor) -> Tensor:
        """The momentum encoder's projections, without gradient. The batch is shuffled first:
        across processes under DDP (shuffling BN), on one device before the split BatchNorm, so
        a key's BatchNorm subset is not its query's and the statistics cannot leak which key
        belongs to which query."""
        with torch.no_grad():
            distributed = dist.world_size() > 1
            x, shuffle = batch_shuffle(x, distributed=distributed)
            k = self.projection_head_momentum(self.backbone_momentum(x))
            return batch_unshuffle(k, shuffle, distributed=distributed)

    def training_loss(self, views: Sequence[Tensor]) -> Tensor:
        self.update_momentum_copies()
        x0, x1 = views[:2]
        q0, q1 = (self.projection_head(self.backbone(x)) for x in (x0, x1))
        k0, k1 = self.keys(x0), self.keys(x1)
        # One call on both pairs: lightly's loss reads the queue, scores every query against it,
        # and only then enqueues the keys. The mean over both halves is the mean of the two terms.
        return self.criterion(torch.cat([q0, q1]), torch.cat([k1, k0]))

    @classmethod
    def build_transform(cls, info: DataInfo, data_cfg: DataConfig) -> MoCoV2Transform:
        return MoCoV2Transform(**ssl_transform_kwargs(info, data_cfg))

    @classmethod
    def view_recipes(cls, info: DataInfo, data_cfg: DataConfig) -> list[ViewRecipe]:
        """MoCoV2Transform is SimCLR's view transform with MoCo v2's jitter, crop and blur."""
        recipe = ViewRecipe.from_lightly(
            SimCLRViewTransform,
            defaults_from=MoCoV2Transform,
            **ssl_transform_kwargs(info, data_cfg),
        )
        return [recipe, recipe]
