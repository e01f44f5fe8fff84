"""iBOT and DINOv2: the masked patch loss counts masked tokens only, the loss falls, the
teacher's stop-gradient matters, its momentum runs once per optimizer step, KoLeo is in
DINOv2's loss, ViT only, and what SyRe does to a weight-normalised prototype layer."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssl_syre.errors import UserError
from ssl_syre.methods import METHODS
from ssl_syre.methods.ibot import IBOT
from tests.conftest import build_method, losses_on_fixed_views, train_in_process

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILY = ["ibot", "dinov2"]
SMALL = ["method_kwargs.n_local_views=2"]
QUICK = [
    "eval.online_every_n_epochs=0",
    "eval.linear_probe=false",
    "eval.raw_pixel_baseline=false",
    "eval.knn_k=[5]",
    "export=false",
]


def build(method: str, *extra: str) -> IBOT:
    return build_method(method, *SMALL, *extra)[0]


def uint8_batch(count: int = 8, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 1, 8, 8), dtype=torch.uint8, generator=generator)


def fixed_mask(model: IBOT, seed: int = 0) -> torch.Tensor:
    """A block mask drawn once, then returned at every step (lightly's sampler draws from
    Python's global random)."""
    import random

    random.seed(seed)
    grid = model.info.image_size // model.patch_size()
    mask = model.patch_mask(16, (grid, grid))
    assert mask.any() and not mask.all()
    model.patch_mask = lambda count, grid: mask  # type: ignore[method-assign]
    return mask


@pytest.mark.parametrize("method", FAMILY)
def test_loss_falls_on_a_fixed_batch(method: str) -> None:
    model = build(
        method, "optimizer.name=adamw", "optimizer.lr=0.003", "optimizer.scheduler=constant"
    )
    fixed_mask(model)
    views = model.views((uint8_batch(), None), batch_idx=0)
    losses = losses_on_fixed_views(model, views, steps=8, optimizer=model.configure_optimizers())
    assert losses[-1] < losses[0] - 0.05, losses


@pytest.mark.parametrize("method", FAMILY)
def test_patch_loss_counts_the_masked_tokens_only(method: str) -> None:
    """The patch loss is, per image, the mean over its masked tokens of the cross-entropy
    between the teacher (unmasked input) and the student (mask token in) at that position,
    averaged over the batch; the mean over all tokens is another number."""
    model = build(method)
    mask = fixed_mask(model)
    views = model.views((uint8_batch(), None), batch_idx=0)
    global_views = torch.cat(views[:2])
    student_head, teacher_head = model.patch_heads()
    prefix = model.backbone.num_prefix_tokens
    token_mask = torch.cat([mask.new_zeros(len(mask), prefix), mask.flatten(1)], 1)
    temperature = model.teacher_temperature()
    with torch.no_grad():
        teacher = teacher_head(model.backbone_momentum.forward_features(global_views)[:, prefix:])
        tokens = model.encoder(model.backbone).encode(global_views, mask=token_mask)
        student = student_head(tokens[:, prefix:])
        cross_entropy = -(
            F.softmax(teacher / temperature, dim=-1)
            * F.log_softmax(student / model.kwargs.student_temp, dim=-1)
        ).sum(-1)  # (B, H*W); the center starts at 0
        flat = mask.flatten(1).float()
        expected = ((cross_entropy * flat).sum(1) / flat.sum(1).clamp_min(1)).sum() / len(mask)
        everywhere = cross_entropy.mean()
        patch_loss = model.losses(views)["patch_loss"]
    torch.testing.assert_close(patch_loss, expected)
    assert not torch.isclose(patch_loss, everywhere, rtol=1e-3)
    # The student's masked positions carry the mask token, not the image.
    unmasked = model.encoder(model.backbone).preprocess(global_views)
    masked = model.encoder(model.backbone).preprocess(global_views, mask=token_mask)
    assert torch.equal(masked[~token_mask], unmasked[~token_mask])
    assert not torch.equal(masked[token_mask], unmasked[token_mask])


@pytest.mark.parametrize("method", FAMILY)
def test_stop_gradient_keeps_the_teacher_out_of_the_gradient(method: str) -> None:
    """With the teacher sharing the student's weights, the gradient differs from the one the
    same loss gives without the teacher's no_grad: the stop-gradient is there and matters."""
    model = build(method, "method_kwargs.momentum_start=1.0")
    fixed_mask(model)
    model.backbone_momentum = model.backbone
    model.projection_head_momentum = model.projection_head
    if model.kwargs.separate_patch_head:
        model.patch_head_momentum = model.patch_head
    views = model.views((uint8_batch(), None), batch_idx=0)
    through = copy.deepcopy(model)
    through.forward_views = lambda v: _without_no_grad(through, v)  # type: ignore[method-assign]

    def grads(net: IBOT) -> list[torch.Tensor]:
        net.training_loss(views).backward()
        return [p.grad.clone() for p in net.backbone.parameters() if p.grad is not None]

    stopped, flowing = grads(model), grads(through)
    assert len(stopped) == len(flowing)
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(stopped, flowing, strict=True))


def _without_no_grad(model: IBOT, views: list[torch.Tensor]) -> dict:
    """forward_views with the teacher's torch.no_grad lifted (nothing else changed)."""
    original = torch.no_grad
    torch.no_grad = torch.enable_grad  # type: ignore[misc, assignment]
    try:
        out = IBOT.forward_views(model, views)
    finally:
        torch.no_grad = original  # type: ignore[misc]
    return out


@pytest.mark.parametrize("method", FAMILY)
def test_teacher_is_frozen_outside_syre_and_follows_by_ema(method: str) -> None:
    model = build(method)
    names = {"backbone_momentum", "projection_head_momentum", "patch_head_momentum"}
    assert not names & set(model.trainable_parts())
    assert not any(
        p.requires_grad for n in names if hasattr(model, n) for p in getattr(model, n).parameters()
    )
    assert not any("momentum" in name for name in model.syre.covered_names)
    with torch.no_grad():
        for param in model.projection_head.parameters():
            param.add_(torch.randn_like(param))
    before = [p.clone() for p in model.projection_head_momentum.parameters()]
    m = model.momentum()
    model.training_loss(model.views((uint8_batch(), None), batch_idx=0))
    for old, target, online in zip(
        before,
        model.projection_head_momentum.parameters(),
        model.projection_head.parameters(),
        strict=True,
    ):
        torch.testing.assert_close(target, m * old + (1 - m) * online)


@pytest.mark.parametrize("method, updates", [("ibot", 2), ("dinov2", 3)])
def test_momentum_updates_once_per_optimizer_step_under_accumulation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, updates: int
) -> None:
    """The teacher's parts (iBOT: backbone and shared head; DINOv2: and the patch head) take
    one EMA step per optimizer step, not one per micro-batch."""
    from ssl_syre.methods import momentum

    calls: list[int] = []
    update_momentum = momentum.update_momentum

    def counting_update(model: nn.Module, model_ema: nn.Module, m: float) -> None:
        calls.append(1)
        return update_momentum(model, model_ema, m)

    monkeypatch.setattr(momentum, "update_momentum", counting_update)
    run_dir = train_in_process(
        tmp_path,
        f"method={method}",
        *SMALL,
        "trainer.accumulate_grad_batches=2",
        "trainer.limit_train_batches=4",
        *QUICK,
    )
    steps = json.loads((run_dir / "metrics.json").read_text())["run"]["steps"]
    assert steps == 2
    assert len(calls) == updates * steps


def test_dinov2_adds_koleo_on_the_global_crops_features() -> None:
    model = build("dinov2")
    fixed_mask(model)
    views = model.views((uint8_batch(), None), batch_idx=0)
    reference = copy.deepcopy(model)
    losses = reference.losses(views)
    koleo = sum(model.koleo_criterion(c) for c in losses["student_features"].chunk(2))
    expected = losses["cls_loss"] + losses["patch_loss"] + 0.1 * koleo
    torch.testing.assert_close(model.training_loss(views), expected)
    assert koleo.abs() > 1e-3  # the term is there to see
    off = build("dinov2", "method_kwargs.koleo_weight=0")
    off.load_state_dict(reference.state_dict())
    fixed_mask(off)
    assert not torch.isclose(off.training_loss(views), expected)


def test_prototype_koleo_pushes_planted_copies_apart() -> None:
    """The KoLeo-on-prototypes knob (Govindarajan et al.'s remedy): its gradient separates a
    planted copy from its original."""
    model = build("ibot", "method_kwargs.prototype_koleo_weight=1.0")
    direction = model.projection_head.last_layer.parametrizations.weight.original1
    with torch.no_grad():
        direction[1] = direction[0] + 1e-3 * torch.randn_like(direction[0])
    model.prototype_koleo().backward()
    step = direction - 0.1 * direction.grad
    assert F.cosine_similarity(step[0], step[1], dim=0) < F.cosine_similarity(
        direction[0], direction[1], dim=0
    )


def test_separate_patch_head_is_its_own_part_with_its_own_teacher() -> None:
    shared = build("ibot")
    assert "patch_head" not in shared.trainable_parts()
    assert shared.patch_heads() == (shared.projection_head, shared.projection_head_momentum)
    assert list(shared.prototype_weights()) == ["projection_head.last_layer"]
    separate = build("ibot", "method_kwargs.separate_patch_head=true")
    assert set(separate.trainable_parts()) == {
        "backbone",
        "projection_head",
        "patch_head",
        "mask_token",
    }
    assert separate.patch_heads()[1] is separate.patch_head_momentum
    assert list(separate.prototype_weights()) == [
        "projection_head.last_layer",
        "patch_head.last_layer",
    ]
    assert METHODS["dinov2"].Kwargs().separate_patch_head  # untied in DINOv2
    # The exported backbone is the plain timm ViT: the mask token is a part of its own.
    assert not any("mask" in name for name in separate.backbone.state_dict())


@pytest.mark.parametrize("method", FAMILY)
def test_drop_path_acts_on_the_student_only(method: str) -> None:
    """The recipes' drop path: the student's forward is stochastic in training, the teacher's
    is not (it stays in eval mode through model.train())."""
    model = build(method, "backbone.kwargs.drop_path_rate=0.5").train()
    assert model.backbone.training and not model.backbone_momentum.training
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        assert not torch.equal(model.backbone(x), model.backbone(x))
        assert torch.equal(model.backbone_momentum(x), model.backbone_momentum(x))


@pytest.mark.parametrize("method", FAMILY)
def test_a_cnn_backbone_is_refused_in_one_line(method: str) -> None:
    with pytest.raises(UserError, match="needs a ViT backbone"):
        build_method(method, "backbone.name=test_resnet", "data.image_size=16")
    with pytest.raises(UserError, match="mask_ratio_min"):
        build(method, "method_kwargs.mask_ratio_min=0.6", "method_kwargs.mask_ratio_max=0.2")


@pytest.mark.parametrize("sigma0, moves", [(0.0, False), (1.0, True)])
def test_syre_on_a_weight_normalised_layer(sigma0: float, moves: bool) -> None:
    """SyRe anchors v, the direction parameter, never g. Decay toward 0 only shrinks ‖v‖: the
    prototypes (v/‖v‖) stay where they are. Decay toward θ0 turns each v toward its own
    anchor: the prototypes move, each toward a different random direction."""
    model = build("dinov2", f"syre.sigma0={sigma0}", "optimizer.scheduler=constant")
    layer = model.projection_head.last_layer.parametrizations.weight
    v_name = "projection_head.last_layer.parametrizations.weight.original1"
    assert v_name in model.syre.covered_names
    assert layer.original0.requires_grad  # DINOv2 trains g ...
    assert not any("original0" in name for name in model.syre.covered_names)  # ... unanchored
    optimizer = model.configure_optimizers()
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    assert group_of[id(layer.original0)]["weight_decay"] == 0.0
    before = F.normalize(model.projection_head.last_layer.weight.detach().clone(), dim=1)
    norm_before = layer.original1.detach().norm(dim=1)
    for param in model.parameters():
        param.grad = torch.zeros_like(param) if param.requires_grad else None
    for _ in range(20):
        optimizer.step()  # zero gradients: the decay alone acts
    after = F.normalize(model.projection_head.last_layer.weight.detach(), dim=1)
    if not moves:
        torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
        assert (layer.original1.detach().norm(dim=1) < norm_before).all()
        return
    anchor = F.normalize(model.syre.anchors[v_name], dim=1)
    assert not torch.allclose(after, before, atol=1e-4)
    assert ((after * anchor).sum(1) > (before * anchor).sum(1)).all()


@pytest.mark.slow
@pytest.mark.parametrize("method", FAMILY)
def test_train_py_runs_as_a_new_user_types_it(method: str, tmp_path: Path) -> None:
    from tests.conftest import TINY, run_train

    tiny = [o for o in TINY if not o.startswith("method_kwargs.")]
    done = run_train(
        *tiny,
        f"method={method}",
        "backbone.name=test_vit",
        "data.image_size=32",
        *QUICK,
        f"output_dir={tmp_path}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(next(tmp_path.rglob("metrics.json")).read_text())
    assert metrics["run"]["method"] == method and metrics["run"]["steps"] == 3
