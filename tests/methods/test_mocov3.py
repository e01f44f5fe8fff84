"""MoCo v3: heads per backbone, the keys' stop-gradient, the frozen patch projection, and a
falling loss (the step against the paper's Algorithm 1: tests/reference/test_mocov3_step.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ssl_syre.errors import UserError
from ssl_syre.methods.mocov3 import contrastive_loss
from tests.conftest import build_method, losses_on_fixed_views

pytestmark = pytest.mark.usefixtures("one_thread")

VIT = ["backbone.name=test_vit", "data.image_size=32"]


def views(model, count: int = 8, seed: int = 0) -> list[torch.Tensor]:
    size = model.info.image_size
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(count, 1, size, size, generator=generator) for _ in range(2)]


def linears(module: nn.Module) -> int:
    return sum(isinstance(m, nn.Linear) for m in module.modules())


def test_heads_follow_the_papers_depth_per_backbone() -> None:
    """The authors' code: a 2-layer projector after a ResNet, 3 after a ViT; the predictor's
    output has BatchNorm after a ViT only."""
    resnet, _ = build_method("mocov3")
    assert linears(resnet.projection_head) == 2 and linears(resnet.prediction_head) == 2
    assert not isinstance(list(resnet.prediction_head.modules())[-1], nn.BatchNorm1d)
    vit, _ = build_method("mocov3", *VIT)
    assert linears(vit.projection_head) == 3
    assert isinstance(list(vit.prediction_head.modules())[-1], nn.BatchNorm1d)
    assert set(vit.trainable_parts()) == {"backbone", "projection_head", "prediction_head"}


def test_loss_is_2tau_times_cross_entropy_against_the_batch_keys() -> None:
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 6, 16, generator=generator)
    tau = 0.2
    logits = nn.functional.normalize(q, dim=1) @ nn.functional.normalize(k, dim=1).T / tau
    expected = 2 * tau * nn.functional.cross_entropy(logits, torch.arange(6))
    torch.testing.assert_close(contrastive_loss(q, k, tau), expected)


def test_stop_gradient_keeps_the_key_branch_out_of_the_gradient() -> None:
    """With the momentum encoder sharing the online weights (momentum 1: the EMA leaves them
    be), the gradient equals the one with the keys as constants; without the stop-gradient
    it does not, so the comparison can fail."""
    model, _ = build_method("mocov3", "method_kwargs.momentum_start=1.0")
    model.backbone_momentum, model.projection_head_momentum = model.backbone, model.projection_head
    x0, x1 = views(model)
    reference = copy.deepcopy(model)

    def grads(net: nn.Module) -> list[torch.Tensor]:
        return [p.grad.clone() for p in net.backbone.parameters() if p.grad is not None]

    model.training_loss([x0, x1]).backward()

    def loss_with(detach: bool) -> torch.Tensor:
        net = reference
        q0, q1 = (net.prediction_head(net.projection_head(net.backbone(x))) for x in (x0, x1))
        k0, k1 = (net.projection_head(net.backbone(x)) for x in (x0, x1))
        if detach:
            k0, k1 = k0.detach(), k1.detach()
        tau = net.kwargs.temperature
        return contrastive_loss(q0, k1, tau) + contrastive_loss(q1, k0, tau)

    loss_with(detach=True).backward()
    detached = grads(reference)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads(model), detached, strict=True))
    reference.zero_grad()
    loss_with(detach=False).backward()
    assert not all(
        torch.allclose(a, b, atol=1e-6) for a, b in zip(grads(reference), detached, strict=True)
    )


def test_frozen_patch_projection_takes_no_step_and_no_anchor() -> None:
    model, _ = build_method(
        "mocov3",
        *VIT,
        "method_kwargs.freeze_patch_embed=true",
        "optimizer.name=adamw",
        "optimizer.scheduler=constant",
    )
    proj = model.backbone.patch_embed.proj
    assert not any(p.requires_grad for p in proj.parameters())
    assert not any("patch_embed" in name for name in model.syre.covered_names)
    assert any(name.startswith("backbone.blocks") for name in model.syre.covered_names)
    optimizer = model.configure_optimizers()
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not held & {id(p) for p in proj.parameters()}
    before = [p.clone() for p in proj.parameters()]
    model.training_loss(views(model, count=4)).backward()
    optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, proj.parameters(), strict=True))
    unfrozen, _ = build_method("mocov3", *VIT)
    assert any("patch_embed" in name for name in unfrozen.syre.covered_names)


def test_frozen_patch_projection_needs_a_vit() -> None:
    with pytest.raises(UserError, match="freeze_patch_embed needs a ViT"):
        build_method("mocov3", "method_kwargs.freeze_patch_embed=true")


@pytest.mark.parametrize("backbone", [[], VIT])
def test_loss_falls_on_a_fixed_batch(backbone: list[str]) -> None:
    torch.manual_seed(0)
    model, _ = build_method("mocov3", *backbone)
    losses = losses_on_fixed_views(model, views(model, count=16), steps=8, lr=0.05)
    assert losses[-1] < losses[0] - 0.5, losses
