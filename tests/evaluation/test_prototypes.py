"""Distinct prototypes: planted copies and near-copies are found exactly, at each threshold."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_syre.evaluation.prototypes import (
    distinct_prototypes,
    flat_prototype_metrics,
    format_prototypes,
    prototype_summary,
)
from tests.conftest import build_method

K, D = 64, 32


def random_prototypes(seed: int = 0) -> torch.Tensor:
    weight = torch.randn(K, D, generator=torch.Generator().manual_seed(seed))
    unit = torch.nn.functional.normalize(weight, dim=1)
    similarity = unit @ unit.T - 2 * torch.eye(K)
    assert similarity.max() < 0.8  # the random ones are distinct at every threshold below
    return weight


def near_copies(base: torch.Tensor, cosines: list[float], seed: int = 1) -> torch.Tensor:
    """Rows at exactly the given cosines to `base`, along mutually orthogonal directions."""
    directions = torch.randn(D, len(cosines) + 1, generator=torch.Generator().manual_seed(seed))
    directions[:, 0] = base
    q, _ = torch.linalg.qr(directions)
    u = q[:, 0] * torch.sign(q[:, 0] @ base)
    return torch.stack(
        [c * u + math.sqrt(1 - c * c) * q[:, i + 1] for i, c in enumerate(cosines)]
    ) * (1 + torch.arange(len(cosines)).unsqueeze(1))  # the norm must not matter


def test_planted_copies_and_near_copies_are_counted_exactly() -> None:
    weight = random_prototypes()
    # 4 exact copies of prototype 0 (one scaled: only the direction counts).
    weight[1:5] = weight[0]
    weight[4] = 3.0 * weight[0]
    # 2 near-copies of prototype 10 at cosine 0.97 (same above 0.9 and 0.95, not above 0.99).
    weight[11:13] = near_copies(weight[10], [0.97, 0.97])
    # 1 near-copy of prototype 20 at cosine 0.92 (the same above 0.9 only).
    weight[21:22] = near_copies(weight[20], [0.92], seed=2)
    # An opposite direction is another prototype.
    weight[30] = -weight[31]
    counts = distinct_prototypes(weight, [0.9, 0.95, 0.99])
    assert counts == {0.99: K - 4, 0.95: K - 4 - 2, 0.9: K - 4 - 2 - 1}


def test_groups_are_connected_components() -> None:
    """A chain whose neighbours are above the threshold is one prototype, even where its ends
    are far apart (order-free: shuffled rows give the same count)."""
    u, v = torch.linalg.qr(torch.randn(D, 2, generator=torch.Generator().manual_seed(3)))[0].T
    angles = torch.arange(40) * 0.05  # neighbours at cos(0.05) = 0.99875, ends at cos(1.95) < 0
    chain = torch.cos(angles)[:, None] * u + torch.sin(angles)[:, None] * v
    weight = torch.cat([random_prototypes()[:10], chain])
    permuted = weight[torch.randperm(len(weight), generator=torch.Generator().manual_seed(4))]
    for rows in (weight, permuted):
        assert distinct_prototypes(rows, [0.998, 0.999]) == {0.998: 11, 0.999: 50}


def test_blocks_give_the_same_count(monkeypatch: pytest.MonkeyPatch) -> None:
    from ssl_syre.evaluation import prototypes

    weight = random_prototypes()
    weight[5:40] = weight[2]
    whole = distinct_prototypes(weight)
    monkeypatch.setattr(prototypes, "BLOCK_ENTRIES", 3 * K)  # 3 rows a block
    assert distinct_prototypes(weight) == whole == {0.9: K - 35, 0.95: K - 35, 0.99: K - 35}


def test_summary_flat_metrics_and_table() -> None:
    weight = random_prototypes()
    weight[1] = weight[0]
    summary = prototype_summary({"head.last_layer": weight}, [0.9, 0.99])
    assert summary == {
        "head.last_layer": {"prototypes": K, "distinct@0.9": K - 1, "distinct@0.99": K - 1}
    }
    flat = flat_prototype_metrics(summary)
    assert flat["prototypes/head.last_layer/distinct@0.99"] == K - 1
    table = format_prototypes(summary)
    assert "head.last_layer" in table and f"{K - 1}" in table and "cos>0.99" in table
    with pytest.raises(ValueError, match="matrix"):
        distinct_prototypes(torch.randn(3))


def test_dino_hands_its_weight_normalised_prototypes_and_simclr_none() -> None:
    model = build_method("dino", "method_kwargs.n_local_views=0")[0]
    weights = model.prototype_weights()
    assert list(weights) == ["projection_head.last_layer"]
    layer = model.projection_head.last_layer
    expected = torch.nn.functional.normalize(layer.weight.detach(), dim=1)
    torch.testing.assert_close(weights["projection_head.last_layer"], expected)
    assert weights["projection_head.last_layer"].shape == (16, model.kwargs.bottleneck_dim)
    with torch.no_grad():  # a planted copy in the trained parameter shows in the hook
        layer.parametrizations.weight.original1[1] = 2 * layer.parametrizations.weight.original1[0]
    assert distinct_prototypes(model.prototype_weights()["projection_head.last_layer"])[0.99] == 15
    assert build_method("simclr")[0].prototype_weights() == {}
