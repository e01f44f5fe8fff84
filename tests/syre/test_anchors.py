"""Anchor drawing: biases and norm weights are anchored around their values, not around 0."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ssl_syre.syre import SyRe
from ssl_syre.syre.anchors import AnchorSpec, draw_anchor


def bn_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 256, 3), nn.BatchNorm2d(256), nn.Linear(64, 512))


def test_batchnorm_scales_are_anchored_around_one_with_include_1d() -> None:
    """σ0 = 1 used to give BatchNorm scales (initialized at 1) anchors around 0, half below 0."""
    model = bn_net()
    anchors = SyRe(model, sigma0=1.0, include_1d=True).anchors
    scales = anchors["1.weight"]
    assert scales.mean().item() == pytest.approx(1.0, abs=0.2)
    assert (scales < 0).float().mean().item() < 0.25  # N(1, 1): 16% below 0, not 50%
    assert anchors["1.bias"].mean().item() == pytest.approx(0.0, abs=0.2)  # BN shift starts at 0
    # The noise is the draw a 1-D tensor always had; only its center moved to the value.
    for name in ("1.weight", "1.bias", "0.bias", "2.bias"):
        param = dict(model.named_parameters())[name]
        noise = draw_anchor(AnchorSpec(sigma0=1.0, include_1d=True), name, torch.zeros_like(param))
        torch.testing.assert_close(anchors[name], param.detach() + noise)
    # ≥2-D weights keep anchors around 0, whatever their init.
    assert anchors["0.weight"].mean().abs().item() < 0.01


def test_the_decay_pulls_batchnorm_scales_toward_one() -> None:
    """With a zero loss, SyRe moves the BN scales to their anchors: near 1, none below 0."""
    model = bn_net()
    syre = SyRe(model, weight_decay=1.0, sigma0=0.1, include_1d=True)
    with torch.no_grad():
        model[1].weight.fill_(0.3)  # away from the anchors, toward 0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    syre.attach(optimizer)
    for _ in range(200):
        optimizer.zero_grad()
        (0.0 * sum(p.sum() for p in model.parameters())).backward()
        optimizer.step()
    scales = model[1].weight.detach()
    torch.testing.assert_close(scales, syre.anchors["1.weight"], atol=1e-6, rtol=0)
    assert scales.mean().item() == pytest.approx(1.0, abs=0.05)
    assert scales.min().item() > 0.5


def test_zero_sigma0_anchors_everything_at_zero() -> None:
    """σ0 = 0 stays the off arm: plain decay toward 0 for every covered tensor, 1-D included."""
    anchors = SyRe(bn_net(), sigma0=0.0, include_1d=True).anchors
    assert all(torch.equal(a, torch.zeros_like(a)) for a in anchors.values())
