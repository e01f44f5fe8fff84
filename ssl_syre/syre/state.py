"""SyRe's state dict: config, covered names, and the anchors and D as their storage keeps them.

Every value loads with `torch.load(weights_only=True)`. Kept anchors are stored rather than
redrawn on resume, so that a checkpoint does not depend on the RNG of the torch version that
loads it; a float32 state has the keys of every checkpoint written before storages existed.
A regenerated state holds per-tensor seeds instead of tensors, and the fingerprint of the
anchors drawn from them, which `SyRe.verify_anchors` compares on resume.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ssl_syre.syre.anchors import AnchorSpec
from ssl_syre.syre.storage import ROUNDED, AnchorStore


@dataclass
class SyReState:
    """A checked SyRe state: what `SyRe.load_state_dict` restores."""

    weight_decay: float
    mode: str
    store: AnchorStore


def to_state_dict(
    weight_decay: float,
    mode: str,
    store: AnchorStore,
    names: list[str],
    check: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The dict `SyRe.state_dict` returns.

    Args:
        weight_decay: γ.
        mode: "decoupled" or "coupled".
        store: The anchors and D.
        names: The covered names, in order.
        check: For a regenerated store, `AnchorStore.check_of` the parameters.
    """
    spec = store.spec
    config: dict[str, Any] = {
        "weight_decay": weight_decay,
        "sigma0": spec.sigma0,
        "anchor_scale": spec.anchor_scale,
        "d_eps": spec.d_eps,
        "seed": spec.seed,
        "mode": mode,
        "include_1d": spec.include_1d,
    }
    if spec.storage != "float32":  # float32 states keep the keys they always had
        config["anchor_storage"] = spec.storage
    state: dict[str, Any] = {
        "config": config,
        "covered_names": list(names),
        "anchors": {name: t.clone() for name, t in store.stored.items()},
        "d_diagonal": (
            None if store.d_stored is None else {n: t.clone() for n, t in store.d_stored.items()}
        ),
    }
    if spec.storage == "regenerate":
        state["anchor_seeds"] = dict(store.seeds)
        state["d_seeds"] = None if store.d_seeds is None else dict(store.d_seeds)
        state["anchor_check"] = None if check is None else dict(check)
    return state


def _mismatch(missing: list[str], unexpected: list[str]) -> ValueError:
    return ValueError(
        "SyRe state does not match this model's covered parameters "
        f"(missing {missing[:3]}, unexpected {unexpected[:3]}): it was saved for another "
        "model or another coverage (include_1d, parameters=)"
    )


def from_state_dict(state_dict: Mapping[str, Any], shapes: Mapping[str, torch.Size]) -> SyReState:
    """Check `state_dict` against the covered parameters' shapes and read it.

    Args:
        state_dict: A dict from `to_state_dict` (e.g. a checkpoint's "syre" entry).
        shapes: Shape of each covered parameter, in the order the tensors are to be kept.

    Raises:
        ValueError: If the covered names or shapes differ, or the state is incomplete.
    """
    try:
        config = dict(state_dict["config"])
        names = list(state_dict["covered_names"])
        anchors = dict(state_dict["anchors"])
        d_diagonal = state_dict["d_diagonal"]
        spec = AnchorSpec(
            sigma0=float(config["sigma0"]),
            # A state without anchor_scale is fan_in-relative, the scale it was drawn with.
            anchor_scale=str(config.get("anchor_scale", "fan_in")),
            d_eps=float(config["d_eps"]),
            seed=int(config["seed"]),
            include_1d=bool(config["include_1d"]),
            # A state without anchor_storage kept fp32 anchors, as every state once did.
            storage=str(config.get("anchor_storage", "float32")),
        )
    except (KeyError, TypeError) as error:
        raise ValueError(f"not a SyRe state dict: missing {error}") from None
    regenerate = spec.storage == "regenerate"
    seeds = {n: int(s) for n, s in dict(state_dict.get("anchor_seeds") or {}).items()}
    raw_d_seeds = state_dict.get("d_seeds")
    mine = set(shapes)
    missing, unexpected = sorted(mine - set(names)), sorted(set(names) - mine)
    if (
        missing
        or unexpected
        or set(anchors) | set(seeds) != set(names)
        or set(anchors) & set(seeds)
    ):
        raise _mismatch(missing, unexpected)
    if seeds and not regenerate:
        raise ValueError(
            "SyRe state is inconsistent: anchor seeds without anchor_storage=regenerate"
        )
    has_d = d_diagonal is not None or (regenerate and raw_d_seeds is not None)
    if has_d != (spec.d_eps != 0.0) or (regenerate and d_diagonal is not None):
        raise ValueError("SyRe state is inconsistent: D must be kept (or seeded) iff d_eps > 0")
    d_seeds = None if raw_d_seeds is None else {n: int(s) for n, s in dict(raw_d_seeds).items()}
    if d_seeds is not None and set(d_seeds) != set(names):
        raise _mismatch(sorted(set(names) - set(d_seeds)), sorted(set(d_seeds) - set(names)))
    # Regenerated states keep only the centred anchors; D, when kept, covers every name.
    tables = [(anchors, list(anchors) if regenerate else names)]
    if d_diagonal is not None:
        tables.append((dict(d_diagonal), names))
    for table, required in tables:
        for name in required:
            if name not in table or tuple(table[name].shape) != tuple(shapes[name]):
                got = tuple(table[name].shape) if name in table else None
                raise ValueError(
                    f"SyRe state has shape {got} for '{name}' but the parameter has "
                    f"{tuple(shapes[name])}: it was saved for another model"
                )
    dtype = ROUNDED.get(spec.storage, torch.float32)

    def on_cpu(table: Mapping[str, Tensor], as_dtype: torch.dtype) -> dict[str, Tensor]:
        return {n: table[n].detach().to("cpu", as_dtype).clone() for n in shapes if n in table}

    store = AnchorStore(
        spec,
        stored=on_cpu(anchors, dtype),
        d_stored=None if d_diagonal is None else on_cpu(d_diagonal, torch.float32),
        seeds={n: seeds[n] for n in shapes if n in seeds},
        d_seeds=d_seeds,
        expected=state_dict.get("anchor_check") if regenerate else None,
    )
    return SyReState(
        weight_decay=float(config["weight_decay"]), mode=str(config["mode"]), store=store
    )
