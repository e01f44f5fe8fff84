"""Weight diagnostics of symmetric states: dead, duplicated and low-rank units of every layer.

The SyRe paper's argument is about the weights: a loss with a reflection symmetry has
symmetric states (Pθ = 0) that gradient descent never leaves, and plain weight decay pulls
the model into them [0]. Three kinds show in a conv or linear layer:

- dead units: incoming weights about 0 (the rescaling symmetry of a ReLU unit, Theorem 1's
  P that zeroes one unit), or on real inputs a unit that is never positive after its
  nonlinearity;
- duplicated units: output channels whose incoming weights are parallel (the permutation
  symmetry: two units that are one unit, effective width = distinct units);
- low-rank weights: singular values far below the largest (the rotation symmetry of a
  linear map: a layer of rank r acts as a narrower one).

Features are measured per backbone stage (timm's `feature_info`), with RankMe [1] and the
low-rankness of `ssl_syre.evaluation.collapse`, so a collapse can be located, not only seen
at the output. Definitions and the theorems they correspond to: docs/diagnostics.md.

- [0] SyRe, Ziyin et al., 2025, https://arxiv.org/abs/2408.15495
- [1] RankMe, Garrido et al., 2023, https://arxiv.org/abs/2210.02885
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from torch import Tensor, nn

from ssl_syre.evaluation.collapse import low_rankness, rankme

# Relative thresholds on singular values (share of σ_k below t·σ_1).
LOW_RANK_THRESHOLDS = (1e-2, 1e-3, 1e-4)
# Which BatchNorm statistics the activation and feature measures run on (diagnose_model).
BN_STATISTICS = ("running", "batch")
# A unit is dead when its incoming weight norm is below this share of the layer's largest.
DEAD_TOLERANCE = 1e-3
# Two units are duplicates when the cosine of their incoming weights (and bias) is >= 1 - this.
DUPLICATE_TOLERANCE = 1e-3
# Modules whose output is "after the nonlinearity" (class names: torch's and timm's own).
ACTIVATIONS = {
    "relu",
    "relu6",
    "leakyrelu",
    "gelu",
    "gelutanh",
    "quickgelu",
    "silu",
    "swish",
    "mish",
    "hardswish",
    "elu",
    "celu",
    "selu",
    "prelu",
    "softplus",
}
LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class SymmetryReport:
    """Per-layer and per-stage diagnostics and their totals (`to_json` gives the CLI's JSON)."""

    layers: list[dict[str, Any]] = field(default_factory=list)
    features: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "totals": self.totals,
            "layers": self.layers,
            "features": self.features,
        }


def weight_rows(layer: nn.Module) -> Tensor:
    """The incoming weights of each output unit as rows: (out, fan_in), float64 on CPU."""
    weight = layer.weight.detach().to("cpu", torch.float64)
    return weight.reshape(weight.shape[0], -1)


def dead_units(rows: Tensor, tolerance: float = DEAD_TOLERANCE) -> Tensor:
    """Boolean mask of units whose incoming weight norm is <= tolerance x the layer's largest."""
    norms = rows.norm(dim=1)
    return norms <= tolerance * norms.max().clamp_min(0.0)


def duplicate_groups(rows: Tensor, alive: Tensor, tolerance: float = DUPLICATE_TOLERANCE) -> Tensor:
    """Group label of each live unit; units with cosine >= 1 - tolerance share a label.

    Parallel with a positive factor only: a ReLU unit and its positive multiple compute the
    same function up to a scale the next layer undoes; an opposite sign is another unit.
    Groups are the connected components of the "parallel" graph (scipy), so a chain of
    near-parallel units counts as one group. Dead units get label -1.
    """
    labels = torch.full((len(rows),), -1, dtype=torch.long)
    index = alive.nonzero().flatten()
    if len(index) == 0:
        return labels
    unit = rows[index] / rows[index].norm(dim=1, keepdim=True)
    parallel = (unit @ unit.T >= 1.0 - tolerance).numpy()
    _, components = connected_components(csr_matrix(parallel), directed=False)
    labels[index] = torch.as_tensor(components, dtype=torch.long)
    return labels


def singular_value_shares(
    rows: Tensor, thresholds: tuple[float, ...] = LOW_RANK_THRESHOLDS
) -> tuple[dict[str, float], dict[str, int], float]:
    """Share and count of singular values below t·σ_1 for each t, and the effective rank.

    The effective rank is RankMe's exp-entropy of the normalized spectrum [1] applied to the
    weight matrix (Roy & Vetterli's effective rank); the shares are over min(out, fan_in).
    """
    values = torch.linalg.svdvals(rows)
    largest = values[0].item() if len(values) else 0.0
    counts = {
        f"{t:g}": int(len(values)) if largest == 0.0 else int((values < t * largest).sum())
        for t in thresholds
    }
    shares = {key: count / max(len(values), 1) for key, count in counts.items()}
    effective = rankme(rows) if largest > 0.0 else 0.0
    return shares, counts, effective


def layer_record(
    name: str,
    layer: nn.Module,
    anchors: Mapping[str, Tensor] | None = None,
    thresholds: tuple[float, ...] = LOW_RANK_THRESHOLDS,
    dead_tolerance: float = DEAD_TOLERANCE,
    duplicate_tolerance: float = DUPLICATE_TOLERANCE,
) -> dict[str, Any]:
    """The weight diagnostics of one conv or linear layer named `name`."""
    rows = weight_rows(layer)
    dead = dead_units(rows, dead_tolerance)
    bias = getattr(layer, "bias", None)
    # Identical neurons have the same bias too: the bias joins the rows for duplicates only.
    with_bias = (
        rows if bias is None else torch.cat([rows, bias.detach().double().cpu()[:, None]], 1)
    )
    groups = duplicate_groups(with_bias, ~dead, duplicate_tolerance)
    distinct = int(groups[groups >= 0].unique().numel())
    shares, counts, effective = singular_value_shares(rows, thresholds)
    record: dict[str, Any] = {
        "name": name,
        "type": type(layer).__name__,
        "shape": list(layer.weight.shape),
        "units": int(rows.shape[0]),
        "dead": int(dead.sum()),
        "duplicated": int((~dead).sum()) - distinct,
        "effective_width": distinct,
        "rank": round(effective, 3),
        "max_rank": int(min(rows.shape)),
        "low_rank": shares,
        "low_rank_count": counts,
        "dead_activations": None,
        "activation": None,
        "distance_to_anchor": None,
    }
    if anchors:
        record["distance_to_anchor"] = anchor_distance(name, layer, anchors)
    return record


def anchor_distance(name: str, layer: nn.Module, anchors: Mapping[str, Tensor]) -> float | None:
    """‖w − θ0‖ / ‖θ0‖ over the layer's anchored tensors (weight, and bias if anchored)."""
    num = den = 0.0
    for suffix in ("weight", "bias"):
        anchor = anchors.get(f"{name}.{suffix}")
        param = getattr(layer, suffix, None)
        if anchor is None or param is None:
            continue
        anchor = anchor.detach().to("cpu", torch.float64)
        num += (param.detach().to("cpu", torch.float64) - anchor).pow(2).sum().item()
        den += anchor.pow(2).sum().item()
    if den == 0.0:
        return None
    return round(float(np.sqrt(num / den)), 4)


def named_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv and linear layers with their parameter-name prefixes.

    An SSL method (`trainable_parts()`) contributes its trained parts only: BYOL's momentum
    copies are not what the optimizer shaped.
    """
    parts = model.trainable_parts() if hasattr(model, "trainable_parts") else {"": model}
    found = []
    for part, module in parts.items():
        for name, layer in module.named_modules():
            if isinstance(layer, LAYER_TYPES):
                found.append((".".join(p for p in (part, name) if p), layer))
    return found


def _channel_max(output: Tensor, channel_axis: int) -> Tensor:
    """Per-channel max over every other axis (batch, positions, tokens)."""
    return output.movedim(channel_axis, 0).flatten(1).amax(dim=1)


class _Recorder:
    """Forward hooks: which units an activation ever makes positive, and stage features.

    An activation is attributed to every conv or linear layer called since the previous
    activation with as many output channels (a residual block's last activation belongs to
    its last conv and to its shortcut's conv alike). Channels are axis 1 of a conv's output
    and the last axis of a linear's (tokens). Functional activations (`F.relu` in a forward)
    have no module to hook: their layers report no activation count.
    """

    def __init__(
        self, root: nn.Module, layers: list[tuple[str, nn.Module]], stages: dict[str, nn.Module]
    ) -> None:
        self.pending: list[tuple[str, int]] = []  # (layer name, channel axis)
        self.positive: dict[str, Tensor] = {}
        self.activation_of: dict[str, str] = {}
        self.stage_outputs: dict[str, list[Tensor]] = {name: [] for name in stages}
        self.units = {name: int(layer.weight.shape[0]) for name, layer in layers}
        self.handles = []
        for name, layer in layers:
            axis = -1 if isinstance(layer, nn.Linear) else 1
            self.handles.append(layer.register_forward_hook(self._on_layer(name, axis)))
        for name, module in root.named_modules():
            if type(module).__name__.lower() in ACTIVATIONS:
                self.handles.append(module.register_forward_hook(self._on_activation(name)))
        for name, module in stages.items():
            self.handles.append(module.register_forward_hook(self._on_stage(name)))

    def _on_layer(self, name: str, axis: int) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
            self.pending.append((name, axis))

        return hook

    def _on_activation(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
            if not isinstance(output, Tensor) or output.ndim < 2:
                return
            for layer, axis in self.pending:
                if output.shape[axis] != self.units[layer]:
                    continue
                positive = _channel_max(output.detach(), axis) > 0
                previous = self.positive.get(layer)
                self.positive[layer] = positive if previous is None else previous | positive
                self.activation_of[layer] = name
            self.pending = []

        return hook

    def _on_stage(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, (list, tuple)):
                output = output[0]
            if isinstance(output, Tensor) and output.ndim >= 2:
                pooled = output.detach().float()
                if pooled.ndim == 4:  # (N, C, H, W)
                    pooled = pooled.mean(dim=(2, 3))
                elif pooled.ndim == 3:  # tokens (N, L, C)
                    pooled = pooled.mean(dim=1)
                self.stage_outputs[name].append(pooled.cpu())

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def stage_modules(backbone: nn.Module, prefix: str = "") -> dict[str, nn.Module]:
    """The backbone's stages as timm's `feature_info` names them ({} for other models)."""
    info = getattr(backbone, "feature_info", None)
    modules = dict(backbone.named_modules())
    stages = {}
    for entry in info or []:
        name = entry.get("module") if isinstance(entry, dict) else None
        if name in modules:
            stages[f"{prefix}{name}"] = modules[name]
    return stages


def feature_record(
    name: str, features: Tensor, thresholds: tuple[float, ...] = LOW_RANK_THRESHOLDS
) -> dict[str, Any]:
    """RankMe and low-rankness (`ssl_syre.evaluation.collapse`) of one N x C feature matrix."""
    return {
        "name": name,
        "dim": int(features.shape[1]),
        "samples": int(features.shape[0]),
        "rankme": round(rankme(features), 3),
        "low_rank": {f"{t:g}": low_rankness(features, t) for t in thresholds},
    }


@torch.no_grad()
def diagnose_model(
    model: nn.Module,
    batch: Tensor | None = None,
    anchors: Mapping[str, Tensor] | None = None,
    forward: Callable[[Tensor], Any] | None = None,
    thresholds: tuple[float, ...] = LOW_RANK_THRESHOLDS,
    dead_tolerance: float = DEAD_TOLERANCE,
    duplicate_tolerance: float = DUPLICATE_TOLERANCE,
    bn_statistics: str = "batch",
) -> SymmetryReport:
    """Dead, duplicated and low-rank units of every conv and linear layer of `model` [0].

    Args:
        model: A module, or an SSL method (its trained parts; its backbone's stages and its
            projector output are measured too).
        batch: Real inputs (N, C, H, W) for the activation and feature measures; None gives
            the weight measures alone. Run in eval mode.
        anchors: SyRe's anchors by parameter name (`SyRe.anchors`, or the checkpoint's
            `syre.anchors`) for each layer's distance ‖w − θ0‖ / ‖θ0‖; None or empty: none.
        forward: What to run on `batch`; default: backbone then `project` for an SSL
            method, else `model` itself.
        thresholds: Relative singular value thresholds of the low-rank shares.
        dead_tolerance: A unit is dead when ‖w_i‖ <= this x max_j ‖w_j‖ in its layer.
        duplicate_tolerance: Units are duplicates when cos(w_i, w_j) >= 1 - this.
        bn_statistics: "batch" (default): BatchNorm on `batch`'s own statistics, as in
            training, so that a model whose running statistics were never calibrated (a fresh
            one) does not read as having dead units; "running": on its running statistics,
            the protocol of the kNN, linear probe and end-of-run collapse table. The running
            statistics are left as they were either way.

    Returns:
        A SymmetryReport; `to_json()` is what `python -m ssl_syre.diagnose --json` writes.
    """
    layers = named_layers(model)
    records = [
        layer_record(name, layer, anchors, thresholds, dead_tolerance, duplicate_tolerance)
        for name, layer in layers
    ]
    features: list[dict[str, Any]] = []
    if bn_statistics not in BN_STATISTICS:
        raise ValueError(f"bn_statistics={bn_statistics!r}; choose from {BN_STATISTICS}")
    if batch is not None:
        features = _run_batch(
            model, layers, records, batch, forward, thresholds, bn_statistics == "batch"
        )
    return SymmetryReport(
        layers=records,
        features=features,
        totals=totals_of(records),
        settings={
            "dead_tolerance": dead_tolerance,
            "duplicate_cosine": 1.0 - duplicate_tolerance,
            "thresholds": [f"{t:g}" for t in thresholds],
            "samples": None if batch is None else int(len(batch)),
            "bn_statistics": bn_statistics,
        },
    )


def _run_batch(
    model: nn.Module,
    layers: list[tuple[str, nn.Module]],
    records: list[dict[str, Any]],
    batch: Tensor,
    forward: Callable[[Tensor], Any] | None,
    thresholds: tuple[float, ...],
    batch_statistics: bool,
) -> list[dict[str, Any]]:
    backbone = getattr(model, "backbone", model)
    prefix = "backbone." if backbone is not model else ""
    project = getattr(model, "project", None) if backbone is not model else None
    outputs: dict[str, Tensor] = {}

    def default_forward(x: Tensor) -> None:
        outputs["output" if project is None else "backbone"] = backbone(x).flatten(1)
        if project is not None:
            outputs["projector"] = project(outputs["backbone"])

    recorder = _Recorder(model, layers, stage_modules(backbone, prefix))
    modes = {m: m.training for m in model.modules()}
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    kept = [
        (m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
        for m in norms
    ]
    model.eval()
    # With batch statistics: BatchNorm in training mode with momentum 0, so that the running
    # statistics stay as they are.
    for module in norms if batch_statistics else []:
        module.train()
        module.momentum = 0.0
    weight = next(model.parameters())
    try:
        (forward or default_forward)(batch.to(weight.device, weight.dtype))
    finally:
        recorder.remove()
        for module, mode in modes.items():
            module.training = mode
        for module, (momentum, tracked) in zip(norms, kept, strict=True):
            module.momentum = momentum
            if tracked is not None:
                module.num_batches_tracked.copy_(tracked)
    for record in records:
        positive = recorder.positive.get(record["name"])
        if positive is not None:
            record["dead_activations"] = int((~positive).sum())
            record["activation"] = recorder.activation_of[record["name"]]
    features = [
        feature_record(name, torch.cat(chunks), thresholds)
        for name, chunks in recorder.stage_outputs.items()
        if chunks
    ]
    features += [feature_record(name, z.float().cpu(), thresholds) for name, z in outputs.items()]
    return features


def totals_of(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Sums over layers; `low_rank` pools every layer's singular values per threshold."""
    measured = [r for r in records if r["dead_activations"] is not None]
    directions = sum(r["max_rank"] for r in records)
    thresholds = list(records[0]["low_rank"]) if records else []
    middle = thresholds[len(thresholds) // 2] if thresholds else None
    return {
        "layers": len(records),
        "units": sum(r["units"] for r in records),
        "dead": sum(r["dead"] for r in records),
        "duplicated": sum(r["duplicated"] for r in records),
        "effective_width": sum(r["effective_width"] for r in records),
        "dead_activations": sum(r["dead_activations"] for r in measured) if measured else None,
        "units_with_activation": sum(r["units"] for r in measured),
        "low_rank": {
            t: sum(r["low_rank_count"][t] for r in records) / max(directions, 1) for t in thresholds
        },
        "low_rank_layers": sum(1 for r in records if middle and r["low_rank"][middle] > 0),
        "low_rank_layers_threshold": middle,
    }


def summary_of(report: SymmetryReport) -> dict[str, Any]:
    """Flat totals for metrics.json and the online logger (numbers only)."""
    totals = report.totals
    summary = {
        "dead_units": totals["dead"],
        "duplicated_units": totals["duplicated"],
        "effective_width": totals["effective_width"],
        "units": totals["units"],
        "low_rank_layers": totals["low_rank_layers"],
    }
    if totals["dead_activations"] is not None:
        summary["dead_activations"] = totals["dead_activations"]
    for t, share in totals["low_rank"].items():
        summary[f"low_rank_{t}"] = share
    return summary
