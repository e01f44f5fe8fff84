"""BYOL's training step against the paper's update, written out in plain torch.

- [0] BYOL, Grill et al. 2020, https://arxiv.org/abs/2006.07733, Sec. 3.1 (eq. 2: the loss
  2 − 2·cos per pair, symmetrized as L + L̃) and Sec. 3.2 (τ's cosine schedule); Appendix A
  (projector and predictor: Linear, BN, ReLU, Linear)
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from tests.reference.harness import (
    ARMS,
    assert_ema_schedule,
    backbone_copy,
    build,
    compare,
    fixed_views,
    run_ours,
)
from tests.reference.plain import PaperMethod, byol_cosine, ema_, mlp

pytestmark = pytest.mark.usefixtures("one_thread")

MOMENTUM = 0.99  # constant τ for the step test (lightly's CIFAR-10 run); the schedule below


class PaperBYOL(PaperMethod):
    """Online f_θ, g_θ, q_θ; target f_ξ, g_ξ, updated ξ ← τξ + (1 − τ)θ after each step."""

    def __init__(
        self, encoder: torch.nn.Module, features: int, hidden: int, out: int, predictor: int
    ) -> None:
        super().__init__()
        self.online["f"] = encoder
        self.online["g"] = mlp((features, hidden, "bn", "relu"), (hidden, out, "", ""))
        self.online["q"] = mlp((out, predictor, "bn", "relu"), (predictor, out, "", ""))
        self.target["f"] = copy.deepcopy(self.online["f"])
        self.target["g"] = copy.deepcopy(self.online["g"])
        for p in self.target.parameters():
            p.requires_grad_(False)

    def loss(self, views: list[Tensor], epoch: int) -> Tensor:
        v, v_prime = views
        online = [self.online["q"](self.online["g"](self.online["f"](x))) for x in views]
        with torch.no_grad():  # sg(z'_ξ)
            target = [self.target["g"](self.target["f"](x)) for x in (v, v_prime)]

        def pair(q: Tensor, z: Tensor) -> Tensor:  # ‖q̄ − z̄'‖² = 2 − 2·cos, batch mean
            return (2 - 2 * F.cosine_similarity(q, z, dim=1)).mean()

        return pair(online[0], target[1]) + pair(online[1], target[0])  # L + L̃

    def after_update(self, epoch: int) -> None:
        for part in ("f", "g"):
            ema_(self.target[part], self.online[part], MOMENTUM)


def byol(optimizer: str, syre: bool, *overrides: str):
    return build(
        "byol",
        optimizer,
        syre,
        "method_kwargs.prediction_hidden_dim=24",
        f"method_kwargs.momentum_start={MOMENTUM}",
        f"method_kwargs.momentum_end={MOMENTUM}",
        *overrides,
    )


@pytest.mark.parametrize(("optimizer", "syre"), ARMS)
def test_step_is_the_papers(optimizer: str, syre: bool) -> None:
    model = byol(optimizer, syre)
    k = model.kwargs
    reference = PaperBYOL(
        backbone_copy(model),
        model.feature_dim,
        k.projection_hidden_dim,
        k.projection_output_dim,
        k.prediction_hidden_dim,
    )
    parts = {
        "online.f": "backbone",
        "online.g": "projection_head",
        "online.q": "prediction_head",
        "target.f": "backbone_momentum",
        "target.g": "projection_head_momentum",
    }
    compare(model, reference, parts)


def lightly_cosine(step: int, total: int, base: float, end: float = 1.0) -> float:
    """The momentum our EMA after update k uses (docs/methods.md, "Momentum schedule"):
    lightly's cosine_schedule(k + 1, K), computed at the start of step k + 1, over K - 1
    intervals; written out here from its definition, not called."""
    return end - (end - base) * (math.cos(math.pi * (step + 1) / (total - 1)) + 1) / 2


def test_target_momentum_follows_lightlys_cosine_one_step_ahead_of_the_papers() -> None:
    """A documented deviation: the target after update k moves with lightly's
    cosine_schedule(k + 1, K) (lightly's benchmarks: update at the start of each step), where
    the paper has τ_k = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2. Over a run of K = 3 steps from
    τ_base = 0.9 the two differ by 0.05 at the first update, far beyond the tolerance, so the
    schedule checked here is ours and not the paper's."""
    model = byol("sgd", False, "method_kwargs.momentum_start=0.9", "method_kwargs.momentum_end=1.0")
    records = run_ours(model, fixed_views(model), total_steps=3)
    parts = ("backbone", "projection_head")
    assert_ema_schedule(records, parts, lambda k: lightly_cosine(k, 3, 0.9))
    with pytest.raises(AssertionError, match="EMA after update 0"):
        assert_ema_schedule(records, parts, lambda k: byol_cosine(k, 3, 0.9))


@pytest.mark.parametrize("total", [10, 1000, 100_000])
def test_the_shift_from_the_papers_schedule_is_within_one_steps_change(total: int) -> None:
    """The gap to the paper's τ_k is at most one step's change of the cosine,
    (1 − τ_base)·π/(K − 1), and shrinks as 1/K: below 1e-6 in τ over a 200-epoch CIFAR-10
    run at batch 512 (K ≈ 19,600) from the paper's τ_base = 0.996. Ours makes K − 1 updates
    (the one after the last step would serve no further loss)."""
    base = 0.99
    gaps = [
        abs(lightly_cosine(k, total, base) - byol_cosine(k, total, base)) for k in range(total - 1)
    ]
    assert max(gaps) <= (1 - base) * math.pi / (total - 1)
    assert max(gaps) > 0.1 * (1 - base) / total  # a shift, not the same schedule
