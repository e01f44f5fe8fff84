"""Optimizer and lr-schedule helpers of SSLMethod: the cosine schedule, fixed-lr groups, kernels."""

from __future__ import annotations

from typing import Any

import torch
from lightly.utils.scheduler import CosineWarmupScheduler
from torch import nn


class CosineSchedule(CosineWarmupScheduler):
    """lightly's cosine schedule whose length and peak lr come from this run's config, not a
    checkpoint.

    A run resumed with a larger trainer.max_epochs then stretches its schedule to the new end
    (as BYOL's momentum schedule does), instead of idling at the final lr past the old end; one
    resumed with another optimizer.lr follows the curve of a run configured so from the start.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, warmup_epochs: int, max_epochs: int
    ) -> None:
        super().__init__(optimizer, warmup_epochs=warmup_epochs, max_epochs=max_epochs)
        # Groups marked "fixed_lr" (see SSLMethod.fixed_lr_parts) keep their peak lr throughout.
        for index, group in enumerate(optimizer.param_groups):
            if group.get("fixed_lr"):
                self.lr_lambdas[index] = _fixed_lr
                group["lr"] = self.base_lrs[index]
        self._last_lr = [group["lr"] for group in optimizer.param_groups]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        length = {"warmup_epochs": self.warmup_epochs, "max_epochs": self.max_epochs}
        base_lrs = list(self.base_lrs)  # this run's peak lrs (the checkpoint holds the old ones)
        super().load_state_dict(state_dict)
        self.__dict__.update(length)
        self.base_lrs = base_lrs
        # The optimizer's lr was restored before this; set it from the schedule it follows now.
        for group, base_lr, scale in zip(
            self.optimizer.param_groups, self.base_lrs, self.lr_lambdas, strict=True
        ):
            group["initial_lr"] = base_lr
            group["lr"] = base_lr * scale(self.last_epoch)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def _fixed_lr(step: int) -> float:
    """The schedule of a fixed-lr group: its peak lr at every step (a plain function, so that
    LambdaLR leaves it out of state dicts)."""
    return 1.0


# Param-group key: the group's plain weight_decay follows optimizer.weight_decay_end's schedule.
SCHEDULED_DECAY = "scheduled_decay"


def mark_scheduled_decay(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flag the groups whose plain decay follows the decay schedule (the "decay" group as
    `syre_param_groups` builds it; SyRe's own γ is scheduled on SyRe). A flag, not the name:
    splits of a group (`split_fixed_lr`'s "decay/fixed_lr") keep it under another name."""
    return [{**group, SCHEDULED_DECAY: group["name"] == "decay"} for group in groups]


def split_fixed_lr(groups: list[dict[str, Any]], fixed: set[int]) -> list[dict[str, Any]]:
    """Each param group split in two: the parameters in `fixed` (by id), marked "fixed_lr",
    and the rest; empty halves are left out, decay settings are kept."""
    split = []
    for group in groups:
        for is_fixed in (False, True):
            params = [p for p in group["params"] if (id(p) in fixed) == is_fixed]
            if params:
                extra = {"name": f"{group['name']}/fixed_lr", "fixed_lr": True} if is_fixed else {}
                split.append({**group, "params": params, **extra})
    return split


def conv_linear_names(module: nn.Module) -> set[str]:
    """Names of the weights and biases of every conv and linear layer of `module`."""
    layers = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    return {
        f"{prefix}.{name}" if prefix else name
        for prefix, layer in module.named_modules()
        if isinstance(layer, layers)
        for name, _ in layer.named_parameters(recurse=False)
    }


def optimizer_kernels(implementation: str) -> dict[str, bool]:
    """torch optimizer arguments for config optimizer.implementation (auto: torch's choice)."""
    return {
        "auto": {},
        "for_loop": {"foreach": False},
        "foreach": {"foreach": True},
        "fused": {"fused": True},
    }[implementation]
