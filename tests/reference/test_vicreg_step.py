"""VICReg's training step against the paper's Algorithm 1, written out in plain torch.

- [0] VICReg, Bardes, Ponce & LeCun 2022, https://arxiv.org/abs/2105.04906, Algorithm 1 and
  eq. 6 (ℓ = λ·s(Z, Z') + μ·[v(Z) + v(Z')] + ν·[c(Z) + c(Z')]); Sec. 4.2 (expander: three
  linear layers, BN and ReLU after the first two). solo-learn (solo/losses/vicreg.py) computes
  the same sum; the authors' repository and lightly halve the variance term.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from tests.reference.harness import (
    ARMS,
    LARS_ARMS,
    backbone_copy,
    build,
    compare,
    optimizer_overrides,
)
from tests.reference.plain import PaperMethod, mlp

pytestmark = pytest.mark.usefixtures("one_thread")

LAMBDA, MU, NU = 25.0, 25.0, 1.0  # the paper's coefficients


def off_diagonal(x: Tensor) -> Tensor:
    return x[~torch.eye(len(x), dtype=torch.bool)]


class PaperVICReg(PaperMethod):
    """f: encoder + expander; invariance, variance and covariance terms on the embeddings."""

    def __init__(self, encoder: torch.nn.Module, features: int, hidden: int, out: int) -> None:
        super().__init__()
        self.online["f"] = encoder
        self.online["expander"] = mlp(
            (features, hidden, "bn", "relu"), (hidden, hidden, "bn", "relu"), (hidden, out, "", "")
        )

    def loss(self, views: list[Tensor], epoch: int) -> Tensor:
        z_a, z_b = (self.online["expander"](self.online["f"](x)) for x in views)
        n, d = z_a.shape
        sim_loss = F.mse_loss(z_a, z_b)
        std_z_a = torch.sqrt(z_a.var(dim=0) + 1e-04)
        std_z_b = torch.sqrt(z_b.var(dim=0) + 1e-04)
        std_loss = torch.mean(F.relu(1 - std_z_a)) + torch.mean(F.relu(1 - std_z_b))
        z_a = z_a - z_a.mean(dim=0)
        z_b = z_b - z_b.mean(dim=0)
        cov_z_a = (z_a.T @ z_a) / (n - 1)
        cov_z_b = (z_b.T @ z_b) / (n - 1)
        cov_loss = off_diagonal(cov_z_a).pow(2).sum() / d + off_diagonal(cov_z_b).pow(2).sum() / d
        return LAMBDA * sim_loss + MU * std_loss + NU * cov_loss


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="the variance term is μ·(v(Z) + v(Z'))/2 (lightly's VICRegLoss, as the authors' "
    "repository), half of the paper's Algorithm 1 and eq. 6 μ·[v(Z) + v(Z')] and of "
    "solo-learn's: at μ = 25 ours weighs the variance hinge as μ = 12.5 would there; "
    "not among issue 30's defects",
)
@pytest.mark.parametrize(("optimizer", "syre"), ARMS + LARS_ARMS)
def test_step_is_the_papers(optimizer: str, syre: bool) -> None:
    model = build(
        "vicreg",
        optimizer,
        syre,
        f"method_kwargs.lambda_param={LAMBDA}",
        f"method_kwargs.mu_param={MU}",
        f"method_kwargs.nu_param={NU}",
        *optimizer_overrides(optimizer),
    )
    k = model.kwargs
    reference = PaperVICReg(
        backbone_copy(model), model.feature_dim, k.projection_hidden_dim, k.projection_output_dim
    )
    compare(model, reference, {"online.f": "backbone", "online.expander": "projection_head"})
