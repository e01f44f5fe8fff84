"""VICReg's training step against the paper's Algorithm 1, written out in plain torch.

- [0] VICReg, Bardes, Ponce & LeCun 2022, https://arxiv.org/abs/2105.04906, Algorithm 1 and
  eq. 6 (ℓ = λ·s(Z, Z') + μ·[v(Z) + v(Z')] + ν·[c(Z) + c(Z')]); Sec. 4.2 (expander: three
  linear layers, BN and ReLU after the first two). solo-learn (solo/losses/vicreg.py) computes
  the same sum.
- [1] The authors' repository, facebookresearch/vicreg main_vicreg.py (VICReg.forward): the
  same step with each view's variance hinge divided by 2, as lightly's VICRegLoss.

Our `method_kwargs.variance_form` picks between the two: "paper" is checked against [0],
"lightly" against [1].
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

    def __init__(
        self, encoder: torch.nn.Module, features: int, hidden: int, out: int, halve: bool
    ) -> None:
        super().__init__()
        self.variance_share = 0.5 if halve else 1.0  # [1] divides each view's hinge by 2
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
        share = self.variance_share
        std_loss = torch.mean(F.relu(1 - std_z_a)) * share + torch.mean(F.relu(1 - std_z_b)) * share
        z_a = z_a - z_a.mean(dim=0)
        z_b = z_b - z_b.mean(dim=0)
        cov_z_a = (z_a.T @ z_a) / (n - 1)
        cov_z_b = (z_b.T @ z_b) / (n - 1)
        cov_loss = off_diagonal(cov_z_a).pow(2).sum() / d + off_diagonal(cov_z_b).pow(2).sum() / d
        return LAMBDA * sim_loss + MU * std_loss + NU * cov_loss


@pytest.mark.parametrize("form", ["paper", "lightly"])
@pytest.mark.parametrize(("optimizer", "syre"), ARMS + LARS_ARMS)
def test_step_is_the_references(form: str, optimizer: str, syre: bool) -> None:
    """variance_form=paper is Algorithm 1 [0]; variance_form=lightly is the authors' code [1]."""
    model = build(
        "vicreg",
        optimizer,
        syre,
        f"method_kwargs.lambda_param={LAMBDA}",
        f"method_kwargs.mu_param={MU}",
        f"method_kwargs.nu_param={NU}",
        f"method_kwargs.variance_form={form}",
        *optimizer_overrides(optimizer),
    )
    k = model.kwargs
    reference = PaperVICReg(
        backbone_copy(model),
        model.feature_dim,
        k.projection_hidden_dim,
        k.projection_output_dim,
        halve=form == "lightly",
    )
    compare(model, reference, {"online.f": "backbone", "online.expander": "projection_head"})
