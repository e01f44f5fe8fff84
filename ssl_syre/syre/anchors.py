"""SyRe's anchors θ0 and diagonal D: how they are drawn, copied to the device, and measured."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

# How sigma0 sets the anchor std: sigma0/√fan_in (init-relative), or sigma0 itself (the paper's
# θ0 ~ N(0, σ0²) read literally).
ANCHOR_SCALES = ("fan_in", "absolute")
_LOW_PRECISION = (torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class AnchorSpec:
    """What fixes the anchors and D of a SyRe: change one and the draws change.

    Args:
        sigma0: Anchor scale (see `anchor_scale`); 0 puts every anchor at exactly 0.
        anchor_scale: "fan_in" (std sigma0/√fan_in) or "absolute" (std sigma0).
        d_eps: Half-width of D's entries around 1; 0 means D = I (no D tensors).
        seed: Seed of the anchors and of D.
        include_1d: Whether biases and other 1-D tensors are covered.

    Raises:
        ValueError: For an unknown anchor_scale, sigma0 < 0, or d_eps outside [0, 1).
    """

    sigma0: float = 1.0
    anchor_scale: str = "fan_in"
    d_eps: float = 0.0
    seed: int = 0
    include_1d: bool = False

    def __post_init__(self) -> None:
        if self.anchor_scale not in ANCHOR_SCALES:
            raise ValueError(
                f"SyRe anchor_scale must be one of {ANCHOR_SCALES}, got '{self.anchor_scale}'"
            )
        if self.sigma0 < 0:
            raise ValueError(f"SyRe sigma0 must be >= 0, got {self.sigma0}")
        if not 0.0 <= self.d_eps < 1.0:
            raise ValueError(
                f"SyRe d_eps must be in [0, 1) so that D stays positive, got {self.d_eps}"
            )
        # Normalized types, so that state dicts and reprs are the same whatever was passed in.
        object.__setattr__(self, "sigma0", float(self.sigma0))
        object.__setattr__(self, "d_eps", float(self.d_eps))
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "include_1d", bool(self.include_1d))


def generator_for(seed: int, name: str, stream: str) -> torch.Generator:
    """A CPU generator seeded from (seed, parameter name, stream).

    Hashing the name (not Python's salted `hash`) makes each draw independent of parameter
    order, process, device and resume: the same seed and name always give the same numbers.
    """
    digest = hashlib.sha256(f"syre/{stream}/{seed}/{name}".encode()).digest()
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return generator


def fan_in(param: Tensor) -> int:
    """Inputs per output unit: prod of the dims after the first; 1 for 1-D tensors."""
    return max(1, param[0].numel()) if param.ndim >= 2 else 1


def centered_at_init(name: str, param: Tensor) -> bool:
    """Whether the anchor is drawn around the tensor's value instead of around 0: the tensors
    only `include_1d` covers (biases, norm weights), which start at values such as a BatchNorm
    scale of 1 that an anchor around 0 would pull to 0 or, for half of them, below it."""
    return param.ndim <= 1 or name.endswith(".bias")


def draw_anchor(spec: AnchorSpec, name: str, param: Tensor) -> Tensor:
    """θ0 for one parameter as an fp32 CPU tensor: N(0, σ²) noise, plus the tensor's current
    value where `centered_at_init`; exactly 0 everywhere when sigma0 = 0 (the off arm)."""
    if spec.sigma0 == 0.0:  # exact +0.0 everywhere (randn·0 would give some -0.0)
        return torch.zeros(param.shape, dtype=torch.float32)
    divisor = math.sqrt(fan_in(param)) if spec.anchor_scale == "fan_in" else 1.0
    generator = generator_for(spec.seed, name, "anchor")
    noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
    noise.mul_(spec.sigma0 / divisor)
    if centered_at_init(name, param):
        noise.add_(param.detach().to("cpu", torch.float32))
    return noise


def draw_d(spec: AnchorSpec, name: str, shape: torch.Size) -> Tensor:
    """D's diagonal for one parameter: uniform in [1 − d_eps, 1 + d_eps], fp32 on the CPU."""
    generator = generator_for(spec.seed, name, "d")
    uniform = torch.rand(shape, generator=generator, dtype=torch.float32)
    return uniform.mul_(2 * spec.d_eps).add_(1 - spec.d_eps)


def check_precision(named: Iterable[tuple[str, Tensor]]) -> None:
    """Refuse bf16/fp16 parameters: their pull toward the anchor rounds away."""
    for name, param in named:
        if param.dtype in _LOW_PRECISION:
            raise ValueError(
                f"SyRe cannot decay the {param.dtype} parameter '{name}': its pull toward "
                "the anchor falls below one ulp and rounds away; keep fp32 master weights "
                "(e.g. Lightning precision='bf16-mixed' instead of 'bf16-true')"
            )


def like_param(master: Tensor, param: Tensor) -> Tensor:
    """`master` on `param`'s device and dtype, with its strides (channels_last weights stay on
    the foreach fast path); `master` itself when it already matches."""
    if param.device == master.device and param.dtype == master.dtype and param.is_contiguous():
        return master
    return torch.empty_like(param, memory_format=torch.preserve_format).copy_(master)


class DeviceAnchors:
    """The anchors and D of each parameter on its device, dtype and layout, kept until it moves.

    With all anchors at 0 (sigma0 = 0) the anchor is None: the update then needs no anchor tensor.

    Args:
        anchors: θ0 per name (the fp32 CPU masters).
        d_diagonal: D per name, or None for D = I.
        zero: Whether every anchor is 0.
    """

    def __init__(
        self, anchors: Mapping[str, Tensor], d_diagonal: Mapping[str, Tensor] | None, zero: bool
    ) -> None:
        self._anchors, self._d_diagonal, self._zero = anchors, d_diagonal, zero
        self._copies: dict[str, tuple[torch.device, torch.dtype, Tensor | None, Tensor | None]] = {}

    def get(self, name: str, param: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """(anchor or None, D or None) of `name`, like `param`."""
        cached = self._copies.get(name)
        if cached is not None and cached[0] == param.device and cached[1] == param.dtype:
            return cached[2], cached[3]
        anchor = None if self._zero else like_param(self._anchors[name], param)
        d = None if self._d_diagonal is None else like_param(self._d_diagonal[name], param)
        self._copies[name] = (param.device, param.dtype, anchor, d)
        return anchor, d


def fingerprint(anchors: Mapping[str, Tensor], d_diagonal: Mapping[str, Tensor] | None) -> float:
    """A number that differs when any anchor or D entry differs: a hash folded into [0, 1)."""
    digest = hashlib.sha256()
    for name in sorted(anchors):
        digest.update(name.encode())
        digest.update(anchors[name].contiguous().numpy().tobytes())
        if d_diagonal is not None:
            digest.update(d_diagonal[name].contiguous().numpy().tobytes())
    # 52 bits fit a float64 exactly, so the value survives all_gather unchanged.
    return int.from_bytes(digest.digest()[:6], "big") / 2**48


@torch.no_grad()
def distance_to_anchor(
    params: Mapping[str, Tensor],
    anchors: Mapping[str, Tensor | None],
    prefixes: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """‖w − θ0‖ / ‖θ0‖ pooled per part as √(Σ‖w − θ0‖² / Σ‖θ0‖²); see `SyRe.distance_to_anchor`.

    Args:
        params: Covered parameters by name.
        anchors: Their anchors on the parameters' devices (None for an all-zero anchor).
        prefixes: Optional {part: name prefix}; parts without parameters are left out.
    """
    names = list(params)
    if not names:
        return {}
    by_device: dict[torch.device, list[str]] = {}
    for name in names:
        by_device.setdefault(params[name].device, []).append(name)
    distance_sq: dict[str, float] = {}
    anchor_sq: dict[str, float] = {}
    for group_names in by_device.values():
        weights = [params[n].detach() for n in group_names]
        zeros_if_none = [anchors[n] for n in group_names]
        centers = [
            torch.zeros_like(w) if a is None else a
            for w, a in zip(weights, zeros_if_none, strict=True)
        ]
        diffs = torch._foreach_sub(weights, centers)
        # One host transfer per device, not one sync per parameter.
        norms = torch._foreach_norm(diffs) + torch._foreach_norm(centers)
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
