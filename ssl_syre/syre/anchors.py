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
# How the anchors are kept (ssl_syre.syre.storage): an fp32 copy, a rounded copy, or none
# (redrawn at every step from a per-tensor seed).
ANCHOR_STORAGES = ("float32", "bfloat16", "float16", "regenerate")
_LOW_PRECISION = (torch.bfloat16, torch.float16)
# Elements per chunk where anchors are made for one step (rounded or regenerated storage): the
# temporaries of a step stay under 64 MiB of fp32 whatever the model's size.
CHUNK_NUMEL = 1 << 24


@dataclass(frozen=True)
class AnchorSpec:
    """What fixes the anchors and D of a SyRe: change one and the draws change.

    Args:
        sigma0: Anchor scale (see `anchor_scale`); 0 puts every anchor at exactly 0.
        anchor_scale: "fan_in" (std sigma0/√fan_in) or "absolute" (std sigma0).
        d_eps: Half-width of D's entries around 1; 0 means D = I (no D tensors).
        seed: Seed of the anchors and of D.
        include_1d: Whether biases and other 1-D tensors are covered.
        storage: How the anchors are kept, one of ANCHOR_STORAGES (ssl_syre.syre.storage).

    Raises:
        ValueError: For an unknown anchor_scale or storage, sigma0 < 0, or d_eps outside [0, 1).
    """

    sigma0: float = 1.0
    anchor_scale: str = "fan_in"
    d_eps: float = 0.0
    seed: int = 0
    include_1d: bool = False
    storage: str = "float32"

    def __post_init__(self) -> None:
        if self.anchor_scale not in ANCHOR_SCALES:
            raise ValueError(
                f"SyRe anchor_scale must be one of {ANCHOR_SCALES}, got '{self.anchor_scale}'"
            )
        if self.storage not in ANCHOR_STORAGES:
            raise ValueError(
                f"SyRe anchor_storage must be one of {ANCHOR_STORAGES}, got '{self.storage}'"
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


def tensor_seed(seed: int, name: str, stream: str) -> int:
    """The seed of one tensor's draw, from (seed, parameter name, stream: "anchor" or "d").

    Hashing the name (not Python's salted `hash`) makes each draw independent of parameter
    order, process and resume: the same seed and name always give the same numbers.
    """
    digest = hashlib.sha256(f"syre/{stream}/{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator_for(seed: int, name: str, stream: str) -> torch.Generator:
    """A CPU generator seeded with `tensor_seed(seed, name, stream)`."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(tensor_seed(seed, name, stream))
    return generator


def fan_in(param: Tensor) -> int:
    """Inputs per output unit: prod of the dims after the first; 1 for 1-D tensors."""
    return max(1, param[0].numel()) if param.ndim >= 2 else 1


def centered_at_init(name: str, param: Tensor) -> bool:
    """Whether the anchor is drawn around the tensor's value instead of around 0: the tensors
    only `include_1d` covers (biases, norm weights), which start at values such as a BatchNorm
    scale of 1 that an anchor around 0 would pull to 0 or, for half of them, below it."""
    return param.ndim <= 1 or name.endswith(".bias")


def anchor_noise(spec: AnchorSpec, param: Tensor, generator: torch.Generator) -> Tensor:
    """N(0, σ²) of `param`'s shape in fp32 on the generator's device, σ from sigma0 and
    anchor_scale: the random part of θ0, the same steps wherever it is drawn."""
    divisor = math.sqrt(fan_in(param)) if spec.anchor_scale == "fan_in" else 1.0
    noise = torch.randn(
        param.shape, generator=generator, dtype=torch.float32, device=generator.device
    )
    return noise.mul_(spec.sigma0 / divisor)


def d_uniform(spec: AnchorSpec, shape: torch.Size, generator: torch.Generator) -> Tensor:
    """D's diagonal of `shape`: uniform in [1 − d_eps, 1 + d_eps], fp32 on the generator's device."""
    uniform = torch.rand(shape, generator=generator, dtype=torch.float32, device=generator.device)
    return uniform.mul_(2 * spec.d_eps).add_(1 - spec.d_eps)


def draw_anchor(spec: AnchorSpec, name: str, param: Tensor) -> Tensor:
    """θ0 for one parameter as an fp32 CPU tensor: N(0, σ²) noise, plus the tensor's current
    value where `centered_at_init`; exactly 0 everywhere when sigma0 = 0 (the off arm)."""
    if spec.sigma0 == 0.0:  # exact +0.0 everywhere (randn·0 would give some -0.0)
        return torch.zeros(param.shape, dtype=torch.float32)
    noise = anchor_noise(spec, param, generator_for(spec.seed, name, "anchor"))
    if centered_at_init(name, param):
        noise.add_(param.detach().to("cpu", torch.float32))
    return noise


def draw_d(spec: AnchorSpec, name: str, shape: torch.Size) -> Tensor:
    """D's diagonal for one parameter: uniform in [1 − d_eps, 1 + d_eps], fp32 on the CPU."""
    return d_uniform(spec, shape, generator_for(spec.seed, name, "d"))


def check_precision(named: Iterable[tuple[str, Tensor]]) -> None:
    """Refuse bf16/fp16 parameters: their pull toward the anchor rounds away."""
    for name, param in named:
        if param.dtype in _LOW_PRECISION:
            raise ValueError(
                f"SyRe cannot decay the {param.dtype} parameter '{name}': its pull toward "
                "the anchor falls below one ulp and rounds away; keep fp32 master weights "
                "(e.g. Lightning precision='bf16-mixed' instead of 'bf16-true')"
            )


def like_param(master: Tensor, param: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """`master` on `param`'s device, in `dtype` (default: `param`'s), with `param`'s strides
    (channels_last weights stay on the foreach fast path); `master` itself when it matches."""
    dtype = param.dtype if dtype is None else dtype
    if param.device == master.device and dtype == master.dtype and param.is_contiguous():
        return master
    empty = torch.empty_like(param, dtype=dtype, memory_format=torch.preserve_format)
    return empty.copy_(master)


def numel_chunks(tensors: list[Tensor], limit: int | None = None) -> list[list[int]]:
    """Positions of `tensors` in consecutive chunks of at most `limit` (default CHUNK_NUMEL)
    elements; a larger tensor forms a chunk of its own."""
    limit = CHUNK_NUMEL if limit is None else limit
    chunks: list[list[int]] = []
    size = 0
    for i, tensor in enumerate(tensors):
        if not chunks or size + tensor.numel() > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(i)
        size += tensor.numel()
    return chunks


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
    for device_names in by_device.values():
        norms: list[Tensor] = []
        # In chunks: anchors made on demand (rounded or regenerated storage) never all exist
        # at once. Each norm is per tensor, so chunking changes no value.
        chunks = numel_chunks([params[n] for n in device_names])
        for chunk in ([device_names[i] for i in c] for c in chunks):
            weights = [params[n].detach() for n in chunk]
            zeros_if_none = [anchors[n] for n in chunk]
            centers = [
                torch.zeros_like(w) if a is None else a
                for w, a in zip(weights, zeros_if_none, strict=True)
            ]
            diffs = torch._foreach_sub(weights, centers)
            norms += [n.double() for n in torch._foreach_norm(diffs)]
            norms += [n.double() for n in torch._foreach_norm(centers)]
        # One host transfer per device, not one sync per parameter.
        values = torch.stack(norms).cpu().tolist()
        position = 0
        for chunk in chunks:
            for k, i in enumerate(chunk):
                distance_sq[device_names[i]] = values[position + k] ** 2
                anchor_sq[device_names[i]] = values[position + len(chunk) + k] ** 2
            position += 2 * len(chunk)

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
