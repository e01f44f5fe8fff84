"""NNCLR: the support set's nearest neighbour replaces the positive, carries no gradient, and
the set fills with past embeddings; the loss falls."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import build_method, losses_on_fixed_views

pytestmark = pytest.mark.usefixtures("one_thread")


def views(model, count: int = 8, seed: int = 0) -> list[torch.Tensor]:
    size = model.info.image_size
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(count, 1, size, size, generator=generator) for _ in range(2)]


def test_lookup_returns_the_banks_nearest_neighbour_by_cosine() -> None:
    model, _ = build_method("nnclr", "method_kwargs.support_set_size=32")
    bank = model.support_set.bank
    assert bank.shape == (32, 16)
    generator = torch.Generator().manual_seed(0)
    entries = torch.randn(32, 16, generator=generator) * torch.rand(32, 1, generator=generator)
    bank.copy_(entries)
    queries = torch.randn(5, 16, generator=generator)
    # Cosine, not Euclidean: scaling a query changes nothing.
    found = model.nearest_neighbour(queries * 7.0)
    nearest = (F.normalize(queries, dim=1) @ F.normalize(entries, dim=1).T).argmax(dim=1)
    assert torch.equal(found, entries[nearest])
    # A query equal to an entry (up to scale) finds that entry.
    assert torch.equal(model.nearest_neighbour(entries[[3, 17]] * 0.5), entries[[3, 17]])


def test_the_support_set_fills_with_the_second_views_embeddings_after_the_lookup() -> None:
    model, _ = build_method("nnclr", "method_kwargs.support_set_size=64")
    x0, x1 = views(model)
    before = model.support_set.bank.clone()
    looked_up: list[torch.Tensor] = []
    lookup = model.nearest_neighbour

    def recording(z: torch.Tensor, update: bool = False) -> torch.Tensor:
        found = lookup(z, update=update)
        looked_up.append(found)
        return found

    model.nearest_neighbour = recording
    model.train()
    model.training_loss([x0, x1])
    with torch.no_grad():
        z1 = model.projection_head(model.backbone(x1))  # BN in train mode: the same batch stats
    bank = model.support_set.bank
    torch.testing.assert_close(bank[:8], z1, rtol=1e-5, atol=1e-5)
    assert torch.equal(bank[8:], before[8:]) and int(model.support_set.bank_ptr) == 8
    # Both lookups saw the set as it was before this step (no view is its own neighbour).
    assert all(any(torch.equal(row, old) for old in before) for row in looked_up[1])


class ConstantPredictor(nn.Module):
    """Predictions that ignore their input: the backbone can then learn only through the
    nearest neighbours, which must carry no gradient."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.randn(8, dim, generator=torch.Generator().manual_seed(0)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.value[: len(z)]


def test_no_gradient_flows_through_the_nearest_neighbour() -> None:
    model, _ = build_method("nnclr", "method_kwargs.support_set_size=32")
    model.prediction_head = ConstantPredictor(16)
    x0, x1 = views(model)
    model.training_loss([x0, x1]).backward()
    assert model.prediction_head.value.grad.abs().sum() > 0
    for part in ("backbone", "projection_head"):
        grads = [p.grad for p in getattr(model, part).parameters()]
        assert all(g is None or not g.any() for g in grads), part
    # Without the lookup's stop-gradient (the embedding itself as its positive), the backbone
    # would learn through that branch: the check above can fail.
    model.zero_grad()
    model.nearest_neighbour = lambda z, update=False: z
    model.training_loss([x0, x1]).backward()
    assert any(p.grad is not None and p.grad.any() for p in model.backbone.parameters())


def test_heads_are_the_papers_and_lightlys_cifar_variant() -> None:
    paper, _ = build_method("nnclr")
    linears = [m for m in paper.projection_head.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 3 and paper.kwargs.support_set_size == 4096
    cifar, _ = build_method("nnclr", "method_kwargs.projection_layers=2")
    assert len([m for m in cifar.projection_head.modules() if isinstance(m, nn.Linear)]) == 2
    assert set(paper.trainable_parts()) == {"backbone", "projection_head", "prediction_head"}


def test_loss_falls_on_a_fixed_batch() -> None:
    # A support set of one batch: from the second step on it holds this batch's embeddings.
    # τ = 0.5 (lightly's CIFAR-10 benchmark): at τ = 0.1 a 16-d head first rises.
    torch.manual_seed(0)
    model, _ = build_method(
        "nnclr", "method_kwargs.support_set_size=16", "method_kwargs.temperature=0.5"
    )
    losses = losses_on_fixed_views(model, views(model, count=16), steps=9, lr=0.01)
    assert losses[-1] < losses[0] - 0.5, losses
