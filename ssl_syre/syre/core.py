"""The SyRe class: covers parameters, holds their anchors, and hooks its step into an optimizer.

- [0] Remove Symmetries to Control Model Expressivity and Improve Optimization, 2024,
  https://arxiv.org/abs/2408.15495
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from ssl_syre.syre.anchors import AnchorSpec, check_precision
from ssl_syre.syre.anchors import distance_to_anchor as _distance_to_anchor
from ssl_syre.syre.coverage import NamedParameters, select_covered
from ssl_syre.syre.decay import (
    Bucket,
    BucketCache,
    after_gradients,
    bucket_covered,
    check_mode,
    decay_in_chunks,
    decay_toward_anchor,
)
from ssl_syre.syre.state import from_state_dict, to_state_dict
from ssl_syre.syre.storage import AnchorStore, cpu_tables, on_device_anchors


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
    decoupled lr·γ (`steady_pull`): 10x apart at β = 0.9, so compare runs in one mode. The
    training config picks the optimizer's own form (`syre.mode=auto`: coupled for SGD/LARS,
    decoupled for AdamW); this class defaults to decoupled, which pulls the same under any
    optimizer. `sigma0=0` is the control: plain decay toward 0 through this same update, bit
    for bit torch SGD's `weight_decay` (coupled) or AdamW's decay (decoupled).

    Coverage follows the usual weight-decay convention (`timm.optim.param_groups_weight_decay`):
    trainable tensors with ndim ≥ 2 whose name does not end in `.bias`, minus the
    `no_weight_decay()` names of the module and its sub-modules. `include_1d=True` adds biases
    and norm weights; `parameters=` narrows the candidates to an explicit list (e.g. backbone and
    projection head, not a BYOL momentum copy), the convention still applying to it.

    Anchors are drawn on the CPU from a generator seeded by `seed` and the parameter's name, so
    they do not depend on parameter order, device, process or resume, and drawing them leaves
    torch's global RNG untouched. Biases and 1-D tensors, when covered (`include_1d`), use
    fan_in = 1 (σ = sigma0) and are anchored around their values when SyRe is built (a
    BatchNorm scale of 1 gets θ0 ~ N(1, σ²)), not around 0; with sigma0 = 0 every anchor is 0.

    `anchor_storage` says how the anchors are kept (ssl_syre.syre.storage): "float32" (a copy),
    "bfloat16"/"float16" (a rounded copy, half the bytes) or "regenerate" (no copy: drawn again
    on the parameter's device at each step from a per-tensor seed; bit for bit the stored
    anchors on the CPU, another draw of the same distribution on a GPU). With sigma0 = 0 every
    storage is the same plain decay toward 0.

    Covered parameters must be fp32 or fp64: in bf16/fp16 the per-step pull lr·γ·(w − θ0) is
    below one ulp of w and rounds away (use fp32 master weights, e.g. Lightning
    `precision="bf16-mixed"`).

    Args:
        module: The model whose parameters SyRe covers (names are `module.named_parameters()`).
        weight_decay: γ, the strength of the pull toward the anchors.
        sigma0: Anchor scale; the anchor std is sigma0/√fan_in (see `anchor_scale`); 0 makes
            this plain decay toward 0 through the same update. The default 1.0 puts the anchors
            at about the init scale; benchmarks/RESULTS.md compares it with smaller values.
        d_eps: Half-width of D's entries around 1 ("advanced removal"); 0 means D = I, and no D
            tensors are stored or multiplied.
        seed: Seed of the anchors (and of D); another seed gives other anchors.
        mode: "decoupled" (decay the weights, like AdamW) or "coupled" (add to the gradient).
        include_1d: Also cover biases and other 1-D tensors (anchored around their values).
        parameters: Optional (name, parameter) pairs to consider instead of all of
            `module.named_parameters()`.
        anchor_scale: "fan_in" (std sigma0/√fan_in: one sigma0 means the same fraction of
            each layer's init scale) or "absolute" (std sigma0 for every tensor, the paper's
            θ0 ~ N(0, σ0²) as written; sigma0 = 0.01 absolute is 0.01·√512 ≈ 0.23 fan_in-relative
            on a fan_in-512 layer).
        anchor_storage: "float32", "bfloat16", "float16" or "regenerate" (see above).

    Raises:
        ValueError: For an unknown mode or storage, negative weight_decay/sigma0, d_eps outside
            [0, 1), bf16/fp16 covered parameters, or duplicate names in `parameters`.

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
        anchor_storage: str = "float32",
    ) -> None:
        spec = AnchorSpec(sigma0, anchor_scale, d_eps, seed, include_1d, anchor_storage)
        self.weight_decay = weight_decay
        self.mode = mode
        self._params = select_covered(module, parameters, spec.include_1d)
        check_precision(self._params.items())
        self._name_of = {id(p): name for name, p in self._params.items()}
        self._store = AnchorStore.draw(spec, self._params)
        self._buckets = BucketCache()
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
        self._mode = check_mode(value)

    @property
    def sigma0(self) -> float:
        """Anchor scale: anchor std = sigma0/√fan_in, or sigma0 when anchor_scale is absolute."""
        return self._store.spec.sigma0

    @property
    def anchor_scale(self) -> str:
        """ "fan_in" (std sigma0/√fan_in) or "absolute" (std sigma0)."""
        return self._store.spec.anchor_scale

    @property
    def d_eps(self) -> float:
        """Half-width of D's entries around 1; 0 means D = I."""
        return self._store.spec.d_eps

    @property
    def seed(self) -> int:
        """Seed of the anchors and of D."""
        return self._store.spec.seed

    @property
    def include_1d(self) -> bool:
        """Whether biases and other 1-D tensors are covered."""
        return self._store.spec.include_1d

    @property
    def anchor_storage(self) -> str:
        """How the anchors are kept: "float32", "bfloat16", "float16" or "regenerate"."""
        return self._store.spec.storage

    @property
    def zero_anchors(self) -> bool:
        """σ0 = 0: plain decay toward 0 through SyRe's own update (the fair "off" arm)."""
        return self._store.spec.sigma0 == 0.0

    @property
    def covered_names(self) -> list[str]:
        """Names of the covered parameters, in the order they were found."""
        return list(self._params)

    def covered_parameters(self) -> Iterator[nn.Parameter]:
        """The covered parameters, in the order of `covered_names`."""
        return iter(self._params.values())

    def covers(self, param: Tensor) -> bool:
        """Whether `param` is one of the covered parameters (by identity)."""
        return id(param) in self._name_of

    @property
    def anchors(self) -> dict[str, Tensor]:
        """θ0 per covered name, as fp32 CPU tensors (do not modify them in place): the anchors
        the update uses (rounded ones widened; regenerated ones drawn on the parameters' device
        and copied, which makes a full copy for as long as the dict is kept)."""
        return cpu_tables(self._store, self._params)[0]

    @property
    def d_diagonal(self) -> dict[str, Tensor] | None:
        """D's diagonal per covered name (fp32, CPU), or None when d_eps == 0 (D = I)."""
        if not self._store.spec.d_eps:
            return None
        return cpu_tables(self._store, self._params)[1]

    def held_bytes(self) -> dict[str, int]:
        """Bytes of the anchor and D tensors SyRe keeps, per device type ("cpu", "cuda"):
        masters and device copies, each tensor once; a step's chunk temporaries not counted."""
        return self._store.held_bytes()

    def fingerprint(self) -> float:
        """A number that differs when any anchor or D entry the update uses differs (see
        `anchors.fingerprint`); made once per device, one tensor at a time."""
        return self._store.fingerprint(self._params)

    def verify_anchors(self) -> None:
        """After loading a regenerated state: check once that this device draws the anchors the
        checkpoint's device drew (else resuming would move every anchor).

        Raises:
            ValueError: If the anchors differ; see `storage.AnchorStore.verify`.
        """
        self._store.verify(self._params)

    @property
    def attached(self) -> bool:
        """Whether SyRe's hook is registered on an optimizer."""
        return self._handle is not None

    def __repr__(self) -> str:
        numel = sum(p.numel() for p in self._params.values())
        return (
            f"SyRe(covered={len(self._params)} tensors/{numel} values, "
            f"weight_decay={self._weight_decay}, sigma0={self.sigma0} ({self.anchor_scale}), "
            f"d_eps={self.d_eps}, "
            f"seed={self.seed}, mode='{self._mode}', attached={self.attached})"
        )

    # ------------------------------------------------------------------ the optimizer

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

    def detach(self) -> None:
        """Remove the hook installed by `attach`; a no-op when not attached."""
        if self._handle is not None:
            self._handle.remove()
        self._handle = None
        self._buckets.clear()

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

    @torch.no_grad()
    def apply(self, optimizer: Optimizer) -> None:
        """Apply one SyRe step to the covered parameters `optimizer` holds.

        This is what the hook installed by `attach` runs inside every `optimizer.step()`; call it
        directly only when not attached (e.g. in a custom loop, between backward and step).
        Decoupled mode moves the weights, coupled mode adds to the gradients; parameters without
        a gradient are skipped, and each group's current lr is used (so LR schedules apply).

        Raises:
            ValueError: If a covered parameter sits in a group with weight_decay != 0, or is
                bf16/fp16.
        """
        plan = self._plan(optimizer)
        if self._weight_decay == 0.0:
            return
        if self._store.expected is not None:
            self.verify_anchors()
        for bucket in plan:
            params, anchors, scales = bucket.with_grad()
            if not params:
                continue
            lr = optimizer.param_groups[bucket.group_index]["lr"]
            if self._store.transient:  # rounded or regenerated anchors, made chunk by chunk
                decay_in_chunks(params, self._on_device, lr, self._weight_decay, self._mode)
            else:
                decay_toward_anchor(params, anchors, scales, lr, self._weight_decay, self._mode)

    @torch.no_grad()
    def displacement(self, param: Tensor) -> Tensor:
        """D⊙(w − θ0) for a covered parameter: coupled mode adds γ times this to its gradient.

        With θ0 = 0 and D = I this is the parameter itself (no copy), so that an optimizer
        using it computes exactly what it computes with its own weight decay.
        """
        anchor, d = self._on_device(param)
        displacement = param.detach() if anchor is None else param.detach() - anchor
        return displacement if d is None else displacement * d

    def _on_device(self, param: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """(θ0 or None, D or None) of a covered parameter, like it (see `AnchorStore.like`)."""
        return self._store.like(self._name_of[id(param)], param)

    def _pre_step(
        self, optimizer: Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """Step pre-hook: apply SyRe once the gradients of this step exist."""
        coupled = self._mode == "coupled"
        return after_gradients(args, kwargs, lambda: self.apply(optimizer), coupled)

    def _plan(self, optimizer: Optimizer) -> list[Bucket]:
        # Buckets hold kept device copies; anchors made at each step are made in apply().
        on_device = _nothing if self._store.transient else self._store.like
        return self._buckets.get(
            optimizer, lambda: bucket_covered(optimizer, self._name_of, on_device)
        )

    # ------------------------------------------------------------------ state and logging

    def state_dict(self) -> dict[str, Any]:
        """Config, covered names, and the anchors (and D) as kept: CPU tensors, or for
        regenerated anchors their seeds and fingerprint; loadable with weights_only."""
        regenerate = self.anchor_storage == "regenerate"
        check = self._store.check_of(self._params) if regenerate else None
        return to_state_dict(self._weight_decay, self._mode, self._store, self.covered_names, check)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore config, anchors and D from `state_dict`, as optimizers restore their lrs.

        Raises:
            ValueError: If the covered names or shapes differ from this SyRe's, or the state is
                incomplete.
        """
        state = from_state_dict(state_dict, {n: p.shape for n, p in self._params.items()})
        self.weight_decay, self.mode, self._store = state.weight_decay, state.mode, state.store
        self._buckets = BucketCache()

    def __getstate__(self) -> dict[str, Any]:
        """Pickle and deepcopy without the optimizer hook: a copy starts detached.

        Deep-copying a module that holds a SyRe (e.g. a LightningModule) then gives a SyRe that
        covers the copied parameters, since the parameters are copied through the same memo.
        """
        state = self.__dict__.copy()
        state.update(_handle=None, _buckets=BucketCache())  # the store drops its device copies
        del state["_name_of"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._name_of = {id(p): name for name, p in self._params.items()}

    def distance_to_anchor(self, prefixes: Mapping[str, str] | None = None) -> dict[str, float]:
        """Relative distance of the weights to their anchors, ‖w − θ0‖ / ‖θ0‖, pooled per part.

        Pooled as √(Σ‖w − θ0‖² / Σ‖θ0‖²) over the part's covered tensors. 0 means the weights
        sit on their anchors (what SyRe pulls unused weights to); 1 means as far from the
        anchors as the origin is (where plain weight decay pulls them). Unweighted by D.

        Args:
            prefixes: Optional {part: name prefix}, e.g. {"backbone": "backbone.",
                "projection_head": "projection_head."}. Parts without covered parameters are
                left out.

        Returns:
            {"all": ..., <part>: ...}; a part whose anchors are all zero (sigma0 = 0) reports
            inf (or 0 if its weights are zero too).
        """
        anchors = on_device_anchors(self._store, self._params)
        return _distance_to_anchor(self._params, anchors, prefixes)


def _nothing(name: str, param: Tensor) -> tuple[None, None]:
    """No kept device tensors: the store makes them at each step."""
    return None, None
