"""The free SyRe step `decay_toward_anchor` against its formula, on a bucket of tensors."""

from __future__ import annotations

import pytest
import torch

from ssl_syre.syre import decay_toward_anchor


@pytest.mark.parametrize("with_anchor", [True, False])
@pytest.mark.parametrize("with_d", [True, False])
@pytest.mark.parametrize("mode", ["decoupled", "coupled"])
def test_one_step_is_the_formula(mode: str, with_d: bool, with_anchor: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (5,), (2, 2, 3)]
    params = [torch.randn(s, generator=generator) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator)
    anchors = [torch.randn(s, generator=generator) for s in shapes]
    scales = [1 + 0.1 * torch.rand(s, generator=generator) for s in shapes]
    lr, gamma = 0.3, 0.5
    expected = []
    for p, a, d in zip(params, anchors, scales, strict=True):
        displacement = (p - a if with_anchor else p) * (d if with_d else 1.0)
        if mode == "decoupled":
            expected.append((p - lr * gamma * displacement, p.grad.clone()))
        else:
            expected.append((p.clone(), p.grad + gamma * displacement))

    decay_toward_anchor(
        params, anchors if with_anchor else [], scales if with_d else None, lr, gamma, mode
    )
    for p, (weight, grad) in zip(params, expected, strict=True):
        torch.testing.assert_close(p, weight)
        torch.testing.assert_close(p.grad, grad)


def test_zero_rate_leaves_the_weights() -> None:
    params = [torch.ones(3)]
    decay_toward_anchor(params, [torch.zeros(3)], None, lr=0.0, weight_decay=1.0, mode="decoupled")
    assert torch.equal(params[0], torch.ones(3))
