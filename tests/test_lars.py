"""SyReLARS: LARS's trust ratio on the weights SyRe covers, with SyRe's pull inside it."""

from __future__ import annotations

import copy

import pytest
import torch
from lightly.utils.lars import LARS
from torch import nn

from ssl_syre.config import load_config
from ssl_syre.errors import UserError
from ssl_syre.lars import SyReLARS
from ssl_syre.syre import SyRe, syre_param_groups

GAMMA = 0.05  # strong, so that a missing or misplaced decay shows in the bits


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 3) -> None:
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        inputs = torch.randn(32, 6, generator=generator)
        targets = torch.randint(0, 3, (32,), generator=generator)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()


def syre_lars(model: nn.Module, sigma0: float, d_eps: float = 0.0) -> SyReLARS:
    syre = SyRe(model, weight_decay=GAMMA, sigma0=sigma0, d_eps=d_eps, mode="coupled")
    groups = syre_param_groups(model, syre, weight_decay=GAMMA)
    return SyReLARS(groups, syre=syre, lr=0.5, momentum=0.9)


def lightly_lars(model: nn.Module) -> LARS:
    """lightly's LARS with plain decay γ on the weights (timm's groups: none on biases)."""
    return LARS(syre_param_groups(model, None, weight_decay=GAMMA), lr=0.5, momentum=0.9)


def test_anchor_at_zero_is_lightly_lars_with_the_same_decay_bit_for_bit() -> None:
    ours, theirs = mlp(), mlp()
    train(ours, syre_lars(ours, sigma0=0.0))
    train(theirs, lightly_lars(theirs))
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b), name


def test_a_covered_weight_takes_a_lars_sized_step() -> None:
    """With an anchor the step keeps LARS's size; plain LARS over SyRe's groups does not."""
    start = mlp()

    def step_size(optimizer_for: object) -> float:
        model = copy.deepcopy(start)
        before = model[0].weight.detach().clone()
        train(model, optimizer_for(model), steps=1)
        return float((model[0].weight.detach() - before).norm())

    plain = step_size(lightly_lars)
    anchored = step_size(lambda model: syre_lars(model, sigma0=0.01, d_eps=0.05))

    def unscaled(model: nn.Module) -> LARS:  # the old combination: SyRe's groups, plain LARS
        syre = SyRe(model, weight_decay=GAMMA, sigma0=0.01, mode="coupled")
        optimizer = LARS(syre_param_groups(model, syre, GAMMA), lr=0.5, momentum=0.9)
        syre.attach(optimizer)
        return optimizer

    assert anchored == pytest.approx(plain, rel=0.05)
    # The comparison can fail: without the trust ratio the step is two orders larger here.
    assert step_size(unscaled) > 10 * plain


def test_decoupled_syre_is_refused() -> None:
    model = mlp()
    syre = SyRe(model, weight_decay=GAMMA, mode="decoupled")
    with pytest.raises(ValueError, match="coupled"):
        SyReLARS(syre_param_groups(model, syre, GAMMA), syre=syre, lr=0.1)
    with pytest.raises(UserError, match="syre.mode=coupled") as info:
        load_config(None, ["optimizer.name=lars", "syre.mode=decoupled"])
    assert "\n" not in str(info.value)
    assert load_config(None, ["optimizer.name=lars", "syre.mode=coupled"]).optimizer.name == "lars"
