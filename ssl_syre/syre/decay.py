"""The SyRe step: decay toward the anchors in one fused pass per bucket, and when to run it."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ssl_syre.syre.anchors import check_precision, numel_chunks

MODES = ("decoupled", "coupled")
_DOUBLE_DECAY = (
    "set weight_decay=0 for the parameters SyRe covers; SyRe applies the decay toward its anchors "
    "(ssl_syre.syre.syre_param_groups builds such groups)"
)


def check_mode(mode: str) -> str:
    """`mode` if it is one of MODES; ValueError otherwise."""
    if mode not in MODES:
        raise ValueError(f"SyRe mode must be one of {MODES}, got '{mode}'")
    return mode


def steady_pull(mode: str, lr: float, weight_decay: float, momentum: float = 0.0) -> float:
    """Fraction of (w − θ0) that the decay alone removes per step, once momentum is steady.

    Decoupled decay moves the weights directly: lr·γ. Coupled decay is added to the gradient
    and so passes through SGD's momentum buffer, which sums it over about 1/(1 − β) steps:
    lr·γ/(1 − β), 10× the decoupled pull at β = 0.9. Compare arms by this number, not by γ.

    Examples:
        >>> round(steady_pull("coupled", lr=0.1, weight_decay=5e-4, momentum=0.9), 6)
        0.0005
    """
    check_mode(mode)
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    pull = lr * weight_decay
    return pull / (1.0 - momentum) if mode == "coupled" else pull


@torch.no_grad()
def decay_toward_anchor(
    params: list[Tensor],
    anchors: list[Tensor],
    scales: list[Tensor] | None,
    lr: float,
    weight_decay: float,
    mode: str,
) -> None:
    """One SyRe step on tensors of one device and dtype, in fused `_foreach_` passes.

    - decoupled: w ← w − lr·γ·D⊙(w − θ0), on the weights;
    - coupled: grad ← grad + γ·D⊙(w − θ0), on the gradients (every param needs one).

    Args:
        params: The parameters to decay.
        anchors: Their anchors θ0 (same device, dtype and strides), or [] for θ0 = 0.
        scales: D's diagonals, or None for D = I.
        lr: The learning rate of the params' optimizer group (a float or a 0-d tensor).
        weight_decay: γ.
        mode: "decoupled" or "coupled".
    """
    if mode == "decoupled":
        # float() also accepts a tensor lr (capturable optimizers).
        rate = float(lr) * weight_decay
        if rate == 0.0:
            return
        if not anchors:
            # θ0 = 0: w·(1 − r), the very op torch's AdamW decays with, so σ0 = 0 is AdamW's
            # decoupled decay bit for bit.
            if scales is None:
                torch._foreach_mul_(params, 1.0 - rate)
            else:
                torch._foreach_addcmul_(params, scales, params, value=-rate)
        # lerp(w, θ0, r) = w + r·(θ0 − w): one pass, no temporaries.
        elif scales is None:
            torch._foreach_lerp_(params, anchors, rate)
        else:
            torch._foreach_lerp_(params, anchors, torch._foreach_mul(scales, rate))
        return
    grads = [p.grad for p in params]
    # γ·D⊙(w − θ0) in two in-place passes instead of a temporary w − θ0; with θ0 = 0 the first
    # pass alone is torch SGD's own weight_decay op, bit for bit.
    if scales is None:
        torch._foreach_add_(grads, params, alpha=weight_decay)
        if anchors:
            torch._foreach_add_(grads, anchors, alpha=-weight_decay)
    else:
        torch._foreach_addcmul_(grads, scales, params, value=weight_decay)
        if anchors:
            torch._foreach_addcmul_(grads, scales, anchors, value=-weight_decay)


@torch.no_grad()
def decay_in_chunks(
    params: list[Tensor],
    make: Callable[[Tensor], tuple[Tensor | None, Tensor | None]],
    lr: float,
    weight_decay: float,
    mode: str,
) -> None:
    """`decay_toward_anchor` with each parameter's (θ0 or None, D or None) made by `make`, a
    chunk of at most `anchors.CHUNK_NUMEL` values at a time: anchors kept rounded or drawn
    again at each step never exist all at once in fp32."""
    for chunk in numel_chunks(params):
        chunk_params = [params[i] for i in chunk]
        made = [make(p) for p in chunk_params]
        anchors = [a for a, _ in made if a is not None]  # none when σ0 = 0
        scales = [d for _, d in made if d is not None] or None
        decay_toward_anchor(chunk_params, anchors, scales, lr, weight_decay, mode)


@dataclass
class Bucket:
    """Covered parameters of one optimizer param group on one (device, dtype), for foreach ops."""

    group_index: int
    device: torch.device
    dtype: torch.dtype
    params: list[Tensor] = field(default_factory=list)
    anchors: list[Tensor] = field(default_factory=list)
    scales: list[Tensor] | None = None

    def with_grad(self) -> tuple[list[Tensor], list[Tensor], list[Tensor] | None]:
        """The parameters that have a gradient this step, like torch optimizers skip the rest.

        `anchors` is empty when σ0 = 0 (no anchor tensors are kept on the device then).
        """
        if all(p.grad is not None for p in self.params):
            return self.params, self.anchors, self.scales
        keep = [i for i, p in enumerate(self.params) if p.grad is not None]
        scales = None if self.scales is None else [self.scales[i] for i in keep]
        anchors = [self.anchors[i] for i in keep] if self.anchors else []
        return [self.params[i] for i in keep], anchors, scales


DeviceTensors = Callable[[str, Tensor], tuple[Tensor | None, Tensor | None]]


def bucket_covered(
    optimizer: Optimizer, name_of: Mapping[int, str], on_device: DeviceTensors
) -> list[Bucket]:
    """The covered parameters of `optimizer` in foreach buckets, checked for double decay and
    precision.

    Args:
        optimizer: Its param groups are bucketed in order.
        name_of: Covered parameter name by `id(param)`; other parameters are skipped.
        on_device: (name, param) -> (anchor or None, D or None) on the param's device.

    Raises:
        ValueError: If a covered parameter sits in a group with weight_decay != 0, or is
            bf16/fp16.
    """
    buckets: dict[tuple[int, torch.device, torch.dtype], Bucket] = {}
    for index, group in enumerate(optimizer.param_groups):
        for param in group["params"]:
            name = name_of.get(id(param))
            if name is None:
                continue
            if group.get("weight_decay", 0.0):
                raise ValueError(
                    f"SyRe covers '{name}' but its optimizer param group {index} has "
                    f"weight_decay={group['weight_decay']}, which would decay it twice: "
                    + _DOUBLE_DECAY
                )
            check_precision([(name, param)])
            anchor, d = on_device(name, param)
            key = (index, param.device, param.dtype)
            bucket = buckets.get(key)
            if bucket is None:
                bucket = Bucket(index, param.device, param.dtype, scales=None if d is None else [])
                buckets[key] = bucket
            bucket.params.append(param)
            if anchor is not None:
                bucket.anchors.append(anchor)
            if bucket.scales is not None and d is not None:
                bucket.scales.append(d)
    return list(buckets.values())


class BucketCache:
    """The buckets of the last optimizer seen, rebuilt when its groups change.

    Rebuilding checks again what attach() checked, so a group whose weight_decay is set later,
    a param group added later, or a model cast to bf16 later is still caught.
    """

    def __init__(self) -> None:
        self._entry: tuple[weakref.ref[Optimizer], tuple[Any, ...], list[Bucket]] | None = None

    def get(self, optimizer: Optimizer, build: Callable[[], list[Bucket]]) -> list[Bucket]:
        """The cached buckets if `optimizer` and its groups are unchanged, else `build()`."""
        signature = tuple(
            (len(g["params"]), g.get("weight_decay", 0.0)) for g in optimizer.param_groups
        )
        entry = self._entry
        if entry is not None and entry[0]() is optimizer and entry[1] == signature:
            plan = entry[2]
            # A model moved or cast after the plan was built needs new anchor copies.
            if all(b.params[0].device == b.device and b.params[0].dtype == b.dtype for b in plan):
                return plan
        plan = build()
        self._entry = (weakref.ref(optimizer), signature, plan)
        return plan

    def clear(self) -> None:
        """Forget the buckets (on detach)."""
        self._entry = None


def after_gradients(
    args: tuple[Any, ...], kwargs: dict[str, Any], apply: Callable[[], None], coupled: bool
) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """The body of a step pre-hook that runs `apply` once the gradients of the step exist.

    Without a closure the gradients are already there: `apply` runs now. With one (Lightning
    always passes one), forward, zero_grad and backward happen inside step(), after the hook:
    applying here would decay toward θ0 before the gradient (decoupled) or be zeroed by the
    closure's zero_grad (coupled). So the closure is wrapped to run `apply` right after it.

    Args:
        args: The step's positional arguments; args[0] is the optimizer itself.
        kwargs: The step's keyword arguments.
        apply: The SyRe step.
        coupled: Whether `apply` adds to gradients (then it follows every closure call).

    Returns:
        New (args, kwargs) for the step, or None to keep them.
    """
    in_kwargs = "closure" in kwargs
    closure = kwargs["closure"] if in_kwargs else (args[1] if len(args) > 1 else None)
    if closure is None:
        apply()
        return None

    applied = False

    def closure_then_syre() -> Any:
        nonlocal applied
        loss = closure()
        # Optimizers such as LBFGS call the closure several times: the gradient term must be
        # added to each fresh gradient, but the weights decayed only once per step.
        if coupled or not applied:
            apply()
            applied = True
        return loss

    if in_kwargs:
        return args, {**kwargs, "closure": closure_then_syre}
    return (args[0], closure_then_syre, *args[2:]), kwargs
