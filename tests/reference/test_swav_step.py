"""SwAV against the paper's pseudo-code, written from the paper, not from our code.

Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments",
NeurIPS 2020 (arXiv 2006.09882), Algorithm 1:

    for x in loader:
        x_t, x_s = t(x), s(x)
        z = model(cat(x_t, x_s))            # embeddings: 2BxD (l2-normalized)
        scores = mm(z, C)                   # prototype scores: 2BxK
        scores_t, scores_s = scores[:B], scores[B:]
        with torch.no_grad():
            q_t, q_s = sinkhorn(scores_t), sinkhorn(scores_s)
        p_t, p_s = Softmax(scores_t / temp), Softmax(scores_s / temp)
        loss = - 0.5 * mean(q_t * log(p_s) + q_s * log(p_t))
        loss.backward()
        update(model.params); update(C.params)
        with torch.no_grad():
            C = normalize(C, dim=0, p=2)

    def sinkhorn(scores, eps=0.05, niters=3):
        Q = exp(scores / eps).T
        Q /= sum(Q)
        K, B = Q.shape
        u, r, c = zeros(K), ones(K) / K, ones(B) / B
        for _ in range(niters):
            u = sum(Q, dim=1)
            Q *= (r / u).unsqueeze(1)
            Q *= (c / sum(Q, dim=0)).unsqueeze(0)
        return (Q / sum(Q, dim=0, keepdim=True)).T

From the authors' code (main_swav.py): the mean is over samples of the sum over prototypes,
C is normalized at the start of each iteration, and the prototypes' gradient is dropped for
the first freeze_prototypes_niters iterations.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssl_syre.methods.swav import SwAV
from tests.conftest import build_method

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS, FROZEN, LR = 3, 1, 0.1


def sinkhorn(scores: torch.Tensor, eps: float = 0.05, niters: int = 3) -> torch.Tensor:
    q = torch.exp(scores / eps).T
    q = q / q.sum()
    k, b = q.shape
    r, c = torch.ones(k, dtype=q.dtype) / k, torch.ones(b, dtype=q.dtype) / b
    for _ in range(niters):
        u = q.sum(dim=1)
        q = q * (r / u).unsqueeze(1)
        q = q * (c / q.sum(dim=0)).unsqueeze(0)
    return (q / q.sum(dim=0, keepdim=True)).T


class Stepped(SwAV):
    """Our SwAV with the optimizer-step count a Trainer would give it."""

    steps_taken = 0

    @property
    def global_step(self) -> int:  # type: ignore[override]
        return self.steps_taken


def test_three_steps_match_the_papers_pseudo_code() -> None:
    torch.manual_seed(0)
    model, _ = build_method(
        "swav",
        "method_kwargs.n_local_views=0",
        "method_kwargs.n_prototypes=24",
        f"method_kwargs.freeze_prototypes_steps={FROZEN}",
    )
    model.__class__ = Stepped
    model.double()  # float64: what is left is the algorithm, not float32 summation order
    temp = model.kwargs.temperature
    net = nn.Sequential(copy.deepcopy(model.backbone), copy.deepcopy(model.projection_head))
    prototypes = nn.Parameter(model.prototypes.heads[0].weight.detach().clone().T)  # C: DxK
    reference_opt = torch.optim.SGD([*net.parameters(), prototypes], lr=LR, momentum=0.9)
    ours = [p for part in model.trainable_parts().values() for p in part.parameters()]
    our_opt = torch.optim.SGD(ours, lr=LR, momentum=0.9)

    size = model.info.image_size
    generator = torch.Generator().manual_seed(1)
    for step in range(STEPS):
        x_t, x_s = torch.randn(2, 8, 1, size, size, generator=generator, dtype=torch.float64)
        # The paper.
        with torch.no_grad():
            prototypes.copy_(F.normalize(prototypes, dim=0, p=2))
        reference_opt.zero_grad()
        z = F.normalize(net(torch.cat([x_t, x_s])), dim=1)
        scores = z @ prototypes
        scores_t, scores_s = scores[:8], scores[8:]
        with torch.no_grad():
            q_t, q_s = sinkhorn(scores_t), sinkhorn(scores_s)
        log_p_t = F.log_softmax(scores_t / temp, dim=1)
        log_p_s = F.log_softmax(scores_s / temp, dim=1)
        loss = -0.5 * ((q_t * log_p_s).sum(dim=1) + (q_s * log_p_t).sum(dim=1)).mean()
        loss.backward()
        if step < FROZEN:
            prototypes.grad = None
        reference_grads = [p.grad for p in [*net.parameters(), prototypes]]
        reference_opt.step()
        # Ours.
        model.steps_taken = step
        our_opt.zero_grad()
        our_loss = model.training_loss([x_t, x_s])
        our_loss.backward()
        model.on_after_backward()
        torch.testing.assert_close(our_loss, loss, rtol=1e-5, atol=1e-5)
        for ref_grad, param in zip(reference_grads[:-1], ours[:-1], strict=True):
            torch.testing.assert_close(param.grad, ref_grad, rtol=1e-5, atol=1e-5)
        our_prototype_grad = model.prototypes.heads[0].weight.grad
        if step < FROZEN:
            assert reference_grads[-1] is None and our_prototype_grad is None
        else:
            torch.testing.assert_close(our_prototype_grad, reference_grads[-1].T)
        our_opt.step()
    torch.testing.assert_close(model.prototypes.heads[0].weight, prototypes.detach().T)
