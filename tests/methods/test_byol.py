"""BYOL: the loss in the form of its reference, selected by method_kwargs.loss_form."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from ssl_syre.errors import UserError
from tests.conftest import build_method

pytestmark = pytest.mark.usefixtures("one_thread")


def views(size: int, count: int = 8) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(count, 1, size, size, generator=generator) for _ in range(2)]


def test_the_papers_loss_is_the_sum_of_two_minus_two_cos_over_both_pairs() -> None:
    model, _ = build_method("byol")
    assert model.kwargs.loss_form == "paper"  # the default
    model.update_momentum_copies = lambda: model.kwargs.momentum_start  # fixed target
    x0, x1 = views(model.info.image_size)
    with torch.no_grad():
        p0, p1 = (model.prediction_head(model.projection_head(model.backbone(x))) for x in (x0, x1))
        z0, z1 = (model.projection_head_momentum(model.backbone_momentum(x)) for x in (x0, x1))
        expected = (2 - 2 * F.cosine_similarity(p0, z1)).mean() + (
            2 - 2 * F.cosine_similarity(p1, z0)
        ).mean()
    torch.testing.assert_close(model.training_loss([x0, x1]), expected)


def test_the_papers_gradient_is_four_times_lightlys_cifar10_form() -> None:
    """Same weights, same views: Σ(2 − 2cos) has 4x the gradient of 0.5·Σ(−cos)."""
    model, _ = build_method("byol")
    x = views(model.info.image_size)

    def gradients(loss_form: str) -> list[torch.Tensor]:
        copy_ = copy.deepcopy(model)
        copy_.kwargs.loss_form = loss_form
        copy_.training_loss(x).backward()
        return [p.grad for m in copy_.trainable_parts().values() for p in m.parameters()]

    paper, lightly = gradients("paper"), gradients("lightly_cifar10")
    assert any(g.abs().sum() > 0 for g in lightly)
    for a, b in zip(paper, lightly, strict=True):
        torch.testing.assert_close(a, 4 * b, rtol=1e-4, atol=1e-7)


def test_an_unknown_loss_form_is_refused() -> None:
    with pytest.raises(UserError, match="loss_form"):
        build_method("byol", "method_kwargs.loss_form=lightly")
