"""SyRe's state dict: config, covered names, anchors and D as CPU tensors (weights_only-loadable).

Anchors are stored rather than redrawn on resume so that a checkpoint does not depend on the
RNG implementation of the torch version that loads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ssl_syre.syre.anchors import AnchorSpec


@dataclass
class SyReState:
    """A checked SyRe state: what `SyRe.load_state_dict` restores."""

    weight_decay: float
    mode: str
    spec: AnchorSpec
    anchors: dict[str, Tensor]
    d_diagonal: dict[str, Tensor] | None


def to_state_dict(
    weight_decay: float,
    mode: str,
    spec: AnchorSpec,
    anchors: Mapping[str, Tensor],
    d_diagonal: Mapping[str, Tensor] | None,
) -> dict[str, Any]:
    """The dict `SyRe.state_dict` returns; its keys are those of every checkpoint written so far."""
    return {
        "config": {
            "weight_decay": weight_decay,
            "sigma0": spec.sigma0,
            "anchor_scale": spec.anchor_scale,
            "d_eps": spec.d_eps,
            "seed": spec.seed,
            "mode": mode,
            "include_1d": spec.include_1d,
        },
        "covered_names": list(anchors),
        "anchors": {name: t.clone() for name, t in anchors.items()},
        "d_diagonal": (
            None if d_diagonal is None else {name: t.clone() for name, t in d_diagonal.items()}
        ),
    }


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
    except (KeyError, TypeError) as error:
        raise ValueError(f"not a SyRe state dict: missing {error}") from None
    mine = set(shapes)
    missing, unexpected = sorted(mine - set(names)), sorted(set(names) - mine)
    if missing or unexpected or set(anchors) != set(names):
        raise ValueError(
            "SyRe state does not match this model's covered parameters "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}): it was saved for another "
            "model or another coverage (include_1d, parameters=)"
        )
    if (d_diagonal is None) != (float(config.get("d_eps", 0.0)) == 0.0):
        raise ValueError("SyRe state is inconsistent: d_diagonal must be stored iff d_eps > 0")
    tables = [anchors] if d_diagonal is None else [anchors, dict(d_diagonal)]
    for table in tables:
        for name in names:
            if name not in table or tuple(table[name].shape) != tuple(shapes[name]):
                got = tuple(table[name].shape) if name in table else None
                raise ValueError(
                    f"SyRe state has shape {got} for '{name}' but the parameter has "
                    f"{tuple(shapes[name])}: it was saved for another model"
                )
    spec = AnchorSpec(
        sigma0=float(config["sigma0"]),
        # A state without anchor_scale is fan_in-relative, the scale it was drawn with.
        anchor_scale=str(config.get("anchor_scale", "fan_in")),
        d_eps=float(config["d_eps"]),
        seed=int(config["seed"]),
        include_1d=bool(config["include_1d"]),
    )

    def fp32_cpu(table: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {n: table[n].detach().to("cpu", torch.float32).clone() for n in shapes}

    return SyReState(
        weight_decay=float(config["weight_decay"]),
        mode=str(config["mode"]),
        spec=spec,
        anchors=fp32_cpu(anchors),
        d_diagonal=None if d_diagonal is None else fp32_cpu(d_diagonal),
    )
