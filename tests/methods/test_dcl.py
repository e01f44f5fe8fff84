"""DCL/DCLW: the decoupled loss and DCLW's weighting as the paper writes them, the weight's
stop-gradient, the loss choice, and a falling loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssl_syre.errors import UserError
from tests.conftest import build_method, losses_on_fixed_views

pytestmark = pytest.mark.usefixtures("one_thread")


def views(model, count: int = 8, seed: int = 0) -> list[torch.Tensor]:
    size = model.info.image_size
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(count, 1, size, size, generator=generator) for _ in range(2)]


def paper_loss(
    z1: torch.Tensor, z2: torch.Tensor, tau: float, sigma: float | None, detach_weight: bool = True
) -> torch.Tensor:
    """Eq. 6 of the DCL paper, symmetrized over the views: −w_i⟨z_i, z_i'⟩/τ +
    log Σ_{j≠i, both views} exp(⟨z_i, z_j⟩/τ), with w_i = 1 (DCL) or, for DCLW,
    w_i = 2 − exp(⟨z_i, z_i'⟩/σ) / E_k[exp(⟨z_k, z_k'⟩/σ)]."""
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    n = len(z1)

    def one_side(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        positive = (a * b).sum(1)
        if sigma is None:
            weight = torch.ones(n)
        else:
            kernel = torch.exp(positive / sigma)
            weight = 2 - kernel / kernel.mean()
            weight = weight.detach() if detach_weight else weight
        total = []
        for i in range(n):
            others = [j for j in range(n) if j != i]
            negatives = torch.cat([a[i] @ a[others].T, a[i] @ b[others].T]) / tau
            total.append(-weight[i] * positive[i] / tau + torch.logsumexp(negatives, dim=0))
        return torch.stack(total).mean()

    return 0.5 * (one_side(z1, z2) + one_side(z2, z1))


@pytest.mark.parametrize("loss", ["dcl", "dclw"])
def test_loss_is_the_papers_decoupled_loss(loss: str) -> None:
    model, _ = build_method("dcl", f"method_kwargs.loss={loss}", "method_kwargs.sigma=0.3")
    generator = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(2, 6, 16, generator=generator)
    sigma = 0.3 if loss == "dclw" else None
    expected = paper_loss(z1, z2, model.kwargs.temperature, sigma)
    torch.testing.assert_close(model.criterion(z1, z2), expected, rtol=1e-5, atol=1e-5)
    # Decoupled: unlike NT-Xent, no positive pair in the denominator.
    from lightly.loss import NTXentLoss

    nt_xent = NTXentLoss(temperature=model.kwargs.temperature)(z1, z2)
    assert not torch.allclose(model.criterion(z1, z2), nt_xent, atol=1e-3)


def test_dclw_weights_hard_positives_above_easy_ones() -> None:
    """DCLW differs from DCL only by the weights; with one pair made nearly identical (an easy
    positive) its weight falls below 1 and the others rise above it."""
    dcl, _ = build_method("dcl", "method_kwargs.loss=dcl")
    dclw, _ = build_method("dcl", "method_kwargs.loss=dclw")
    from lightly.loss.dcl_loss import negative_mises_fisher_weights

    generator = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(2, 6, 16, generator=generator)
    z2[0] = z1[0]
    weights = negative_mises_fisher_weights(F.normalize(z1, dim=1), F.normalize(z2, dim=1), 0.5)
    assert weights[0] < 1 and (weights[1:] > 1).all()
    torch.testing.assert_close(weights.mean(), torch.tensor(1.0))  # 2 − E[kernel]/E[kernel]
    assert not torch.allclose(dcl.criterion(z1, z2), dclw.criterion(z1, z2))


def test_dclw_weight_is_a_constant_in_the_gradient() -> None:
    """The weight carries no gradient (lightly and the authors' code detach it): the gradient
    is the paper loss's with a detached weight, and differs from the one without."""
    model, _ = build_method("dcl", "method_kwargs.loss=dclw")
    generator = torch.Generator().manual_seed(2)
    base = torch.randn(2, 6, 16, generator=generator)

    def grad_of(fn) -> torch.Tensor:
        z = base.clone().requires_grad_()
        fn(z[0], z[1]).backward()
        return z.grad

    ours = grad_of(model.criterion)
    tau = model.kwargs.temperature
    detached = grad_of(lambda a, b: paper_loss(a, b, tau, 0.5))
    attached = grad_of(lambda a, b: paper_loss(a, b, tau, 0.5, detach_weight=False))
    torch.testing.assert_close(ours, detached, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ours, attached, atol=1e-4)


def test_an_unknown_loss_is_refused_with_the_choices() -> None:
    with pytest.raises(UserError, match="method_kwargs.loss 'dclv'.*dcl, dclw"):
        build_method("dcl", "method_kwargs.loss=dclv")


@pytest.mark.parametrize("loss", ["dcl", "dclw"])
def test_loss_falls_on_a_fixed_batch(loss: str) -> None:
    torch.manual_seed(0)
    model, _ = build_method("dcl", f"method_kwargs.loss={loss}")
    losses = losses_on_fixed_views(model, views(model, count=16), steps=8, lr=0.05)
    assert losses[-1] < losses[0] - 0.1, losses
