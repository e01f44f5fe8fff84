"""ssl_syre.methods.losses: the sync-free NT-Xent equals lightly's, value and gradient."""

from __future__ import annotations

import pytest
import torch
from lightly.loss import NTXentLoss as LightlyNTXentLoss

from ssl_syre.methods.losses import NTXentLoss


@pytest.mark.parametrize(
    ("batch", "dim", "temperature"), [(2, 3, 0.5), (16, 8, 0.2), (64, 32, 0.1)]
)
def test_ntxent_equals_lightly_in_value_and_gradient(batch: int, dim: int, temperature: float):
    generator = torch.Generator().manual_seed(batch)
    z0 = torch.randn(batch, dim, generator=generator, dtype=torch.float64)
    z1 = z0 + 0.3 * torch.randn(batch, dim, generator=generator, dtype=torch.float64)
    grads, losses = [], []
    for loss_fn in (NTXentLoss(temperature), LightlyNTXentLoss(temperature)):
        a, b = z0.clone().requires_grad_(), z1.clone().requires_grad_()
        loss = loss_fn(a, b)
        loss.backward()
        losses.append(loss)
        grads.append((a.grad, b.grad))
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=1e-6)
    for ours, theirs in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    # float32 too, as training runs it: the same operations, so the same bits
    ours = NTXentLoss(temperature)(z0.float(), z1.float())
    theirs = LightlyNTXentLoss(temperature)(z0.float(), z1.float())
    assert torch.equal(ours, theirs)


def test_ntxent_needs_no_host_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    z0, z1 = torch.randn(8, 4), torch.randn(8, 4)
    expected = LightlyNTXentLoss(0.5)(z0, z1)

    def refuse(*args, **kwargs):
        raise AssertionError("boolean indexing or a host read in the loss")

    for name in ("nonzero", "item", "__bool__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    monkeypatch.setattr(torch, "nonzero", refuse)
    monkeypatch.setattr(torch.Tensor, "__getitem__", refuse)  # lightly's logits[~mask]
    loss = NTXentLoss(0.5)(z0, z1)
    monkeypatch.undo()
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-6)


def test_memory_bank_keeps_lightlys_path() -> None:
    z0, z1 = torch.randn(8, 4), torch.randn(8, 4)
    values = []
    for loss_fn in (NTXentLoss, LightlyNTXentLoss):
        torch.manual_seed(0)  # the bank starts random
        values.append(loss_fn(0.5, memory_bank_size=(16, 4))(z0, z1))
    torch.testing.assert_close(values[0], values[1], rtol=0, atol=0)
