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
    same entries are taken with `gather` and a precomputed index, so the loss and its gradients
    are lightly's, bit for bit on a CPU. Several processes (gathered negatives) and memory banks
    keep lightly's own code.
    """

    def forward(self, out0: Tensor, out1: Tensor) -> Tensor:
        distributed = self.gather_distributed and dist.world_size() > 1
        if distributed or self.memory_bank.size[0] > 0:
            return super().forward(out0, out1)
        batch_size = out0.shape[0]
        out0 = nn.functional.normalize(out0, dim=1)
        out1 = nn.functional.normalize(out1, dim=1)
        # lightly's operations in lightly's order (the same numbers bit for bit), except that
        # the off-diagonal entries are gathered by index instead of a boolean mask.
        logits_00 = torch.einsum("nc,mc->nm", out0, out0) / self.temperature
        logits_01 = torch.einsum("nc,mc->nm", out0, out1) / self.temperature
        logits_10 = torch.einsum("nc,mc->nm", out1, out0) / self.temperature
        logits_11 = torch.einsum("nc,mc->nm", out1, out1) / self.temperature
        rows = torch.arange(batch_size, device=out0.device).unsqueeze(1)
        columns = torch.arange(batch_size - 1, device=out0.device).expand(batch_size, -1)
        off_diagonal = columns + (columns >= rows)  # row i: every column but i, in order
        logits_00 = logits_00.gather(1, off_diagonal)
        logits_11 = logits_11.gather(1, off_diagonal)
        logits = torch.cat(
            [torch.cat([logits_01, logits_00], dim=1), torch.cat([logits_10, logits_11], dim=1)]
        )
        labels = torch.arange(batch_size, device=out0.device, dtype=torch.long).repeat(2)
        return self.cross_entropy(logits, labels)
