"""MoCo v2's training step against the MoCo paper's Algorithm 1 with v2's MLP head, in plain
torch, symmetrized as solo-learn's MoCo V2+.

- [0] MoCo, He et al. 2020, https://arxiv.org/abs/1911.05722, Algorithm 1
- [1] MoCo v2, Chen et al. 2020, https://arxiv.org/abs/2003.04297 (2-layer MLP head)
- [2] solo-learn, solo/methods/mocov2plus.py: both terms against the queue as it was before
  the step, then both views' keys enqueued
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_syre.methods import SSLMethod
from tests.reference.harness import ARMS, backbone_copy, build, compare
from tests.reference.plain import PaperMethod, ema_, mlp

pytestmark = pytest.mark.usefixtures("one_thread")

TEMPERATURE = 0.2  # the MoCo v2 paper's τ
MOMENTUM = 0.99  # constant: Algorithm 1's m (its schedule is a recipe matter, not the step's)
# Two steps fill the queue (2 x 2 x 8 keys), the third step's keys replace the first step's.
QUEUE = 32
# A split (or shuffled) BatchNorm is a multi-GPU device of the paper's code, not in Algorithm 1:
# our split_bn is set to 1 (one BatchNorm over the batch) to compare the step itself.
NO_SPLIT_BN = ["method_kwargs.split_bn=1"]


def canonical(queue: Tensor) -> Tensor:
    """The queue's keys as a set: rows in a fixed order (by a fixed random projection), since
    the order in which one step's two views' keys enter it is a convention, not the method."""
    direction = torch.randn(queue.shape[1], generator=torch.Generator().manual_seed(1))
    return queue[torch.argsort(queue @ direction.to(queue.dtype))]


class PaperMoCoV2(PaperMethod):
    """Query encoder f_q (encoder + MLP head), key encoder f_k (its momentum copy), and a
    queue of K normalized keys."""

    def __init__(self, encoder: torch.nn.Module, features: int, hidden: int, out: int) -> None:
        super().__init__()
        self.online["f"] = encoder
        self.online["g"] = mlp((features, hidden, "", "relu"), (hidden, out, "", ""))
        self.target["f"] = copy.deepcopy(self.online["f"])
        self.target["g"] = copy.deepcopy(self.online["g"])
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.queue = torch.empty(0)
        self.pointer = 0
        self.new_keys = torch.empty(0)

    def loss(self, views: list[Tensor], epoch: int) -> Tensor:
        x0, x1 = views
        q0, q1 = (F.normalize(self.online["g"](self.online["f"](x)), dim=1) for x in views)
        with torch.no_grad():  # k = f_k.forward(x_k); k = k.detach()
            k0, k1 = (F.normalize(self.target["g"](self.target["f"](x)), dim=1) for x in (x0, x1))
        queue = self.queue  # as it was before the step, for both terms

        def contrastive(q: Tensor, k: Tensor) -> Tensor:
            l_pos = (q * k).sum(dim=1, keepdim=True)  # bmm(q.view(N,1,C), k.view(N,C,1))
            l_neg = q @ queue.T  # mm(q.view(N,C), queue.view(C,K))
            logits = torch.cat([l_pos, l_neg], dim=1) / TEMPERATURE
            return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))

        self.new_keys = torch.cat([k1, k0])
        return 0.5 * (contrastive(q0, k1) + contrastive(q1, k0))

    def after_update(self, epoch: int) -> None:
        # f_k.params = m*f_k.params + (1-m)*f_q.params
        for part in ("f", "g"):
            ema_(self.target[part], self.online[part], MOMENTUM)
        # enqueue(queue, k); dequeue(queue): the oldest keys leave
        end = self.pointer + len(self.new_keys)
        assert end <= len(self.queue)
        self.queue[self.pointer : end] = self.new_keys
        self.pointer = end % len(self.queue)

    def observed(self) -> dict[str, Tensor]:
        return {"queue": canonical(self.queue)}


def observe(model: SSLMethod) -> dict[str, Tensor]:
    return {"queue": canonical(model.criterion.memory_bank.bank.clone())}


@pytest.mark.parametrize(("optimizer", "syre"), ARMS)
def test_step_is_the_papers(optimizer: str, syre: bool) -> None:
    model = build(
        "mocov2",
        optimizer,
        syre,
        f"method_kwargs.temperature={TEMPERATURE}",
        f"method_kwargs.queue_size={QUEUE}",
        f"method_kwargs.momentum_start={MOMENTUM}",
        f"method_kwargs.momentum_end={MOMENTUM}",
        *NO_SPLIT_BN,
    )
    k = model.kwargs
    reference = PaperMoCoV2(
        backbone_copy(model), model.feature_dim, k.projection_hidden_dim, k.projection_output_dim
    )
    reference.queue = model.criterion.memory_bank.bank.detach().clone()  # the same random start
    parts = {
        "online.f": "backbone",
        "online.g": "projection_head",
        "target.f": "backbone_momentum",
        "target.g": "projection_head_momentum",
    }
    compare(model, reference, parts, observe=observe)
