"""Barlow Twins: lambda reaches the loss, the loss falls, and the views are BYOL's."""

from __future__ import annotations

import pytest
import torch

from ssl_syre.methods import METHODS
from tests.conftest import build_method, losses_on_fixed_views

pytestmark = pytest.mark.usefixtures("one_thread")


def fixed_views(model, count: int = 16) -> list[torch.Tensor]:
    size = model.info.image_size
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(count, 1, size, size, generator=generator) for _ in range(2)]


def test_lambda_weighs_the_redundancy_terms() -> None:
    """Two views that agree perfectly but whose dimensions are copies of one another: the
    invariance terms vanish, so the loss is lambda times the redundancy and nothing else."""
    z = torch.randn(32, 1).expand(-1, 16) + 0.01 * torch.randn(32, 16)
    losses = {}
    for lam in (0.0, 0.005, 0.01):
        model, _ = build_method("barlowtwins", f"method_kwargs.lambda_param={lam}")
        losses[lam] = model.criterion(z, z).item()
    assert losses[0.0] < 1e-2 and losses[0.005] > 0.1
    assert losses[0.01] == pytest.approx(2 * losses[0.005], rel=0.05)


def test_loss_falls_on_a_fixed_batch() -> None:
    model, _ = build_method("barlowtwins")
    views = fixed_views(model)
    losses = losses_on_fixed_views(model, views, steps=6, lr=0.01)
    assert losses[-1] < 0.9 * losses[0], losses


def test_views_are_byols_pair() -> None:
    model, cfg = build_method("barlowtwins", "data.name=stl10")
    ours = METHODS["barlowtwins"].view_recipes(model.info, cfg.data)
    assert ours == METHODS["byol"].view_recipes(model.info, cfg.data)
    assert [r.gaussian_blur for r in ours] == [1.0, 0.1]  # 96 px: blur stays on


@pytest.mark.parametrize("layers", [2, 3, 4])
def test_projection_layers_sets_the_projectors_depth(layers: int) -> None:
    """2 is lightly's CIFAR-10 head (Linear-BN-ReLU, Linear); 3 is lightly's
    BarlowTwinsProjectionHead, the paper's."""
    model, _ = build_method("barlowtwins", f"method_kwargs.projection_layers={layers}")
    linears = [m for m in model.projection_head.modules() if isinstance(m, torch.nn.Linear)]
    norms = [m for m in model.projection_head.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(linears) == layers and len(norms) == layers - 1
    assert [m.bias is None for m in linears] == [True] * (layers - 1) + [False]
    assert linears[0].in_features == model.feature_dim and linears[-1].out_features == 16
    assert model.projection_head(torch.randn(4, model.feature_dim)).shape == (4, 16)
