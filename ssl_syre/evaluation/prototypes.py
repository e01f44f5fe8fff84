"""Distinct prototypes of a prototype layer: the measure of partial prototype collapse.

Govindarajan et al. [0] find that many of the K prototypes of DINO and iBOT end up as copies of
one another, so that far fewer than K are in use; they count prototypes whose cosine similarity
exceeds a threshold as one. Here a group is a connected component of the graph "cosine > t":
copies of copies are one prototype, and the count does not depend on the prototypes' order.
Copies are the permutation-symmetric state the SyRe paper [1] is about.

- [0] Govindarajan, Sidén, Roll & Lindsten, On Partial Prototype Collapse in the DINO Family
  of Self-Supervised Methods, BMVC 2024, https://arxiv.org/abs/2410.14060
- [1] Ziyin, Xu & Chuang, Remove Symmetries to Control Model Expressivity, ICLR 2025,
  https://arxiv.org/abs/2408.15495
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

# Cosine thresholds: 0.99 counts near-exact copies only, 0.9 also prototypes that differ by
# about 26° (arccos 0.9); a collapse shows at all three, a near-collapse at the lower ones.
THRESHOLDS: tuple[float, ...] = (0.9, 0.95, 0.99)
# Entries of one block of the K x K similarity matrix (64 MB of float32): memory stays
# bounded for K = 65,536 (the DINO paper's head) on any device.
BLOCK_ENTRIES = 1 << 24


def _min_neighbour_labels(
    unit: Tensor, labels: Tensor, thresholds: Tensor, block_rows: int
) -> Tensor:
    """For each threshold and prototype, the smallest label among its neighbours (itself
    included): one step of min-label propagation over the graph "cosine > t"."""
    count = len(unit)
    out = labels.clone()
    for start in range(0, count, block_rows):
        similarity = unit[start : start + block_rows] @ unit.T  # (rows, K)
        for i, t in enumerate(thresholds):
            neighbour = torch.where(similarity > t, labels[i][None, :], count)
            out[i, start : start + len(similarity)] = torch.minimum(
                out[i, start : start + len(similarity)], neighbour.amin(dim=1)
            )
    return out


@torch.no_grad()
def distinct_prototypes(
    weight: Tensor, thresholds: Sequence[float] = THRESHOLDS
) -> dict[float, int]:
    """The number of distinct prototypes at each cosine threshold.

    Args:
        weight: (K, d), one prototype a row (a DINO head's `last_layer.weight`); only the
            directions count, so a weight-normalised layer's g does not matter.
        thresholds: Prototypes whose cosine similarity exceeds t are one prototype; groups are
            the connected components of that relation.

    Returns:
        {t: number of groups}, between 1 and K; a zero row is a group of its own.
    """
    if weight.ndim != 2:
        raise ValueError(f"prototypes must be a (K, d) matrix, got shape {tuple(weight.shape)}")
    unit = torch.nn.functional.normalize(weight.detach().float(), dim=1)
    count = len(unit)
    if count == 0:
        return {float(t): 0 for t in thresholds}
    limits = torch.tensor([float(t) for t in thresholds], device=unit.device)
    block_rows = max(1, BLOCK_ENTRIES // count)
    # Each label is the index of a prototype in the same group; the smallest one spreads
    # over the group. Pointer jumping (labels[labels]) shortens long chains to a few rounds.
    labels = torch.arange(count, device=unit.device).expand(len(limits), count).clone()
    while True:
        spread = _min_neighbour_labels(unit, labels, limits, block_rows)
        spread = torch.gather(spread, 1, spread)
        if torch.equal(spread, labels):
            break
        labels = spread
    return {float(t): int(torch.unique(labels[i]).numel()) for i, t in enumerate(thresholds)}


def prototype_summary(
    weights: Mapping[str, Tensor], thresholds: Sequence[float] = THRESHOLDS
) -> dict[str, dict[str, int]]:
    """{layer: {"prototypes": K, "distinct@t": count, ...}} for metrics.json and diagnose."""
    summary: dict[str, dict[str, int]] = {}
    for name, weight in weights.items():
        counts = distinct_prototypes(weight, thresholds)
        summary[name] = {"prototypes": int(weight.shape[0])}
        summary[name].update({f"distinct@{t:g}": n for t, n in counts.items()})
    return summary


def flat_prototype_metrics(summary: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """`prototype_summary` as flat numbers for a logger: prototypes/<layer>/distinct@t."""
    return {
        f"prototypes/{layer}/{key}": float(value)
        for layer, record in summary.items()
        for key, value in record.items()
    }


def format_prototypes(summary: Mapping[str, Mapping[str, int]]) -> str:
    """A short table for stdout: one line a prototype layer, K and the distinct counts."""
    if not summary:
        return ""
    keys = [key for key in next(iter(summary.values())) if key.startswith("distinct@")]
    head = f"{'prototype layer':<44} {'K':>7} " + " ".join(
        f"{'cos>' + key.removeprefix('distinct@'):>9}" for key in keys
    )
    lines = [
        "Distinct prototypes (cosine above t counts as one; Govindarajan et al. 2024)",
        head,
        "-" * len(head),
    ]
    for layer, record in summary.items():
        lines.append(
            f"{layer[:44]:<44} {record['prototypes']:>7} "
            + " ".join(f"{record[key]:>9}" for key in keys)
        )
    return "\n".join(lines)
