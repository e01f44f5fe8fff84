"""The reference side of the reference-step tests: heads, optimizers and the momentum update
written out in plain torch from the papers, with no code of ssl_syre or lightly.

A method's reference (tests/reference/test_<method>_step.py) subclasses `PaperMethod`: it
builds its heads from `mlp`, writes its loss and update from its paper's pseudo-code, and
takes its initial weights (and random anchors θ0, queue) from our module with `copy_state`, so
that both sides start equal. Everything is float64.

Two conventions the papers leave open are taken as their authors' code takes them: a linear
layer followed by BatchNorm has no bias (BN's mean subtraction cancels it), and weight decay
covers the weights of conv and linear layers (`decayed`), not biases or norm parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

DTYPE = torch.float64


def mlp(*blocks: tuple[int, int, str, str]) -> nn.Sequential:
    """Linear layers, each (in, out, norm, activation): norm "bn", "bn-no-affine" or "",
    activation "relu", "gelu" or ""; a linear layer followed by BN has no bias."""
    layers: list[nn.Module] = []
    for d_in, d_out, norm, activation in blocks:
        layers.append(nn.Linear(d_in, d_out, bias=not norm))
        if norm:
            layers.append(nn.BatchNorm1d(d_out, affine=norm == "bn"))
        if activation:
            layers.append(nn.ReLU() if activation == "relu" else nn.GELU())
    return nn.Sequential(*layers)


def copy_state(source: nn.Module, target: nn.Module) -> dict[str, str]:
    """Copy `source`'s state (parameters and buffers, in order) into `target`, whose layout
    must be the same: the same number of entries with the same shapes, else AssertionError.

    Returns:
        target name -> source name, for every state entry.
    """
    ours, theirs = list(source.state_dict().items()), list(target.state_dict().items())
    assert [tuple(v.shape) for _, v in ours] == [tuple(v.shape) for _, v in theirs], (
        f"layouts differ:\n ours {[(k, tuple(v.shape)) for k, v in ours]}\n"
        f" reference {[(k, tuple(v.shape)) for k, v in theirs]}"
    )
    target.load_state_dict(
        {t: v.detach().clone() for (t, _), (_, v) in zip(theirs, ours, strict=True)}
    )
    return {t: s for (t, _), (s, _) in zip(theirs, ours, strict=True)}


@torch.no_grad()
def ema_(target: nn.Module, online: nn.Module, m: float) -> None:
    """ξ ← m·ξ + (1 − m)·θ over the parameters (BYOL eq. 1, MoCo Algorithm 1, DINO
    Algorithm 1); the target's BN statistics follow its own forward passes."""
    for xi, theta in zip(target.parameters(), online.parameters(), strict=True):
        xi.mul_(m).add_(theta.detach(), alpha=1 - m)


def decayed(name: str, param: Tensor) -> bool:
    """Weights of conv and linear layers: ndim >= 2 and not a bias."""
    return param.ndim >= 2 and not name.endswith(".bias")


class PlainSGD:
    """SGD with momentum μ and the decay coupled into the gradient (the SyRe paper's loss
    ℓ(θ + θ0) + γ/2·‖θ‖² in w = θ + θ0):

        g ← ∇ℓ(w) + γ·(w − θ0);  b ← μ·b + g (b = g at the first step);  w ← w − lr·b
    """

    def __init__(self, lr: float, momentum: float, weight_decay: float) -> None:
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buffers: dict[str, Tensor] = {}

    @torch.no_grad()
    def step(
        self,
        params: Mapping[str, Tensor],
        grads: Mapping[str, Tensor],
        anchors: Mapping[str, Tensor],
    ) -> None:
        for name, w in params.items():
            if name not in grads:  # no gradient, no step (a frozen layer)
                continue
            g = grads[name].clone()
            if name in anchors:
                g += self.weight_decay * (w - anchors[name])
            b = self.buffers.get(name)
            b = g if b is None else self.momentum * b + g
            self.buffers[name] = b
            w -= self.lr * b


class PlainAdamW:
    """Adam with the decay decoupled (AdamW, Loshchilov & Hutter), toward θ0:

    w ← w − lr·γ·(w − θ0);  m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g²;
    w ← w − lr·(m / (1 − β1^t)) / (√(v / (1 − β2^t)) + ε)
    """

    def __init__(
        self,
        lr: float,
        weight_decay: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.moments: dict[str, tuple[Tensor, Tensor, int]] = {}

    @torch.no_grad()
    def step(
        self,
        params: Mapping[str, Tensor],
        grads: Mapping[str, Tensor],
        anchors: Mapping[str, Tensor],
    ) -> None:
        beta1, beta2 = self.betas
        for name, w in params.items():
            if name not in grads:
                continue
            g = grads[name]
            if name in anchors:
                w -= self.lr * self.weight_decay * (w - anchors[name])
            m, v, t = self.moments.get(name, (torch.zeros_like(w), torch.zeros_like(w), 0))
            m, v, t = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g, t + 1
            self.moments[name] = (m, v, t)
            w -= self.lr * (m / (1 - beta1**t)) / ((v / (1 - beta2**t)).sqrt() + self.eps)


@dataclass
class Record:
    """One training step as a side saw it: the loss, the gradients (before any decay), the
    state after the step, and `observed` method state (queue, centre)."""

    loss: Tensor
    grads: dict[str, Tensor]
    state: dict[str, Tensor]
    observed: dict[str, Tensor] = field(default_factory=dict)


class PlainLARS:
    """LARS (You et al. 2017, https://arxiv.org/abs/1708.03888, Algorithm 1) with its decay
    toward θ0, for the decayed weights:

        λ = η·‖w‖ / (‖g‖ + γ·‖w − θ0‖ + ε);  b ← μ·b + λ·(g + γ·(w − θ0));  w ← w − lr·b

    and b ← μ·b + g for biases and norm parameters (no trust ratio, no decay, as the Barlow
    Twins and VICReg authors' LARS exclude them).
    """

    def __init__(
        self,
        lr: float,
        momentum: float,
        weight_decay: float,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
    ) -> None:
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.trust_coefficient, self.eps = trust_coefficient, eps
        self.buffers: dict[str, Tensor] = {}

    @torch.no_grad()
    def step(
        self,
        params: Mapping[str, Tensor],
        grads: Mapping[str, Tensor],
        anchors: Mapping[str, Tensor],
    ) -> None:
        for name, w in params.items():
            if name not in grads:
                continue
            g = grads[name]
            if name in anchors:
                pull = self.weight_decay * (w - anchors[name])
                local_lr = self.trust_coefficient * w.norm() / (g.norm() + pull.norm() + self.eps)
                g = local_lr * (g + pull)
            b = self.buffers.get(name)
            b = g.clone() if b is None else self.momentum * b + g
            self.buffers[name] = b
            w -= self.lr * b


class PaperMethod(nn.Module):
    """A method as its paper writes it: `online` parts trained by `optimizer`, optional
    `target` parts (momentum copies), and a `loss` that subclasses write.

    `step(views, epoch)` is one training step: the loss, its gradients, the optimizer's
    update (with the decay toward θ0 written out) and whatever the paper does after the
    update (EMA, queue, centre: `after_update`). Names are "online.<part>.<name>" and
    "target.<part>.<name>"; `anchors` holds θ0 by online name for the decayed weights.
    """

    def __init__(self) -> None:
        super().__init__()
        self.online = nn.ModuleDict()
        self.target = nn.ModuleDict()
        self.anchors: dict[str, Tensor] = {}
        self.optimizer: PlainSGD | PlainAdamW | PlainLARS | None = None
        self.step_index = 0

    def loss(self, views: Sequence[Tensor], epoch: int) -> Tensor:
        raise NotImplementedError

    def after_update(self, epoch: int) -> None:
        """What the paper does once the online weights have moved (EMA, queue, centre)."""

    def frozen(self, name: str, epoch: int) -> bool:
        """Whether parameter `name` takes no step at `epoch` (DINO's last layer)."""
        return False

    def trained(self) -> dict[str, Tensor]:
        return {n: p for n, p in self.online.named_parameters() if p.requires_grad}

    def observed(self) -> dict[str, Tensor]:
        """Method state outside the modules, by a name the test shares with our side."""
        return {}

    def step(self, views: Sequence[Tensor], epoch: int = 0) -> Record:
        """One training step; the record holds the online state after the update and the
        target state as this step's loss used it (before the EMA that follows the update)."""
        params = self.trained()
        for p in params.values():
            p.grad = None
        loss = self.loss(views, epoch)
        loss.backward()
        grads = {
            f"online.{n}": p.grad.detach().clone()
            for n, p in params.items()
            if p.grad is not None and not self.frozen(n, epoch)
        }
        targets = {f"target.{k}": v.detach().clone() for k, v in self.target.state_dict().items()}
        assert self.optimizer is not None
        self.optimizer.step({f"online.{n}": p.data for n, p in params.items()}, grads, self.anchors)
        self.after_update(epoch)
        self.step_index += 1
        state = {f"online.{k}": v.detach().clone() for k, v in self.online.state_dict().items()}
        return Record(loss.detach(), grads, {**state, **targets}, self.observed())


def byol_cosine(step: int, total: int, base: float, end: float = 1.0) -> float:
    """BYOL's τ at training step k of K (0-based): 1 − (1 − τ_base)·(cos(πk/K) + 1)/2,
    written for a general end value (DINO: 0.996 → 1 the same way)."""
    return end - (end - base) * (math.cos(math.pi * step / total) + 1) / 2
