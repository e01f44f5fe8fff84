"""MoCo v2: the queue fills with keys and its negatives enter the loss; keys carry no gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import build_method, losses_on_fixed_views

pytestmark = pytest.mark.usefixtures("one_thread")

# Plain BatchNorm: a key then does not depend on the random batch shuffle, so a key computed
# again is the one the step computed. Split BatchNorm: tests/methods/test_split_batchnorm.py.
PLAIN_BN = "method_kwargs.split_bn=1"


def views(model, count: int = 8, seed: int = 0) -> list[torch.Tensor]:
    size = model.info.image_size
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(count, 1, size, size, generator=generator) for _ in range(2)]


def test_queue_fills_with_both_views_keys() -> None:
    model, _ = build_method("mocov2", "method_kwargs.queue_size=64", PLAIN_BN)
    bank = model.criterion.memory_bank
    assert bank.bank.shape == (64, 16)
    x0, x1 = views(model)
    model.training_loss([x0, x1])  # the EMA step comes first, then the keys
    k0, k1 = (F.normalize(model.keys(x), dim=1) for x in (x0, x1))
    # Both views' keys enter after both terms are scored: view 1's (paired with the queries of
    # view 0), then view 0's.
    torch.testing.assert_close(bank.bank[:16], torch.cat([k1, k0]))
    assert int(bank.bank_ptr) == 16


def test_the_loss_is_cross_entropy_against_the_queued_negatives() -> None:
    """Both symmetric terms score against the queue as it stood before the step, as solo-learn's
    MoCo V2+ and the MoCo reference code do (a second term that saw the first term's keys would
    find the key of its own image among its negatives); a bypassed queue fails it too, and a
    different queue gives a different loss."""
    model, _ = build_method("mocov2", "method_kwargs.queue_size=32", PLAIN_BN)
    model.update_momentum_copies = lambda: model.kwargs.momentum_start  # keep the keys fixed
    bank = model.criterion.memory_bank
    x0, x1 = views(model)
    queue = F.normalize(bank.bank.clone(), dim=1)
    with torch.no_grad():
        q0, q1 = (F.normalize(model.projection_head(model.backbone(x)), dim=1) for x in (x0, x1))
        k0, k1 = (F.normalize(model.keys(x), dim=1) for x in (x0, x1))

    def expected(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ negatives.T], dim=1)
        logits = logits / model.kwargs.temperature
        return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))

    loss = model.training_loss([x0, x1])
    reference = 0.5 * (expected(q0, k1, queue) + expected(q1, k0, queue))
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-5)
    refilled = model.training_loss([x0, x1])  # same queries and keys, a queue of their keys
    assert not torch.allclose(loss, refilled)


def test_keys_gathered_from_every_process_enter_the_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under DDP the queue takes the keys of every process (the MoCo reference code's
    concat_all_gather), not this process's alone: a fake world of two processes."""
    from lightly.models import utils as lightly_utils
    from lightly.utils import dist as lightly_dist

    model, _ = build_method("mocov2", "method_kwargs.queue_size=64", PLAIN_BN)
    bank = model.criterion.memory_bank
    x0, x1 = views(model)
    with torch.no_grad():
        k0, k1 = (F.normalize(model.keys(x), dim=1) for x in (x0, x1))
    other = F.normalize(torch.randn(16, 16), dim=1)  # the other process's keys
    monkeypatch.setattr(lightly_dist, "world_size", lambda: 2)
    monkeypatch.setattr(lightly_utils, "concat_all_gather", lambda x: torch.cat([x, other]))
    model.update_momentum_copies = lambda: model.kwargs.momentum_start  # keep the keys fixed
    model.keys = lambda x: {id(x0): k0, id(x1): k1}[id(x)]  # no cross-process shuffle here
    model.training_loss([x0, x1])
    torch.testing.assert_close(bank.bank[:32], torch.cat([k1, k0, other]))
    assert int(bank.bank_ptr) == 32


def test_keys_carry_no_gradient_and_the_copies_stay_out_of_training() -> None:
    model, _ = build_method("mocov2")
    x0, x1 = (x.requires_grad_() for x in views(model))
    assert not model.keys(x0).requires_grad  # the stop-gradient on the key branch
    model.training_loss([x0, x1]).backward()
    for part in ("backbone_momentum", "projection_head_momentum"):
        assert all(p.grad is None for p in getattr(model, part).parameters()), part
        assert part not in model.trainable_parts()
    assert not any("momentum" in name for name in model.syre.covered_names)


def test_loss_falls_on_a_fixed_batch() -> None:
    # Seeded: the queue starts random and refills every step, so over 8 steps the loss falls
    # for most draws of init and queue, not all; the test must not depend on earlier tests.
    torch.manual_seed(0)
    model, _ = build_method("mocov2", "method_kwargs.queue_size=16", PLAIN_BN)
    fixed = views(model, count=16)
    losses = losses_on_fixed_views(model, fixed, steps=8, lr=0.1)
    # The first step scores against the random initial queue (an easy task); from the second
    # on, the queue holds this batch's own keys, and the loss must fall from there.
    assert losses[-1] < losses[1] - 0.1, losses
