"""MoCo v3 against the paper's Algorithm 1, written from the paper, not from our code.

Chen, Xie & He, "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV
2021 (arXiv 2104.02057), Algorithm 1:

    for x in loader:
        x1, x2 = aug(x), aug(x)
        q1, q2 = f_q(x1), f_q(x2)          # f_q: backbone + proj mlp + pred mlp
        k1, k2 = f_k(x1), f_k(x2)          # f_k: momentum backbone + proj mlp
        loss = ctr(q1, k2) + ctr(q2, k1)   # symmetrized
        loss.backward()
        update(f_q)                        # optimizer update
        f_k = m*f_k + (1-m)*f_q            # momentum update (the predictor excluded)

    def ctr(q, k):
        logits = mm(q, k.t())              # q, k l2-normalized (the authors' code)
        labels = range(N)
        loss = CrossEntropyLoss(logits/tau, labels)
        return 2 * tau * loss

Our method updates f_k at the start of a step instead of the end of the previous one: the
same sequence of weights (its first update averages two equal copies).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import build_method

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS, LR, M = 3, 0.05, 0.9


def ctr(q: torch.Tensor, k: torch.Tensor, tau: float) -> torch.Tensor:
    logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).t()
    labels = torch.arange(len(q))
    return 2 * tau * F.cross_entropy(logits / tau, labels)


@pytest.mark.parametrize("backbone", [[], ["backbone.name=test_vit", "data.image_size=32"]])
def test_three_steps_match_algorithm_1(backbone: list[str]) -> None:
    torch.manual_seed(0)
    model, _ = build_method(
        "mocov3", *backbone, f"method_kwargs.momentum_start={M}", f"method_kwargs.momentum_end={M}"
    )
    model.double()  # float64: what is left is the algorithm, not float32 summation order
    tau = model.kwargs.temperature
    f_q = nn.Sequential(
        copy.deepcopy(model.backbone),
        copy.deepcopy(model.projection_head),
        copy.deepcopy(model.prediction_head),
    )
    f_k = copy.deepcopy(nn.Sequential(f_q[0], f_q[1]))
    for p in f_k.parameters():
        p.requires_grad = False
    reference_opt = torch.optim.SGD(f_q.parameters(), lr=LR, momentum=0.9)
    ours = [p for part in model.trainable_parts().values() for p in part.parameters()]
    our_opt = torch.optim.SGD(ours, lr=LR, momentum=0.9)

    size = model.info.image_size
    generator = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        x1, x2 = torch.randn(
            2, 8, model.info.in_chans, size, size, generator=generator, dtype=torch.float64
        )
        # Algorithm 1.
        reference_opt.zero_grad()
        q1, q2 = f_q(x1), f_q(x2)
        with torch.no_grad():
            k1, k2 = f_k(x1), f_k(x2)
        loss = ctr(q1, k2, tau) + ctr(q2, k1, tau)
        loss.backward()
        reference_grads = [p.grad.clone() for p in f_q.parameters()]
        reference_opt.step()
        with torch.no_grad():
            online = list(f_q[0].parameters()) + list(f_q[1].parameters())
            for target, source in zip(f_k.parameters(), online, strict=True):
                target.mul_(M).add_((1 - M) * source)
        # Ours.
        our_opt.zero_grad()
        our_loss = model.training_loss([x1, x2])
        our_loss.backward()
        torch.testing.assert_close(our_loss, loss, rtol=1e-5, atol=1e-5)
        for ref_grad, param in zip(reference_grads, ours, strict=True):
            torch.testing.assert_close(param.grad, ref_grad, rtol=1e-5, atol=1e-5)
        our_opt.step()
