"""How SyRe keeps its anchors θ0 and D: an fp32 copy, a rounded copy, or none at all.

An anchor is a random point that never changes, so it can be stored or drawn again. The
storages (`syre.anchor_storage`):

- `float32`: an fp32 copy of every anchor and D on the CPU (the masters that checkpoints carry)
  and one copy like each parameter on its device (on a CPU run, the master itself);
- `bfloat16`, `float16`: the anchors rounded to that dtype, on the CPU and once on the device:
  half the bytes, each anchor within half an ulp of the fp32 draw. D stays fp32: rounded to
  bf16, D ~ U[0.9, 1.1] would keep about 40 distinct values, while advanced removal needs
  distinct entries;
- `regenerate`: no copy. Every step draws θ0 and D again on the parameter's device from a
  per-tensor seed (`anchors.tensor_seed`), the same steps as `draw_anchor` and `draw_d`: on
  the CPU bit for bit the stored anchors; on a GPU another draw of the same distribution, as
  its generator (Philox, laid out by the device's multiprocessor count) gives other numbers
  than the CPU's. The Aurora optimizer's SyRe (dion repository, `dion/syre.py`) keeps no copy
  the same way. Anchors centred at the tensor's initial value (`centered_at_init`: biases and
  norm weights under include_1d) hold that value, which no seed gives back: they keep an fp32
  copy (1-D tensors, a small share of the bytes).

With all anchors at 0 (sigma0 = 0, the off arm) no storage hands out anchor tensors: the update
is plain decay toward 0 through the same ops, whatever the storage.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ssl_syre.syre.anchors import (
    AnchorSpec,
    anchor_noise,
    centered_at_init,
    d_uniform,
    draw_anchor,
    draw_d,
    fingerprint,
    like_param,
    tensor_seed,
)

ROUNDED = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class AnchorStore:
    """θ0 and D of every covered parameter, kept as `spec.storage` says (see the module).

    Args:
        spec: What fixes the draws, the storage included.
        stored: Anchors kept as tensors, on the CPU: fp32 (float32; regenerate, the centred
            ones only) or the rounded dtype.
        d_stored: D per name (fp32, CPU) where D is kept, else None.
        seeds: Per-tensor seeds of the anchors drawn at each step (regenerate), else empty.
        d_seeds: Per-tensor seeds of D drawn at each step (regenerate with d_eps > 0), else None.
        expected: For a regenerated store loaded from a checkpoint: the device and fingerprint
            its anchors had there (see `verify`).
    """

    spec: AnchorSpec
    stored: dict[str, Tensor]
    d_stored: dict[str, Tensor] | None = None
    seeds: dict[str, int] = field(default_factory=dict)
    d_seeds: dict[str, int] | None = None
    expected: dict[str, Any] | None = None
    _copies: dict[str, tuple[Any, ...]] = field(default_factory=dict, init=False, repr=False)
    _generators: dict[torch.device, torch.Generator] = field(
        default_factory=dict, init=False, repr=False
    )
    _fingerprints: dict[str, float] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def draw(cls, spec: AnchorSpec, params: Mapping[str, Tensor]) -> AnchorStore:
        """A new store for `params`: draws what it keeps, and the seeds of what it redraws."""
        regenerate = spec.storage == "regenerate"
        stored, seeds = {}, {}
        for name, param in params.items():
            if regenerate and not centered_at_init(name, param):
                seeds[name] = tensor_seed(spec.seed, name, "anchor")
                continue
            anchor = draw_anchor(spec, name, param)
            stored[name] = anchor.to(ROUNDED[spec.storage]) if spec.storage in ROUNDED else anchor
        d_stored = d_seeds = None
        if spec.d_eps and regenerate:
            d_seeds = {name: tensor_seed(spec.seed, name, "d") for name in params}
        elif spec.d_eps:
            d_stored = {name: draw_d(spec, name, p.shape) for name, p in params.items()}
        return cls(spec, stored, d_stored, seeds, d_seeds)

    @property
    def zero(self) -> bool:
        """Every anchor is 0 (sigma0 = 0): no anchor tensor is handed out."""
        return self.spec.sigma0 == 0.0

    @property
    def transient(self) -> bool:
        """Whether `like` makes new tensors at each call (anchors rounded or regenerated, D
        regenerated): the update then makes them chunk by chunk and keeps none."""
        if self.spec.storage == "regenerate":
            return not self.zero or self.d_seeds is not None
        return self.spec.storage in ROUNDED and not self.zero

    # ------------------------------------------------------------------ on the device

    def like(self, name: str, param: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """(θ0 or None, D or None) of `name` in `param`'s device, dtype and layout.

        Kept tensors are copied to the device once and reused; rounded anchors are widened
        and regenerated ones drawn at each call.
        """
        anchor_copy, d_copy = self._device_copies(name, param)
        if self.zero:
            anchor = None
        elif name in self.seeds:
            anchor = like_param(anchor_noise(self.spec, param, self._generator(name, param)), param)
        elif anchor_copy is not None and anchor_copy.dtype != param.dtype:
            anchor = anchor_copy.to(param.dtype)  # keeps the strides (preserve_format)
        else:
            anchor = anchor_copy
        if self.d_seeds is not None:
            generator = self._generator(name, param, self.d_seeds[name])
            d = like_param(d_uniform(self.spec, param.shape, generator), param)
        else:
            d = d_copy
        return anchor, d

    def _device_copies(self, name: str, param: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """The kept anchor (in its storage dtype when rounded) and D of `name` on `param`'s
        device, made once per device and dtype."""
        cached = self._copies.get(name)
        if cached is not None and cached[0] == param.device and cached[1] == param.dtype:
            return cached[2], cached[3]
        master = None if self.zero else self.stored.get(name)
        dtype = ROUNDED.get(self.spec.storage)
        anchor = None if master is None else like_param(master, param, dtype)
        d = None if self.d_stored is None else like_param(self.d_stored[name], param)
        self._copies[name] = (param.device, param.dtype, anchor, d)
        return anchor, d

    def _generator(self, name: str, param: Tensor, seed: int | None = None) -> torch.Generator:
        """The generator of `param`'s device, reseeded for this tensor's draw."""
        generator = self._generators.get(param.device)
        if generator is None:
            generator = self._generators[param.device] = torch.Generator(device=param.device)
        generator.manual_seed(self.seeds[name] if seed is None else seed)
        return generator

    # ------------------------------------------------------------------ fp32 on the CPU

    def cpu_anchor(self, name: str, param: Tensor) -> Tensor:
        """θ0 of `name` as an fp32 CPU tensor: the anchor the update uses (regenerated ones
        drawn on `param`'s device, then copied)."""
        if name in self.seeds:
            if self.zero:
                return torch.zeros(param.shape, dtype=torch.float32)
            anchor = self.like(name, param)[0]
            assert anchor is not None
            return anchor.to("cpu", torch.float32)
        master = self.stored[name]
        return master if master.dtype == torch.float32 else master.float()

    def cpu_d(self, name: str, param: Tensor) -> Tensor | None:
        """D of `name` as an fp32 CPU tensor, or None for D = I."""
        if self.d_stored is not None:
            return self.d_stored[name]
        if self.d_seeds is None:
            return None
        d = self.like(name, param)[1]
        assert d is not None
        return d.to("cpu", torch.float32)

    def fingerprint(self, params: Mapping[str, Tensor]) -> float:
        """`anchors.fingerprint` of the anchors and D the update uses on `params`' device,
        one tensor at a time; kept per device, as the anchors never change."""
        device = str(next(iter(params.values())).device) if params else "cpu"
        if device not in self._fingerprints:
            anchors = _OnDemand(params, self.cpu_anchor)
            has_d = self.d_stored is not None or self.d_seeds is not None
            d = _OnDemand(params, self.cpu_d) if has_d else None
            self._fingerprints[device] = fingerprint(anchors, d)  # type: ignore[arg-type]
        return self._fingerprints[device]

    def verify(self, params: Mapping[str, Tensor]) -> None:
        """Check once that regenerated anchors are those of the checkpoint this store came from.

        Raises:
            ValueError: If this device draws other anchors than the one that wrote it.
        """
        if self.expected is None:
            return
        expected, self.expected = self.expected, None
        if self.fingerprint(params) != float(expected["fingerprint"]):
            here = next(iter(params.values())).device if params else "cpu"
            raise ValueError(
                f"the anchors regenerated on {here} differ from those of the checkpoint, "
                f"regenerated on {expected['device']}: torch's generator draws other numbers on "
                "another kind of device (GPU model or CPU); resume on the kind of device the run "
                "started on, or start runs that move between devices with "
                "syre.anchor_storage=float32"
            )

    def check_of(self, params: Mapping[str, Tensor]) -> dict[str, Any]:
        """What a checkpoint records to `verify` regenerated anchors on resume."""
        device = str(next(iter(params.values())).device) if params else "cpu"
        return {"device": device, "fingerprint": self.fingerprint(params)}

    def held_bytes(self) -> dict[str, int]:
        """Bytes of the tensors this store keeps (masters and device copies), per device type;
        a tensor shared by two tables counts once. Chunk temporaries are not held."""
        tensors = [*self.stored.values(), *(self.d_stored or {}).values()]
        for _, _, anchor, d in self._copies.values():
            tensors += [t for t in (anchor, d) if t is not None]
        seen: set[tuple[str, int]] = set()
        held: dict[str, int] = {}
        for tensor in tensors:
            storage = tensor.untyped_storage()
            key = (str(tensor.device), storage.data_ptr())
            if key in seen:
                continue
            seen.add(key)
            held[tensor.device.type] = held.get(tensor.device.type, 0) + storage.nbytes()
        return held

    def __getstate__(self) -> dict[str, Any]:
        """Pickle and deepcopy the kept tensors, not the device copies or generators."""
        state = self.__dict__.copy()
        state.update(_copies={}, _generators={})
        return state


class _OnDemand(Mapping[str, Any]):
    """{name: fn(name, param)}, each value made when read and not kept."""

    def __init__(self, params: Mapping[str, Tensor], make: Any) -> None:
        self._params, self._make = params, make

    def __getitem__(self, name: str) -> Any:
        return self._make(name, self._params[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)


def on_device_anchors(store: AnchorStore, params: Mapping[str, Tensor]) -> Mapping[str, Any]:
    """{name: θ0 like the parameter, or None}, each made when read (see `AnchorStore.like`)."""
    return _OnDemand(params, lambda name, param: store.like(name, param)[0])


def cpu_tables(
    store: AnchorStore, params: Mapping[str, Tensor]
) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    """Every anchor and D as fp32 CPU tensors (see `AnchorStore.cpu_anchor`)."""
    anchors = {name: store.cpu_anchor(name, p) for name, p in params.items()}
    if store.d_stored is None and store.d_seeds is None:
        return anchors, None
    d = {name: store.cpu_d(name, p) for name, p in params.items()}
    return anchors, d  # type: ignore[return-value]
