"""Split BatchNorm: per-subset batch statistics on one device, in plain BatchNorm's tensors.

MoCo [0] shuffles the key batch across GPUs before the key encoder ("shuffling BN"), so that
BatchNorm's batch statistics cannot tell the key encoder which key belongs to which query, a
shortcut the paper found the model takes. On one device a permutation changes nothing for
BatchNorm; lightly's CIFAR-10 benchmark instead normalizes 8 subsets of the batch each with its
own statistics (lightly's `SplitBatchNorm`, from cifar10-fast), in the query and key encoders.

lightly's module keeps `num_splits` copies of the running statistics: its state dict is not a
BatchNorm2d's, so a timm backbone holding it would not export or load as itself. This one keeps
BatchNorm2d's parameters and buffers (same names, same shapes): in training each subset is
normalized by its own statistics and the running statistics move by the mean of the subsets'
(an EMA is linear: lightly's averaged copies at eval are the same numbers); in eval mode it is
BatchNorm2d. SyRe, the optimizer groups and the export therefore see the backbone unchanged.

- [0] MoCo, 2020, https://arxiv.org/abs/1911.05722 (Section 3.3, shuffling BN)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


def subset_count(batch: int, num_splits: int) -> int:
    """Subsets a batch of `batch` samples is split into: the largest count up to `num_splits`
    that divides it into subsets of at least two samples (1: plain BatchNorm)."""
    for count in range(min(num_splits, batch // 2), 1, -1):
        if batch % count == 0:
            return count
    return 1


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training forward normalizes `num_splits` subsets of the batch apart.

    Sample i joins subset i mod k (k from `subset_count`), as lightly's reshape does.
    """

    def __init__(self, num_features: int, num_splits: int, **kwargs: Any) -> None:
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits

    def forward(self, input: Tensor) -> Tensor:
        count = subset_count(input.shape[0], self.num_splits)
        if not self.training or count == 1:
            return super().forward(input)
        n, c = input.shape[:2]
        grouped = input.reshape(n // count, c * count, *input.shape[2:])
        track = self.track_running_stats and self.running_mean is not None
        momentum = self.momentum
        if track:
            self.num_batches_tracked.add_(1)
            if momentum is None:  # BatchNorm's cumulative average
                momentum = 1.0 / float(self.num_batches_tracked)
        mean = self.running_mean.repeat(count) if track else None
        var = self.running_var.repeat(count) if track else None
        weight = self.weight.repeat(count) if self.affine else None
        bias = self.bias.repeat(count) if self.affine else None
        out = F.batch_norm(grouped, mean, var, weight, bias, True, momentum or 0.0, self.eps)
        if track:
            with torch.no_grad():
                self.running_mean.copy_(mean.view(count, c).mean(0))
                self.running_var.copy_(var.view(count, c).mean(0))
        return out.reshape(input.shape)


def split_batch_norms(module: nn.Module, num_splits: int) -> list[str]:
    """Turn every nn.BatchNorm2d of `module` into a SplitBatchNorm2d with the same tensors
    (and set `num_splits` on those already split); returns the names of BatchNorm layers of
    other types, which stay as they are."""
    others = []
    for name, child in list(module.named_modules()):
        if isinstance(child, SplitBatchNorm2d):
            child.num_splits = num_splits
        elif type(child) is nn.BatchNorm2d:
            parent, _, attribute = name.rpartition(".")
            split = SplitBatchNorm2d(
                child.num_features,
                num_splits,
                eps=child.eps,
                momentum=child.momentum,
                affine=child.affine,
                track_running_stats=child.track_running_stats,
            )
            # The same Parameter and buffer objects: nothing that holds them sees a change.
            split._parameters = child._parameters
            split._buffers = child._buffers
            split.train(child.training)
            setattr(module.get_submodule(parent) if parent else module, attribute, split)
        elif isinstance(child, _BatchNorm) and not isinstance(child, nn.SyncBatchNorm):
            others.append(name)
    return others
