"""Momentum (EMA) copies of a method's parts: frozen, cosine-scheduled, once per optimizer step.

BYOL's target network, MoCo's key encoder and DINO's teacher are the same mechanism: a copy of
some online parts that the optimizer never trains and SyRe never decays; it follows the online
weights (anchors included) by `update_momentum` from lightly.
"""

from __future__ import annotations

import copy
from typing import ClassVar

from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule

from ssl_syre.methods.base import SSLMethod


class MomentumMethod(SSLMethod):
    """An SSLMethod with momentum copies `<part>_momentum` of the parts in `momentum_parts`.

    A subclass calls `build_momentum_copies()` at the end of `build_heads` and
    `update_momentum_copies()` at the start of `training_loss`; its `Kwargs` has
    `momentum_start` and `momentum_end` (the cosine schedule's ends).
    """

    momentum_parts: ClassVar[tuple[str, ...]] = ("backbone", "projection_head")

    def build_momentum_copies(self) -> None:
        for part in self.momentum_parts:
            target = copy.deepcopy(getattr(self, part))
            deactivate_requires_grad(target)
            setattr(self, f"{part}_momentum", target)
        # global_step of the last update; a resumed run starts unset and updates at its first
        # step, as the uninterrupted run does.
        self._momentum_step: int | None = None

    def momentum(self) -> float:
        """The EMA factor now: cosine from momentum_start to momentum_end over the run."""
        if self._trainer is None:  # outside fit (tests, notebooks): the schedule's start
            return self.kwargs.momentum_start
        total = max(1, int(self.trainer.estimated_stepping_batches))
        return cosine_schedule(
            self.global_step, total, self.kwargs.momentum_start, self.kwargs.momentum_end
        )

    def update_momentum_copies(self) -> float:
        """One EMA step per optimizer step; returns the momentum used.

        With trainer.accumulate_grad_batches > 1 several micro-batches share a global_step and
        the online weights have not moved between them (solo-learn guards its update the same
        way). Outside a Trainer every call is a step.
        """
        momentum = self.momentum()
        step = self.global_step if self._trainer is not None else None
        if step is None or step != self._momentum_step:
            for part in self.momentum_parts:
                update_momentum(getattr(self, part), getattr(self, f"{part}_momentum"), m=momentum)
            self._momentum_step = step
        self.log("train/momentum", momentum)
        return momentum
