"""SimSiam's training step against the paper's Algorithm 1, written out in plain torch.

- [0] SimSiam, Chen & He 2021, https://arxiv.org/abs/2011.10566, Algorithm 1 and Sec. 4
  (projection MLP: 3 layers, BN on each, the output BN without affine parameters as in the
  authors' code; prediction MLP: 2 layers, BN on the hidden one)
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from tests.reference.harness import ARMS, backbone_copy, build, compare
from tests.reference.plain import PaperMethod, mlp

pytestmark = pytest.mark.usefixtures("one_thread")


def D(p: Tensor, z: Tensor) -> Tensor:  # noqa: N802 (the paper's name)
    """Negative cosine similarity with the stop-gradient on z (Algorithm 1)."""
    z = z.detach()
    p, z = F.normalize(p, dim=1), F.normalize(z, dim=1)
    return -(p * z).sum(dim=1).mean()


class PaperSimSiam(PaperMethod):
    """f: encoder + projection MLP; h: prediction MLP; L = D(p1, z2)/2 + D(p2, z1)/2."""

    def __init__(
        self, encoder: torch.nn.Module, features: int, hidden: int, out: int, bottleneck: int
    ) -> None:
        super().__init__()
        self.online["f"] = encoder
        self.online["projector"] = mlp(
            (features, hidden, "bn", "relu"),
            (hidden, hidden, "bn", "relu"),
            (hidden, out, "bn-no-affine", ""),
        )
        self.online["h"] = mlp((out, bottleneck, "bn", "relu"), (bottleneck, out, "", ""))

    def loss(self, views: list[Tensor], epoch: int) -> Tensor:
        z1, z2 = (self.online["projector"](self.online["f"](x)) for x in views)
        p1, p2 = self.online["h"](z1), self.online["h"](z2)
        return D(p1, z2) / 2 + D(p2, z1) / 2


@pytest.mark.parametrize(("optimizer", "syre"), ARMS)
def test_step_is_the_papers(optimizer: str, syre: bool) -> None:
    model = build("simsiam", optimizer, syre, "method_kwargs.prediction_hidden_dim=8")
    k = model.kwargs
    reference = PaperSimSiam(
        backbone_copy(model),
        model.feature_dim,
        k.projection_hidden_dim,
        k.projection_output_dim,
        k.prediction_hidden_dim,
    )
    parts = {
        "online.f": "backbone",
        "online.projector": "projection_head",
        "online.h": "prediction_head",
    }
    compare(model, reference, parts)
