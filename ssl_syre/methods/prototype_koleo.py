"""KoLeo on a method's prototypes, the remedy for partial prototype collapse that Govindarajan
et al. [0] propose; one term shared by DINO, iBOT, DINOv2 and SwAV
(`method_kwargs.prototype_koleo_weight`, 0: off, the published methods).

- [0] Govindarajan et al., On Partial Prototype Collapse in the DINO Family of
  Self-Supervised Methods, BMVC 2024, https://arxiv.org/abs/2410.14060
- [1] KoLeo: Sablayrolles et al., Spreading vectors for similarity search, 2019,
  https://arxiv.org/abs/1806.03198
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from lightly.loss import KoLeoLoss
from lightning.pytorch import LightningModule
from torch import Tensor


def prototype_koleo(prototypes: Iterable[Tensor]) -> Tensor:
    """lightly's KoLeoLoss over each layer's K prototypes (its rows, which KoLeoLoss normalises
    to unit vectors, as [1]'s are), summed over the layers: pushes every prototype away from
    its nearest neighbour. Costs a K x K similarity per layer."""
    criterion = KoLeoLoss()  # stateless: p = 2, eps = 1e-8 (DINOv2's)
    return torch.stack([criterion(weight) for weight in prototypes]).sum()


def add_prototype_koleo(
    method: LightningModule, loss: Tensor, prototypes: Iterable[Tensor], weight: float
) -> Tensor:
    """`loss` + weight x prototype_koleo(prototypes), the KoLeo term logged as
    train/prototype_koleo_loss; at weight 0 `loss` itself, untouched (the control arm)."""
    if weight <= 0:
        return loss
    koleo = prototype_koleo(prototypes)
    method.log("train/prototype_koleo_loss", koleo.detach())
    return loss + weight * koleo
