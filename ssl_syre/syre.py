"""SyRe: weight decay toward fixed random anchors, applied through optimizer step hooks.

Implements syre from Liu Ziyin, Yizhou Xu, Isaac Chuang, "Remove Symmetries to Control Model
Expressivity and Improve Optimization", ICLR 2025, https://arxiv.org/abs/2408.15495:

    "We then propose a simple and theoretically justified algorithm, syre, to remove almost all
    symmetry-induced low-capacity states in neural networks."

The paper trains ℓ(θ + θ0) + γ/2·θᵀDθ with θ0 a random bias drawn once and never trained, and D
the identity or a random positive diagonal ("advanced removal", for rotation symmetries). In the
effective weights w = θ + θ0 this is weight decay toward θ0 instead of toward 0, so the model
keeps its usual parameters (nothing changes in the forward pass or in the exported weights) and
SyRe only touches the optimizer step.

- [0] Remove Symmetries to Control Model Expressivity and Improve Optimization, 2024,
  https://arxiv.org/abs/2408.15495
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

NamedParameters = Iterable[tuple[str, nn.Parameter]]

MODES = ("decoupled", "coupled")
# How sigma0 sets the anchor std: sigma0/√fan_in (init-relative), or sigma0 itself (the paper's
# θ0 ~ N(0, σ0²) read literally).
ANCHOR_SCALES = ("fan_in", "absolute")
_LOW_PRECISION = (torch.bfloat16, torch.float16)
_DOUBLE_DECAY = (
    "set weight_decay=0 for the parameters SyRe covers; SyRe applies the decay toward its anchors "
    "(ssl_syre.syre.syre_param_groups builds such groups)"
)


def _no_weight_decay_patterns(module: nn.Module) -> list[str]:
    """Collect the `no_weight_decay()` names of `module` and of all its sub-modules.

    timm only asks the top-level model; SSL wrappers hold the timm backbone as a sub-module
    (e.g. `backbone.pos_embed`), so each sub-module's names are prefixed with its path.
    """
    patterns: list[str] = []
    for prefix, submodule in module.named_modules():
        no_weight_decay = getattr(submodule, "no_weight_decay", None)
        if not callable(no_weight_decay):
            continue
        for name in no_weight_decay():
            patterns.append(f"{prefix}.{name}" if prefix else name)
    return patterns


def _is_decayed(name: str, param: Tensor, patterns: Iterable[str], include_1d: bool) -> bool:
    """The weight-decay convention of `timm.optim.param_groups_weight_decay`.

    Biases and 1-D tensors (norm weights) and `no_weight_decay()` names get no decay, because
    decaying them only shrinks scales the next layer or norm undoes.
    """
    if any(fnmatch.fnmatch(name, pattern) for pattern in patterns):
        return False
    return include_1d or not (param.ndim <= 1 or name.endswith(".bias"))


def _generator(seed: int, name: str, stream: str) -> torch.Generator:
    """A CPU generator seeded from (seed, parameter name, stream).

    Hashing the name (not Python's salted `hash`) makes each anchor independent of parameter
    order, process, device and resume: the same seed and name always give the same tensor.
    """
    digest = hashlib.sha256(f"syre/{stream}/{seed}/{name}".encode()).digest()
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return generator


def _fan_in(param: Tensor) -> int:
    """Inputs per output unit: prod of the dims after the first; 1 for 1-D tensors."""
    return max(1, param[0].numel()) if param.ndim >= 2 else 1


@dataclass
class _Bucket:
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


class SyRe:
    """Decay toward fixed random anchors θ0 instead of toward 0 (syre, [0]).

    Each covered parameter w gets an anchor θ0 ~ N(0, σ²) with σ = sigma0/√fan_in (or
    σ = sigma0 with `anchor_scale="absolute"`, the paper's θ0 ~ N(0, σ0²)), drawn once
    and never trained, and, with `d_eps > 0`, a diagonal D with entries uniform in
    [1 − d_eps, 1 + d_eps]. Every optimizer step then applies, with the group's current lr:

    - `mode="decoupled"` (like AdamW): w ← w − lr·γ·D⊙(w − θ0), before the optimizer's update
      and after the gradient is computed, as `torch.optim.AdamW` orders its decay;
    - `mode="coupled"` (like SGD's `weight_decay`): grad ← grad + γ·D⊙(w − θ0).

    Under plain SGD both are exactly gradient descent on the paper's loss
    ℓ(θ + θ0) + γ/2·θᵀDθ with θ = w − θ0. With momentum β, coupled pulls lr·γ/(1 − β) per step,
    decoupled lr·γ (`steady_pull`): 10x apart at β = 0.9, so compare runs in one mode. Coupled is
    the paper's loss handed to the optimizer and the form of SGD's own `weight_decay`; decoupled
    is the form of AdamW's. The training config picks the optimizer's own form (`syre.mode=auto`:
    coupled for SGD/LARS, decoupled for AdamW); this class defaults to decoupled, which pulls the
    same under any optimizer. `sigma0=0` is the control: plain decay toward 0 through this same
    update, bit for bit torch SGD's `weight_decay` (coupled) or AdamW's decay (decoupled).

    Coverage follows the usual weight-decay convention (`timm.optim.param_groups_weight_decay`):
    trainable tensors with ndim ≥ 2 whose name does not end in `.bias`, minus the
    `no_weight_decay()` names of the module and its sub-modules. `include_1d=True` adds biases
    and norm weights; `parameters=` narrows the candidates to an explicit list (e.g. backbone and
    projection head, not a BYOL momentum copy), the convention still applying to it.

    Anchors are drawn on the CPU from a generator seeded by `seed` and the parameter's name, so
    they do not depend on parameter order, device, process or resume, and drawing them leaves
    torch's global RNG untouched. 1-D tensors, when covered, use fan_in = 1 (σ = sigma0).

    Covered parameters must be fp32 or fp64: in bf16/fp16 the per-step pull lr·γ·(w − θ0) is
    below one ulp of w and rounds away (use fp32 master weights, e.g. Lightning
    `precision="bf16-mixed"`).

    Args:
        module: The model whose parameters SyRe covers (names are `module.named_parameters()`).
        weight_decay: γ, the strength of the pull toward the anchors.
        sigma0: Anchor scale; the anchor std is sigma0/√fan_in (see `anchor_scale`); 0 makes
            this plain decay toward 0 through the same update. The default 1.0 puts the anchors
            at about the init scale (0.044 absolute on a fan_in-512 layer), below the paper's
            "no harm under 0.2" (absolute, ResNet-18/CIFAR-10); 0.01 fan_in-relative was too
            small to change anything in our collapse studies.
        d_eps: Half-width of D's entries around 1 ("advanced removal"); 0 means D = I, and no D
            tensors are stored or multiplied.
        seed: Seed of the anchors (and of D); another seed gives other anchors.
        mode: "decoupled" (decay the weights, like AdamW) or "coupled" (add to the gradient).
        include_1d: Also cover biases and other 1-D tensors.
        parameters: Optional (name, parameter) pairs to consider instead of all of
            `module.named_parameters()`.
        anchor_scale: "fan_in" (std sigma0/√fan_in: one sigma0 means the same fraction of
            each layer's init scale) or "absolute" (std sigma0 for every tensor, the paper's
            θ0 ~ N(0, σ0²) as written; sigma0 = 0.01 absolute is 0.01·√512 ≈ 0.23 fan_in-relative
            on a fan_in-512 layer).

    Raises:
        ValueError: For an unknown mode, negative weight_decay/sigma0, d_eps outside [0, 1),
            bf16/fp16 covered parameters, or duplicate names in `parameters`.

    Examples:
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
        >>> syre = SyRe(model, weight_decay=5e-4, sigma0=1.0)
        >>> optimizer = torch.optim.SGD(
        ...     syre_param_groups(model, syre, weight_decay=5e-4), lr=0.1, momentum=0.9
        ... )
        >>> syre.attach(optimizer)
        >>> syre.covered_names
        ['0.weight', '2.weight']
    """

    def __init__(
        self,
        module: nn.Module,
        weight_decay: float = 5e-4,
        sigma0: float = 1.0,
        d_eps: float = 0.0,
        seed: int = 0,
        mode: str = "decoupled",
        include_1d: bool = False,
        parameters: NamedParameters | None = None,
        anchor_scale: str = "fan_in",
    ) -> None:
        if anchor_scale not in ANCHOR_SCALES:
            raise ValueError(
                f"SyRe anchor_scale must be one of {ANCHOR_SCALES}, got '{anchor_scale}'"
            )
        self._anchor_scale = anchor_scale
        if sigma0 < 0:
            raise ValueError(f"SyRe sigma0 must be >= 0, got {sigma0}")
        if not 0.0 <= d_eps < 1.0:
            raise ValueError(f"SyRe d_eps must be in [0, 1) so that D stays positive, got {d_eps}")
        self.weight_decay = weight_decay
        self.mode = mode
        self._sigma0 = float(sigma0)
        self._d_eps = float(d_eps)
        self._seed = int(seed)
        self._include_1d = bool(include_1d)

        patterns = _no_weight_decay_patterns(module)
        candidates = list(module.named_parameters() if parameters is None else parameters)
        self._params: dict[str, nn.Parameter] = {}
        seen: set[int] = set()
        for name, param in candidates:
            if name in self._params:
                raise ValueError(f"SyRe got the parameter name '{name}' twice in parameters=")
            # Shared parameters appear once, as in module.named_parameters().
            if id(param) in seen or not param.requires_grad:
                continue
            if not _is_decayed(name, param, patterns, self._include_1d):
                continue
            seen.add(id(param))
            self._params[name] = param
        self._check_precision(self._params.items())
        self._name_of: dict[int, str] = {id(p): name for name, p in self._params.items()}

        self._anchors: dict[str, Tensor] = {}
        self._d_diagonal: dict[str, Tensor] | None = {} if self._d_eps > 0 else None
        for name, param in self._params.items():
            self._anchors[name] = self._draw_anchor(name, param.shape, _fan_in(param))
            if self._d_diagonal is not None:
                self._d_diagonal[name] = self._draw_d(name, param.shape)

        # name -> (device, dtype, anchor, d) on the parameter's device, filled lazily.
        self._device_tensors: dict[str, tuple[torch.device, torch.dtype, Tensor, Tensor | None]]
        self._device_tensors = {}
        self._version = 0  # bumped when anchors change, so cached plans are rebuilt
        self._plan_cache: tuple[weakref.ref[Optimizer], tuple[Any, ...], list[_Bucket]] | None
        self._plan_cache = None
        self._handle: Any = None

    # ------------------------------------------------------------------ configuration

    @property
    def weight_decay(self) -> float:
        """γ, the strength of the pull toward the anchors; settable (e.g. by a schedule)."""
        return self._weight_decay

    @weight_decay.setter
    def weight_decay(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"SyRe weight_decay must be >= 0, got {value}")
        self._weight_decay = float(value)

    @property
    def mode(self) -> str:
        """ "decoupled" (decay the weights, like AdamW) or "coupled" (add to the gradient)."""
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"SyRe mode must be one of {MODES}, got '{value}'")
        self._mode = value

    @property
    def sigma0(self) -> float:
        """Anchor scale: anchor std = sigma0/√fan_in, or sigma0 when anchor_scale is absolute."""
        return self._sigma0

    @property
    def anchor_scale(self) -> str:
        """ "fan_in" (std sigma0/√fan_in) or "absolute" (std sigma0)."""
        return self._anchor_scale

    @property
    def d_eps(self) -> float:
        """Half-width of D's entries around 1; 0 means D = I."""
        return self._d_eps

    @property
    def seed(self) -> int:
        """Seed of the anchors and of D."""
        return self._seed

    @property
    def include_1d(self) -> bool:
        """Whether biases and other 1-D tensors are covered."""
        return self._include_1d

    @property
    def covered_names(self) -> list[str]:
        """Names of the covered parameters, in the order they were found."""
        return list(self._params)

    def covered_parameters(self) -> Iterator[nn.Parameter]:
        """The covered parameters, in the order of `covered_names`."""
        return iter(self._params.values())

    @property
    def anchors(self) -> dict[str, Tensor]:
        """θ0 per covered name, as fp32 CPU tensors (do not modify them in place)."""
        return dict(self._anchors)

    @property
    def d_diagonal(self) -> dict[str, Tensor] | None:
        """D's diagonal per covered name (fp32, CPU), or None when d_eps == 0 (D = I)."""
        return None if self._d_diagonal is None else dict(self._d_diagonal)

    @property
    def attached(self) -> bool:
        """Whether SyRe's hook is registered on an optimizer."""
        return self._handle is not None

    def __repr__(self) -> str:
        numel = sum(p.numel() for p in self._params.values())
        return (
            f"SyRe(covered={len(self._params)} tensors/{numel} values, "
            f"weight_decay={self._weight_decay}, sigma0={self._sigma0} ({self._anchor_scale}), "
            f"d_eps={self._d_eps}, "
            f"seed={self._seed}, mode='{self._mode}', attached={self.attached})"
        )

    # ------------------------------------------------------------------ anchors

    def _draw_anchor(self, name: str, shape: torch.Size, fan_in: int) -> Tensor:
        if self._sigma0 == 0.0:  # exact +0.0 everywhere (randn·0 would give some -0.0)
            return torch.zeros(shape, dtype=torch.float32)
        divisor = math.sqrt(fan_in) if self._anchor_scale == "fan_in" else 1.0
        std = self._sigma0 / divisor
        generator = _generator(self._seed, name, "anchor")
        return torch.randn(shape, generator=generator, dtype=torch.float32).mul_(std)

    def _draw_d(self, name: str, shape: torch.Size) -> Tensor:
        generator = _generator(self._seed, name, "d")
        uniform = torch.rand(shape, generator=generator, dtype=torch.float32)
        return uniform.mul_(2 * self._d_eps).add_(1 - self._d_eps)

    @staticmethod
    def _check_precision(named: Iterable[tuple[str, Tensor]]) -> None:
        for name, param in named:
            if param.dtype in _LOW_PRECISION:
                raise ValueError(
                    f"SyRe cannot decay the {param.dtype} parameter '{name}': its pull toward "
                    "the anchor falls below one ulp and rounds away; keep fp32 master weights "
                    "(e.g. Lightning precision='bf16-mixed' instead of 'bf16-true')"
                )

    @property
    def zero_anchors(self) -> bool:
        """σ0 = 0: plain decay toward 0 through SyRe's own update (the fair "off" arm)."""
        return self._sigma0 == 0.0

    def _on_device(self, name: str, param: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Anchor (and D) on `param`'s device, dtype and memory layout, cached until it moves.

        With σ0 = 0 the anchor is None: the update then needs no anchor tensor at all.
        """
        cached = self._device_tensors.get(name)
        if cached is not None and cached[0] == param.device and cached[1] == param.dtype:
            return cached[2], cached[3]

        def like_param(master: Tensor) -> Tensor:
            # Matching strides keeps channels_last weights on the foreach fast path.
            if param.device == master.device and param.dtype == master.dtype:
                if param.is_contiguous():
                    return master
            return torch.empty_like(param, memory_format=torch.preserve_format).copy_(master)

        anchor = None if self.zero_anchors else like_param(self._anchors[name])
        d = None if self._d_diagonal is None else like_param(self._d_diagonal[name])
        self._device_tensors[name] = (param.device, param.dtype, anchor, d)
        return anchor, d

    # ------------------------------------------------------------------ optimizer

    def _plan(self, optimizer: Optimizer) -> list[_Bucket]:
        """Covered parameters of `optimizer` in foreach buckets, rebuilt when the groups change.

        Rebuilding checks again what attach() checked, so a group whose weight_decay is set
        later, a param group added later, or a model cast to bf16 later is still caught.
        """
        groups = optimizer.param_groups
        signature = (
            self._version,
            tuple((len(g["params"]), g.get("weight_decay", 0.0)) for g in groups),
        )
        cache = self._plan_cache
        if cache is not None and cache[0]() is optimizer and cache[1] == signature:
            plan = cache[2]
            # A model moved or cast after the plan was built needs new anchor copies.
            if all(b.params[0].device == b.device and b.params[0].dtype == b.dtype for b in plan):
                return plan

        buckets: dict[tuple[int, torch.device, torch.dtype], _Bucket] = {}
        for index, group in enumerate(groups):
            for param in group["params"]:
                name = self._name_of.get(id(param))
                if name is None:
                    continue
                if group.get("weight_decay", 0.0):
                    raise ValueError(
                        f"SyRe covers '{name}' but its optimizer param group {index} has "
                        f"weight_decay={group['weight_decay']}, which would decay it twice: "
                        + _DOUBLE_DECAY
                    )
                self._check_precision([(name, param)])
                key = (index, param.device, param.dtype)
                bucket = buckets.get(key)
                if bucket is None:
                    bucket = _Bucket(index, param.device, param.dtype)
                    bucket.scales = None if self._d_diagonal is None else []
                    buckets[key] = bucket
                anchor, d = self._on_device(name, param)
                bucket.params.append(param)
                if anchor is not None:
                    bucket.anchors.append(anchor)
                if bucket.scales is not None and d is not None:
                    bucket.scales.append(d)
        plan = list(buckets.values())
        self._plan_cache = (weakref.ref(optimizer), signature, plan)
        return plan

    @torch.no_grad()
    def apply(self, optimizer: Optimizer) -> None:
        """Apply one SyRe step to the covered parameters `optimizer` holds.

        This is what the hook installed by `attach` runs inside every `optimizer.step()`; call it
        directly only when not attached (e.g. in a custom loop, between backward and step).
        Decoupled mode moves the weights, coupled mode adds to the gradients; parameters without
        a gradient are skipped, and each group's current lr is used (so LR schedules apply).

        Args:
            optimizer: The optimizer whose param groups (and lrs) to use.

        Raises:
            ValueError: If a covered parameter sits in a group with weight_decay != 0, or is
                bf16/fp16.
        """
        gamma = self._weight_decay
        plan = self._plan(optimizer)
        if gamma == 0.0:
            return
        groups = optimizer.param_groups
        for bucket in plan:
            params, anchors, scales = bucket.with_grad()
            if not params:
                continue
            if self._mode == "decoupled":
                # float() also accepts a tensor lr (capturable optimizers).
                rate = float(groups[bucket.group_index]["lr"]) * gamma
                if rate == 0.0:
                    continue
                if not anchors:
                    # θ0 = 0: w·(1 − r), the very op torch's AdamW decays with, so σ0 = 0 is
                    # AdamW's decoupled decay bit for bit.
                    if scales is None:
                        torch._foreach_mul_(params, 1.0 - rate)
                    else:
                        torch._foreach_addcmul_(params, scales, params, value=-rate)
                # lerp(w, θ0, r) = w + r·(θ0 − w): one pass, no temporaries.
                elif scales is None:
                    torch._foreach_lerp_(params, anchors, rate)
                else:
                    torch._foreach_lerp_(params, anchors, torch._foreach_mul(scales, rate))
            else:
                grads = [p.grad for p in params]
                # γ·D⊙(w − θ0) in two in-place passes instead of a temporary w − θ0; with
                # θ0 = 0 the first pass alone is torch SGD's own weight_decay op, bit for bit.
                if scales is None:
                    torch._foreach_add_(grads, params, alpha=gamma)
                    if anchors:
                        torch._foreach_add_(grads, anchors, alpha=-gamma)
                else:
                    torch._foreach_addcmul_(grads, scales, params, value=gamma)
                    if anchors:
                        torch._foreach_addcmul_(grads, scales, anchors, value=-gamma)

    def _pre_step(
        self, optimizer: Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """Step pre-hook: apply SyRe once the gradients of this step exist.

        Without a closure the gradients are already there. With one (Lightning always passes
        one), forward, zero_grad and backward happen inside step(), after this hook: applying
        SyRe here would decay toward θ0 before the gradient (decoupled) or be zeroed by the
        closure's zero_grad (coupled). So the closure is wrapped to apply SyRe right after it.
        """
        # args[0] is the optimizer itself (torch passes self through to the hooks).
        in_kwargs = "closure" in kwargs
        closure = kwargs["closure"] if in_kwargs else (args[1] if len(args) > 1 else None)
        if closure is None:
            self.apply(optimizer)
            return None

        applied = False

        def closure_then_syre() -> Any:
            nonlocal applied
            loss = closure()
            # Optimizers such as LBFGS call the closure several times: the gradient term must
            # be added to each fresh gradient, but the weights decayed only once per step.
            if self._mode == "coupled" or not applied:
                self.apply(optimizer)
                applied = True
            return loss

        if in_kwargs:
            return args, {**kwargs, "closure": closure_then_syre}
        return (args[0], closure_then_syre, *args[2:]), kwargs

    def attach(self, optimizer: Optimizer) -> None:
        """Make every `optimizer.step()` also apply SyRe (see `apply`).

        Args:
            optimizer: A torch optimizer holding the covered parameters in groups with
                weight_decay=0 (see `syre_param_groups`).

        Raises:
            ValueError: If already attached, if the optimizer does not hold every covered
                parameter, if a covered parameter would be decayed twice, or is bf16/fp16.
        """
        if self._handle is not None:
            raise ValueError(
                "SyRe is already attached to an optimizer; call syre.detach() before attaching "
                "it again"
            )
        self.check_optimizer(optimizer)
        self._handle = optimizer.register_step_pre_hook(self._pre_step)

    def check_optimizer(self, optimizer: Optimizer) -> None:
        """Check what `attach` needs: every covered parameter held, in a group with
        weight_decay=0, in fp32 or fp64. Optimizers that apply SyRe's term themselves (such as
        `ssl_syre.lars.SyReLARS`) call this instead of being attached.

        Raises:
            ValueError: as `attach` does.
        """
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = [name for name, p in self._params.items() if id(p) not in held]
        if missing:
            raise ValueError(
                f"SyRe covers {len(missing)} parameters this optimizer does not train "
                f"(e.g. '{missing[0]}'); pass parameters= to SyRe to cover only what it trains"
            )
        self._plan(optimizer)  # validates weight_decay and precision now, not at step 1

    def covers(self, param: Tensor) -> bool:
        """Whether `param` is one of the covered parameters (by identity)."""
        return id(param) in self._name_of

    @torch.no_grad()
    def displacement(self, param: Tensor) -> Tensor:
        """D⊙(w − θ0) for a covered parameter: coupled mode adds γ times this to its gradient.

        With θ0 = 0 and D = I this is the parameter itself (no copy), so that an optimizer
        using it computes exactly what it computes with its own weight decay.
        """
        anchor, d = self._on_device(self._name_of[id(param)], param)
        displacement = param.detach() if anchor is None else param.detach() - anchor
        return displacement if d is None else displacement * d

    def detach(self) -> None:
        """Remove the hook installed by `attach`; a no-op when not attached."""
        if self._handle is not None:
            self._handle.remove()
        self._handle = None
        self._plan_cache = None

    # ------------------------------------------------------------------ state

    def __getstate__(self) -> dict[str, Any]:
        """Pickle and deepcopy without the optimizer hook: a copy starts detached.

        Deep-copying a module that holds a SyRe (e.g. a LightningModule) then gives a SyRe that
        covers the copied parameters, since the parameters are copied through the same memo.
        """
        state = self.__dict__.copy()
        state.update(_handle=None, _plan_cache=None, _device_tensors={})
        del state["_name_of"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._name_of = {id(p): name for name, p in self._params.items()}

    def state_dict(self) -> dict[str, Any]:
        """Config, covered names, anchors (and D) as CPU tensors; loadable with weights_only.

        Anchors are stored rather than redrawn on resume so that a checkpoint does not depend
        on the RNG implementation of the torch version that loads it.
        """
        return {
            "config": {
                "weight_decay": self._weight_decay,
                "sigma0": self._sigma0,
                "anchor_scale": self._anchor_scale,
                "d_eps": self._d_eps,
                "seed": self._seed,
                "mode": self._mode,
                "include_1d": self._include_1d,
            },
            "covered_names": list(self._params),
            "anchors": {name: t.clone() for name, t in self._anchors.items()},
            "d_diagonal": (
                None
                if self._d_diagonal is None
                else {name: t.clone() for name, t in self._d_diagonal.items()}
            ),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore config, anchors and D from `state_dict`, as optimizers restore their lrs.

        Args:
            state_dict: A dict from `state_dict()`.

        Raises:
            ValueError: If the covered names or shapes differ from this SyRe's, or the state is
                incomplete.
        """
        try:
            config = dict(state_dict["config"])
            names = list(state_dict["covered_names"])
            anchors = dict(state_dict["anchors"])
            d_diagonal = state_dict["d_diagonal"]
        except (KeyError, TypeError) as error:
            raise ValueError(f"not a SyRe state dict: missing {error}") from None
        mine = set(self._params)
        missing, unexpected = sorted(mine - set(names)), sorted(set(names) - mine)
        if missing or unexpected or set(anchors) != set(names):
            raise ValueError(
                "SyRe state does not match this model's covered parameters "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]}): it was saved for another "
                "model or another coverage (include_1d, parameters=)"
            )
        if (d_diagonal is None) != (float(config.get("d_eps", 0.0)) == 0.0):
            raise ValueError("SyRe state is inconsistent: d_diagonal must be stored iff d_eps > 0")
        tensors = [anchors] if d_diagonal is None else [anchors, dict(d_diagonal)]
        for table in tensors:
            for name in names:
                if name not in table or tuple(table[name].shape) != tuple(self._params[name].shape):
                    got = tuple(table[name].shape) if name in table else None
                    raise ValueError(
                        f"SyRe state has shape {got} for '{name}' but the parameter has "
                        f"{tuple(self._params[name].shape)}: it was saved for another model"
                    )
        self.weight_decay = float(config["weight_decay"])
        self.mode = str(config["mode"])
        self._sigma0 = float(config["sigma0"])
        # States saved before anchor_scale existed were all fan_in-relative.
        self._anchor_scale = str(config.get("anchor_scale", "fan_in"))
        self._d_eps = float(config["d_eps"])
        self._seed = int(config["seed"])
        self._include_1d = bool(config["include_1d"])
        # Kept in this model's order of covered names; device copies and plans are rebuilt.
        order = list(self._params)
        self._anchors = {n: anchors[n].detach().to("cpu", torch.float32).clone() for n in order}
        self._d_diagonal = (
            None
            if d_diagonal is None
            else {n: d_diagonal[n].detach().to("cpu", torch.float32).clone() for n in order}
        )
        self._device_tensors = {}
        self._version += 1
        self._plan_cache = None

    # ------------------------------------------------------------------ logging

    @torch.no_grad()
    def distance_to_anchor(self, prefixes: Mapping[str, str] | None = None) -> dict[str, float]:
        """Relative distance of the weights to their anchors, ‖w − θ0‖ / ‖θ0‖, pooled per part.

        Pooled as √(Σ‖w − θ0‖² / Σ‖θ0‖²) over the part's covered tensors. 0 means the weights
        sit on their anchors (what SyRe pulls unused weights to); 1 means as far from the
        anchors as the origin is (where plain weight decay pulls them). A healthy trained layer
        sits far above 1, since σ0 is about 1% of the init scale. Unweighted by D.

        Args:
            prefixes: Optional {part: name prefix}, e.g. {"backbone": "backbone.",
                "projection_head": "projection_head."}. Parts without covered parameters are
                left out.

        Returns:
            {"all": ..., <part>: ...}; a part whose anchors are all zero (sigma0 = 0) reports
            inf (or 0 if its weights are zero too).
        """
        names = list(self._params)
        if not names:
            return {}
        by_device: dict[torch.device, list[str]] = {}
        for name in names:
            by_device.setdefault(self._params[name].device, []).append(name)
        distance_sq: dict[str, float] = {}
        anchor_sq: dict[str, float] = {}
        for group_names in by_device.values():
            params = [self._params[n].detach() for n in group_names]
            anchors = []
            for name, param in zip(group_names, params, strict=True):
                anchor = self._on_device(name, self._params[name])[0]
                anchors.append(torch.zeros_like(param) if anchor is None else anchor)
            diffs = torch._foreach_sub(params, anchors)
            # One host transfer per device, not one sync per parameter.
            norms = torch._foreach_norm(diffs) + torch._foreach_norm(anchors)
            values = torch.stack([n.double() for n in norms]).cpu().tolist()
            for i, name in enumerate(group_names):
                distance_sq[name] = values[i] ** 2
                anchor_sq[name] = values[len(group_names) + i] ** 2

        def ratio(part: list[str]) -> float:
            num, den = sum(distance_sq[n] for n in part), sum(anchor_sq[n] for n in part)
            if den == 0.0:
                return 0.0 if num == 0.0 else math.inf
            return math.sqrt(num / den)

        result = {"all": ratio(names)}
        for part, prefix in (prefixes or {}).items():
            members = [n for n in names if n.startswith(prefix)]
            if members:
                result[part] = ratio(members)
        return result


def steady_pull(mode: str, lr: float, weight_decay: float, momentum: float = 0.0) -> float:
    """Fraction of (w − θ0) that the decay alone removes per step, once momentum is steady.

    Decoupled decay moves the weights directly: lr·γ. Coupled decay is added to the gradient
    and so passes through SGD's momentum buffer, which sums it over about 1/(1 − β) steps:
    lr·γ/(1 − β), 10× the decoupled pull at β = 0.9. Compare arms by this number, not by γ.

    Examples:
        >>> round(steady_pull("coupled", lr=0.1, weight_decay=5e-4, momentum=0.9), 6)
        0.0005
    """
    if mode not in MODES:
        raise ValueError(f"SyRe mode must be one of {MODES}, got '{mode}'")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    pull = lr * weight_decay
    return pull / (1.0 - momentum) if mode == "coupled" else pull


def syre_param_groups(
    named_parameters: nn.Module | NamedParameters,
    syre: SyRe | None,
    weight_decay: float,
    parameters: NamedParameters | None = None,
) -> list[dict[str, Any]]:
    """Optimizer param groups that give each parameter exactly one kind of decay.

    - "syre": the parameters `syre` covers, with weight_decay=0 (SyRe decays them toward θ0);
    - "decay": other trainable ≥2-D weights, with plain `weight_decay` toward 0;
    - "no_decay": biases, 1-D tensors and `no_weight_decay()` names, with 0.

    With `syre=None` this is timm's `param_groups_weight_decay` (decay / no_decay). Empty
    groups are left out; frozen parameters are left out. The groups carry a "name" key, which
    torch optimizers keep and Lightning's LearningRateMonitor uses.

    Args:
        named_parameters: A module (its `no_weight_decay()` names, and its sub-modules', are
            honoured) or (name, parameter) pairs.
        syre: The SyRe whose covered parameters go to the "syre" group, or None.
        weight_decay: Plain weight decay for the "decay" group.
        parameters: With a module: the (name, parameter) pairs to group instead of all of
            its parameters, names as in `module.named_parameters()`; the module's
            `no_weight_decay()` names still apply to them (as in `SyRe(parameters=...)`).

    Returns:
        A list of param-group dicts for a torch optimizer.
    """
    if isinstance(named_parameters, nn.Module):
        patterns = _no_weight_decay_patterns(named_parameters)
        pairs = list(named_parameters.named_parameters() if parameters is None else parameters)
    else:
        # Bare pairs carry no no_weight_decay() names: pass the module to keep them.
        patterns, pairs = [], list(named_parameters)
    covered = set() if syre is None else {id(p) for p in syre.covered_parameters()}
    groups: dict[str, list[nn.Parameter]] = {"syre": [], "decay": [], "no_decay": []}
    seen: set[int] = set()
    for name, param in pairs:
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        if id(param) in covered:
            groups["syre"].append(param)
        elif _is_decayed(name, param, patterns, include_1d=False):
            groups["decay"].append(param)
        else:
            groups["no_decay"].append(param)
    decay = {"syre": 0.0, "decay": float(weight_decay), "no_decay": 0.0}
    return [
        {"params": params, "weight_decay": decay[name], "name": name}
        for name, params in groups.items()
        if params
    ]


__all__ = ["ANCHOR_SCALES", "MODES", "SyRe", "steady_pull", "syre_param_groups"]
