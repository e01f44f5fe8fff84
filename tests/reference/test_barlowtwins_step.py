"""Barlow Twins' training step against the paper's Algorithm 1, written out in plain torch.

- [0] Barlow Twins, Zbontar et al. 2021, https://arxiv.org/abs/2103.03230, Algorithm 1 and
  Sec. 2 (projector: three linear layers, BN and ReLU after the first two)
- [1] the authors' code, facebookresearch/barlowtwins main.py: the batch normalization of z is
  BatchNorm1d(affine=False), i.e. the biased std with ε = 1e-5, where Algorithm 1 writes
  z.std(0) (unbiased); the two differ by a factor N/(N − 1) in C. The reference takes the
  authors' code's form, which solo-learn and lightly also use.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from ssl_syre.methods import SSLMethod
from tests.reference.harness import (
    ARMS,
    LARS_ARMS,
    backbone_copy,
    build,
    compare,
    fixed_views,
    optimizer_overrides,
    run_ours,
)
from tests.reference.plain import PaperMethod, decayed, mlp

pytestmark = pytest.mark.usefixtures("one_thread")

LAMBDA = 5e-3  # the paper's λ


class PaperBarlowTwins(PaperMethod):
    """f: encoder + projector; the cross-correlation C of the batch-normalized embeddings is
    pushed to the identity, its off-diagonal terms weighted by λ."""

    def __init__(self, encoder: torch.nn.Module, features: int, hidden: int, out: int) -> None:
        super().__init__()
        self.online["f"] = encoder
        self.online["projector"] = mlp(
            (features, hidden, "bn", "relu"), (hidden, hidden, "bn", "relu"), (hidden, out, "", "")
        )

    def loss(self, views: list[Tensor], epoch: int) -> Tensor:
        z_a, z_b = (self.online["projector"](self.online["f"](y)) for y in views)
        n = z_a.shape[0]

        def normalize(z: Tensor) -> Tensor:  # [1]: BatchNorm1d(affine=False) in training mode
            return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)

        c = normalize(z_a).T @ normalize(z_b) / n
        c_diff = (c - torch.eye(c.shape[0], dtype=c.dtype)).pow(2)
        weights = torch.full_like(c_diff, LAMBDA).fill_diagonal_(1.0)  # off_diagonal(c_diff) *= λ
        return (c_diff * weights).sum()


PARTS = {"online.f": "backbone", "online.projector": "projection_head"}


def reference_for(model: SSLMethod) -> PaperBarlowTwins:
    k = model.kwargs
    return PaperBarlowTwins(
        backbone_copy(model), model.feature_dim, k.projection_hidden_dim, k.projection_output_dim
    )


@pytest.mark.parametrize(("optimizer", "syre"), ARMS + LARS_ARMS)
def test_step_is_the_papers(optimizer: str, syre: bool) -> None:
    model = build(
        "barlowtwins",
        optimizer,
        syre,
        f"method_kwargs.lambda_param={LAMBDA}",
        *optimizer_overrides(optimizer),
    )
    compare(model, reference_for(model), PARTS)


@pytest.mark.parametrize("syre", [False, True])
def test_lars_leaves_a_weight_whose_gradient_is_zero_where_it_is(syre: bool) -> None:
    """A documented deviation (docs/syre.md, LARS): lightly's LARS, and SyReLARS after it, take
    a tensor whose gradient is exactly 0 out of both the trust ratio and the decay, so it does
    not move; the LARS paper's λ = η‖w‖/(‖g‖ + β‖w‖) is η/β there and its decay moves w by
    lr·η·w (toward θ0 under SyRe). timm's zero-initialized last BN of each residual branch
    gives the branch's convs such a gradient at the first step."""
    model = build("barlowtwins", "lars", syre, f"method_kwargs.lambda_param={LAMBDA}")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    (record,) = run_ours(model, fixed_views(model, steps=1))
    zero = [
        name
        for name, grad in record.grads.items()
        if decayed(name, grad) and torch.count_nonzero(grad) == 0
    ]
    assert zero, "no decayed weight has a zero gradient: the case is not exercised"
    for name in zero:
        assert torch.equal(record.state[name], before[name]), name
    moved = [n for n, g in record.grads.items() if decayed(n, g) and n not in zero]
    assert all(not torch.equal(record.state[n], before[n]) for n in moved)
    # The paper's LARS moves those weights: the step is not the reference's.
    model = build("barlowtwins", "lars", syre, f"method_kwargs.lambda_param={LAMBDA}")
    with pytest.raises(AssertionError):
        compare(model, reference_for(model), PARTS)
