"""SimCLR's training step against the paper's Algorithm 1 (NT-Xent), written out in plain torch.

- [0] SimCLR, Chen et al. 2020, https://arxiv.org/abs/2002.05709, Algorithm 1 and Sec. 2.1
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from tests.reference.harness import ARMS, backbone_copy, build, compare
from tests.reference.plain import PaperMethod, mlp

pytestmark = pytest.mark.usefixtures("one_thread")

TEMPERATURE = 0.5


class PaperSimCLR(PaperMethod):
    """f (the encoder) and g (the projection MLP, with BN as our recipe's head) trained on
    NT-Xent over the 2N augmented examples."""

    def __init__(self, encoder: torch.nn.Module, features: int, hidden: int, out: int) -> None:
        super().__init__()
        self.online["f"] = encoder
        self.online["g"] = mlp((features, hidden, "bn", "relu"), (hidden, out, "bn", ""))

    def loss(self, views: list[Tensor], epoch: int) -> Tensor:
        z_a, z_b = (self.online["g"](self.online["f"](x)) for x in views)
        n = z_a.shape[0]
        # z_{2k-1}, z_{2k}: the two views of image k, interleaved as in Algorithm 1.
        z = torch.stack([z_a, z_b], dim=1).reshape(2 * n, -1)
        z = z / z.norm(dim=1, keepdim=True)
        s = z @ z.T  # s_ij = cosine similarity
        exp = torch.exp(s / TEMPERATURE)
        denominator = exp.sum(dim=1) - exp.diagonal()  # Σ_k 1[k≠i] exp(s_ik/τ)
        partner = torch.arange(2 * n) ^ 1  # 2k-1 <-> 2k (0-based: 2k <-> 2k+1)
        ell = -torch.log(exp[torch.arange(2 * n), partner] / denominator)
        return ell.sum() / (2 * n)  # L = 1/(2N) Σ_k [ℓ(2k-1, 2k) + ℓ(2k, 2k-1)]


@pytest.mark.parametrize(("optimizer", "syre"), ARMS)
def test_step_is_the_papers(optimizer: str, syre: bool) -> None:
    model = build("simclr", optimizer, syre, f"method_kwargs.temperature={TEMPERATURE}")
    k = model.kwargs
    reference = PaperSimCLR(
        backbone_copy(model), model.feature_dim, k.projection_hidden_dim, k.projection_output_dim
    )
    compare(model, reference, {"online.f": "backbone", "online.g": "projection_head"})


def test_the_reference_loss_is_the_textbook_nt_xent() -> None:
    """The written-out Algorithm 1 against cross-entropy over the other 2N − 1 examples."""
    reference = PaperSimCLR(torch.nn.Identity(), 4, 8, 4).double()
    reference.online["g"] = torch.nn.Identity()
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(5, 4, generator=generator, dtype=torch.float64) for _ in range(2))
    z = F.normalize(torch.cat([a, b]), dim=1)
    logits = (z @ z.T / TEMPERATURE).fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(5, 10), torch.arange(5)])
    torch.testing.assert_close(reference.loss([a, b], 0), F.cross_entropy(logits, targets))
