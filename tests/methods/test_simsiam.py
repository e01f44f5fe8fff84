"""SimSiam's projector depth: the paper's and lightly's 3 layers, or the CIFAR-10 model's 2."""

from __future__ import annotations

import pytest
import torch
from lightly.models.modules import SimSiamProjectionHead
from torch import nn

from tests.conftest import build_method

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("layers", [2, 3, 4])
def test_projection_layers_sets_the_projectors_depth(layers: int) -> None:
    """Linear-BN-ReLU blocks, then Linear and a BatchNorm without affine parameters: 3 is
    lightly's SimSiamProjectionHead, 2 the paper's CIFAR-10 projector (lightly's benchmark)."""
    model, _ = build_method("simsiam", f"method_kwargs.projection_layers={layers}")
    head = model.projection_head
    assert isinstance(head, SimSiamProjectionHead) == (layers == 3)
    kinds = [type(m) for m in head.layers]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * (layers - 1) + [
        nn.Linear,
        nn.BatchNorm1d,
    ]
    norms = [m for m in head.layers if isinstance(m, nn.BatchNorm1d)]
    assert [n.affine for n in norms] == [True] * (layers - 1) + [False]
    linears = [m for m in head.layers if isinstance(m, nn.Linear)]
    assert linears[0].in_features == model.feature_dim and linears[-1].out_features == 16
    assert head(torch.randn(4, model.feature_dim)).shape == (4, 16)


def test_a_projector_of_one_layer_is_refused() -> None:
    from ssl_syre.errors import UserError

    with pytest.raises(UserError, match="projection_layers"):
        build_method("simsiam", "method_kwargs.projection_layers=1")
