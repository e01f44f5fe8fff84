"""DINO's training step against the paper's Algorithm 1, written out in plain torch.

- [0] DINO, Caron et al. 2021, https://arxiv.org/abs/2104.14294, Algorithm 1 (centring,
  sharpening with the teacher and student temperatures, EMA teacher, centre update) and
  Sec. 3.1 / Appendix (head: 3-layer MLP, l2-normalized bottleneck, weight-normalized last
  layer; teacher temperature warmed up linearly from 0.04 to 0.07 over the first 30 epochs)
- [1] the authors' code, facebookresearch/dino main_dino.py, where Algorithm 1 is silent:
  multi-crop (MultiCropWrapper: the backbone runs once per run of same-size crops, the head
  once on all crops; the loss averages H over every (teacher crop, other student crop) pair),
  the temperature warm-up as np.linspace(0.04, 0.07, 30)[epoch], and the last layer frozen
  for the first epoch (cancel_gradients_last_layer)
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_syre.methods import SSLMethod
from tests.reference.harness import ARMS, backbone_copy, build, compare, fixed_views
from tests.reference.plain import PaperMethod, ema_, mlp

pytestmark = pytest.mark.usefixtures("one_thread")

# The paper's values [0].
WARMUP_TEACHER_TEMP, TEACHER_TEMP, WARMUP_EPOCHS = 0.04, 0.07, 30
STUDENT_TEMP, CENTER_MOMENTUM = 0.1, 0.9
FREEZE_LAST_LAYER = 1  # epochs
MOMENTUM = 0.99  # constant teacher momentum l for the step (its cosine: test_byol_step)


class WeightNormalizedLinear(nn.Module):
    """W = g·v/‖v‖ per output row, no bias; g fixed at 1 (norm_last_layer)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.ones(d_out, 1), requires_grad=False)
        self.v = nn.Parameter(torch.empty(d_out, d_in))

    def forward(self, x: Tensor) -> Tensor:
        return x @ (self.g * self.v / self.v.norm(dim=1, keepdim=True)).T


class Head(nn.Module):
    """MLP (BN in it for a CNN), l2 normalization, weight-normalized last layer."""

    def __init__(self, d_in: int, hidden: int, bottleneck: int, out: int) -> None:
        super().__init__()
        self.mlp = mlp(
            (d_in, hidden, "bn", "gelu"),
            (hidden, hidden, "bn", "gelu"),
            (hidden, bottleneck, "", ""),
        )
        self.last_layer = WeightNormalizedLinear(bottleneck, out)

    def forward(self, x: Tensor) -> Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))


def multi_crop(backbone: nn.Module, head: nn.Module, crops: list[Tensor]) -> list[Tensor]:
    """[1]'s MultiCropWrapper: the backbone per run of same-size crops, the head once."""
    features, start = [], 0
    while start < len(crops):
        end = start
        while end < len(crops) and crops[end].shape == crops[start].shape:
            end += 1
        features.append(backbone(torch.cat(crops[start:end])))
        start = end
    return list(head(torch.cat(features)).chunk(len(crops)))


def teacher_temperature(epoch: int) -> float:
    if epoch < WARMUP_EPOCHS:
        return float(np.linspace(WARMUP_TEACHER_TEMP, TEACHER_TEMP, WARMUP_EPOCHS)[epoch])
    return TEACHER_TEMP


class PaperDINO(PaperMethod):
    """Student g_s (encoder + head), teacher g_t (its EMA), centre C."""

    def __init__(self, encoder: nn.Module, features: int, hidden: int, bottleneck: int, out: int):
        super().__init__()
        self.online["f"] = encoder
        self.online["head"] = Head(features, hidden, bottleneck, out)
        self.target["f"] = copy.deepcopy(self.online["f"])
        self.target["head"] = copy.deepcopy(self.online["head"])
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.center = torch.zeros(1, out, dtype=torch.float64)
        self.teacher_out = torch.empty(0)

    def H(self, t: Tensor, s: Tensor, epoch: int) -> Tensor:  # noqa: N802 (the paper's name)
        t = t.detach()  # stop gradient
        s = F.log_softmax(s / STUDENT_TEMP, dim=1)
        t = F.softmax((t - self.center) / teacher_temperature(epoch), dim=1)  # centre + sharpen
        return -(t * s).sum(dim=1).mean()

    def loss(self, views: list[Tensor], epoch: int) -> Tensor:
        student = multi_crop(self.online["f"], self.online["head"], views)
        with torch.no_grad():
            teacher = multi_crop(self.target["f"], self.target["head"], views[:2])
        terms = [
            self.H(t, s, epoch)
            for i, t in enumerate(teacher)
            for v, s in enumerate(student)
            if v != i
        ]
        self.teacher_out = torch.cat(teacher)
        return sum(terms) / len(terms)  # Algorithm 1: H(t1, s2)/2 + H(t2, s1)/2 for 2 crops

    def frozen(self, name: str, epoch: int) -> bool:
        return name.startswith("head.last_layer.") and epoch < FREEZE_LAST_LAYER

    def after_update(self, epoch: int) -> None:
        for part in ("f", "head"):  # gt.params = l*gt.params + (1-l)*gs.params
            ema_(self.target[part], self.online[part], MOMENTUM)
        # C = m*C + (1-m)*cat([t1, t2]).mean(dim=0)
        batch_center = self.teacher_out.mean(dim=0, keepdim=True)
        self.center = CENTER_MOMENTUM * self.center + (1 - CENTER_MOMENTUM) * batch_center

    def observed(self) -> dict[str, Tensor]:
        return {"center": self.center.flatten()}


def observe(model: SSLMethod) -> dict[str, Tensor]:
    return {"center": model.criterion.center.detach().flatten().clone()}


PARTS = {
    "online.f": "backbone",
    "online.head": "projection_head",
    "target.f": "backbone_momentum",
    "target.head": "projection_head_momentum",
}


def dino(optimizer: str, syre: bool, *overrides: str) -> SSLMethod:
    return build(
        "dino",
        optimizer,
        syre,
        "method_kwargs.bottleneck_dim=16",
        f"method_kwargs.student_temp={STUDENT_TEMP}",
        f"method_kwargs.center_momentum={CENTER_MOMENTUM}",
        f"method_kwargs.freeze_last_layer={FREEZE_LAST_LAYER}",
        f"method_kwargs.momentum_start={MOMENTUM}",
        f"method_kwargs.momentum_end={MOMENTUM}",
        *overrides,
    )


def reference_for(model: SSLMethod) -> PaperDINO:
    k = model.kwargs
    return PaperDINO(
        backbone_copy(model),
        model.feature_dim,
        k.projection_hidden_dim,
        k.bottleneck_dim,
        k.projection_output_dim,
    )


@pytest.mark.parametrize(("optimizer", "syre"), ARMS)
def test_step_is_the_papers(optimizer: str, syre: bool) -> None:
    """Algorithm 1 as printed: two global crops, the first epoch (last layer frozen, the
    teacher temperature at its warm-up start)."""
    model = dino(optimizer, syre, "method_kwargs.n_local_views=0")
    compare(model, reference_for(model), PARTS, observe=observe)


def test_teacher_temperature_warms_up_as_the_papers() -> None:
    """Epoch 10 of the warm-up, at our default temperatures; the last layer trains."""
    model = dino("sgd", True, "method_kwargs.n_local_views=0")
    compare(model, reference_for(model), PARTS, epoch=10, observe=observe)


def test_multi_crop_step_is_the_papers() -> None:
    model = dino("sgd", True, "method_kwargs.n_local_views=2", "method_kwargs.local_crop_size=8")
    views = [
        globals_ + locals_
        for globals_, locals_ in zip(
            fixed_views(model), fixed_views(model, size=8, seed=1), strict=True
        )
    ]
    compare(model, reference_for(model), PARTS, views=views, observe=observe)
