"""LARS whose trust ratio also scales the weights SyRe decays, with SyRe's pull inside it.

lightly's `LARS` (Large Batch Training of Convolutional Networks, You et al. 2017,
https://arxiv.org/abs/1708.03888) applies its layer-wise trust ratio only to groups with
`weight_decay != 0`, which is how it leaves biases and norms alone. SyRe gives the weights it
covers `weight_decay=0` (it decays them itself), so under plain `LARS` those weights would take
unscaled SGD steps at a LARS-sized learning rate. `SyReLARS` gives them LARS's step with SyRe's
decay in the place of LARS's own:

    lars_lr = trust · ‖w‖ / (‖g‖ + γ·‖D⊙(w − θ0)‖ + eps),   d = lars_lr · (g + γ·D⊙(w − θ0))

With θ0 = 0 and D = I (the off arm, `syre.enabled=false`) this is lightly's LARS step with
`weight_decay=γ`, bit for bit. The decay sits inside the trust ratio, as LARS's own decay does,
so it is the coupled form: `SyReLARS` needs `SyRe(mode="coupled")`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from lightly.utils.lars import LARS

from ssl_syre.syre import SyRe


class SyReLARS(LARS):
    """lightly's LARS that applies SyRe's coupled decay itself, inside its trust ratio.

    Parameters SyRe does not cover follow lightly's rules unchanged (trust ratio where the
    group's weight_decay != 0). Covered parameters get the trust ratio whatever γ is (they are
    the weights LARS adapts), except, as in lightly, when ‖w‖ or ‖g‖ is 0: then the plain
    gradient, without decay. SyRe is not attached to this optimizer (that would add its term a
    second time); `syre.check_optimizer` checks the groups instead.

    Args:
        params: Param groups, e.g. from `ssl_syre.syre.syre_param_groups`.
        syre: The SyRe whose covered parameters this optimizer decays; mode must be "coupled".
        **kwargs: lightly's `LARS` arguments (lr, momentum, trust_coefficient, eps, ...).

    Raises:
        ValueError: If `syre.mode` is not "coupled", or as `SyRe.check_optimizer`.
    """

    def __init__(self, params: Iterable[Any], syre: SyRe, **kwargs: Any) -> None:
        if syre.mode != "coupled":
            raise ValueError(
                "SyReLARS puts SyRe's decay inside LARS's trust ratio, which is the coupled form; "
                f"build the SyRe with mode='coupled' (got '{syre.mode}')"
            )
        super().__init__(params, **kwargs)
        syre.check_optimizer(self)
        self.syre = syre

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One step: SyRe's trust-ratio-scaled gradient for covered weights, then lightly's LARS.

        The covered gradients are replaced by lars_lr·(g + γ·D⊙(w − θ0)); their groups have
        weight_decay=0, so lightly's step then only applies momentum and the lr to them.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        gamma = self.syre.weight_decay
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or not self.syre.covers(p):
                    continue
                p_norm = torch.norm(p.data)
                g_norm = torch.norm(p.grad.data)
                if p_norm != 0 and g_norm != 0:
                    displacement = self.syre.displacement(p)
                    lars_lr = p_norm / (g_norm + torch.norm(displacement) * gamma + group["eps"])
                    lars_lr *= group["trust_coefficient"]
                    p.grad.add_(displacement, alpha=gamma).mul_(lars_lr)
        super().step()
        return loss


__all__ = ["SyReLARS"]
