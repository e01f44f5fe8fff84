"""Losses with a sync-free single-process path beside lightly's own.

- [0] SimCLR, 2020, https://arxiv.org/abs/2002.05709
"""

from __future__ import annotations

import torch
from lightly.loss import NTXentLoss as LightlyNTXentLoss
from lightly.utils import dist
from torch import Tensor, nn


class NTXentLoss(LightlyNTXentLoss):
    """lightly's NT-Xent [0]; in one process without a memory bank, the same loss computed
    without boolean indexing.

    lightly drops each view's similarity to itself with `logits[~diag_mask]`, a boolean index
    whose output size the host must read back from the device (a sync, twice a step). Here the
    (2n, 2n) similarities of both views get -inf on the diagonal instead: the same softmax over
    the same 2n - 1 candidates, equal to lightly's loss to float rounding. Several processes
    (gathered negatives) and memory banks keep lightly's own code.
    """

    def forward(self, out0: Tensor, out1: Tensor) -> Tensor:
        distributed = self.gather_distributed and dist.world_size() > 1
        if distributed or self.memory_bank.size[0] > 0:
            return super().forward(out0, out1)
        batch_size = out0.shape[0]
        views = nn.functional.normalize(torch.cat([out0, out1]), dim=1)
        logits = views @ views.T / self.temperature
        self_pairs = torch.eye(2 * batch_size, device=logits.device, dtype=torch.bool)
        logits = logits.masked_fill(self_pairs, float("-inf"))
        # Row i's positive is the other view of image i.
        index = torch.arange(batch_size, device=logits.device)
        labels = torch.cat([index + batch_size, index])
        return self.cross_entropy(logits, labels)
