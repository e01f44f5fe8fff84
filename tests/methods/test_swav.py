"""SwAV: multi-crop views, unit prototypes without bias, prototypes frozen for the first
steps, the queue, SyRe on the prototypes and a falling loss (the step against the paper's
pseudo-code: tests/reference/test_swav_step.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightly.transforms import SwaVTransform
from PIL import Image

from ssl_syre.errors import UserError
from ssl_syre.methods.swav import SwAV
from tests.conftest import (
    build_method,
    check_prototype_koleo_knob,
    losses_on_fixed_views,
    train_in_process,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# Two 16-px crops of the digits and two local ones of 8 px.
SMALL = ["method_kwargs.n_local_views=2", "method_kwargs.local_crop_size=8"]
QUICK = [
    "eval.online_every_n_epochs=0",
    "eval.linear_probe=false",
    "eval.raw_pixel_baseline=false",
    "eval.knn_k=[5]",
    "export=false",
]


def build(*extra: str) -> SwAV:
    return build_method("swav", *SMALL, "method_kwargs.n_prototypes=32", *extra)[0]


def uint8_batch(count: int = 8, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 1, 8, 8), dtype=torch.uint8, generator=generator)


def test_multi_crop_views_have_the_configured_sizes_on_both_paths() -> None:
    model = build("method_kwargs.n_local_views=3", "method_kwargs.local_crop_size=6")
    views = model.views((uint8_batch(), None), batch_idx=0)
    assert [tuple(v.shape[-2:]) for v in views] == [(16, 16)] * 2 + [(6, 6)] * 3
    transform = model.make_transform()
    assert isinstance(transform, SwaVTransform)
    crops = transform(Image.new("L", (8, 8), color=128))
    assert [tuple(c.shape) for c in crops] == [(1, 16, 16)] * 2 + [(1, 6, 6)] * 3
    recipes = model.augment.recipes
    assert [(r.min_scale, r.max_scale) for r in recipes] == [(0.4, 1.0)] * 2 + [(0.05, 0.14)] * 3
    scales = [step.transforms[0].scale for step in transform.transforms]
    assert [tuple(s) for s in scales] == [(0.4, 1.0)] * 2 + [(0.05, 0.14)] * 3
    assert model.training_loss(views).ndim == 0


def test_a_vit_takes_local_crops_rounded_to_its_patch() -> None:
    model = build_method("swav", "backbone.name=test_vit", "data.image_size=32")[0]
    assert model.local_size == 16 and model.backbone_kwargs["dynamic_img_size"] is True
    views = model.views((uint8_batch(4), None), batch_idx=0)
    assert {tuple(v.shape[-2:]) for v in views} == {(32, 32), (16, 16)}
    assert torch.isfinite(model.training_loss(views))


def test_bad_crop_scales_are_refused() -> None:
    with pytest.raises(UserError, match="local_crop_scale"):
        build("method_kwargs.local_crop_scale=[0.5,0.1]")


def test_prototypes_are_unit_vectors_without_bias_at_every_step_and_covered_by_syre() -> None:
    model = build()
    weights = model.prototype_weights()
    assert set(weights) == {"prototypes"} and weights["prototypes"].shape == (32, 16)
    assert [name for name, _ in model.prototypes.named_parameters()] == ["heads.0.weight"]
    assert "prototypes.heads.0.weight" in model.syre.covered_names
    with torch.no_grad():
        model.prototypes.heads[0].weight.mul_(3.0)
    model.training_loss(model.views((uint8_batch(), None), batch_idx=0))
    torch.testing.assert_close(weights["prototypes"].norm(dim=1), torch.ones(32))


def test_prototypes_take_no_step_for_the_first_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """freeze_prototypes_steps=2: the first two optimizer steps leave the prototypes as the
    step found them (no gradient, no decay); the third moves them."""
    seen: list[tuple[int, bool, torch.Tensor]] = []
    after: list[torch.Tensor] = []

    def before_step(self: SwAV, optimizer: torch.optim.Optimizer) -> None:
        weight = self.prototypes.heads[0].weight
        seen.append((self.global_step, weight.grad is None, weight.detach().clone()))

    def batch_end(self: SwAV, outputs: object, batch: object, batch_idx: int) -> None:
        after.append(self.prototypes.heads[0].weight.detach().clone())

    monkeypatch.setattr(SwAV, "on_before_optimizer_step", before_step, raising=False)
    monkeypatch.setattr(SwAV, "on_train_batch_end", batch_end, raising=False)
    run_dir = train_in_process(
        tmp_path,
        "method=swav",
        "method_kwargs.n_local_views=0",
        "method_kwargs.n_prototypes=32",
        "method_kwargs.freeze_prototypes_steps=2",
        "trainer.limit_train_batches=3",
        *QUICK,
    )
    assert json.loads((run_dir / "metrics.json").read_text())["run"]["steps"] == 3
    assert [(step, frozen) for step, frozen, _ in seen] == [(0, True), (1, True), (2, False)]
    assert torch.equal(seen[0][2], after[0]) and torch.equal(seen[1][2], after[1])
    assert not torch.equal(seen[2][2], after[2])


def test_the_queue_starts_at_its_epoch_and_enters_sinkhorn_once_full() -> None:
    model = build(
        "method_kwargs.n_local_views=0",
        "method_kwargs.queue_length=16",
        "method_kwargs.queue_start_epoch=0",
    )
    received: list[object] = []
    criterion = model.criterion.forward

    def recording(high, low, queue_outputs=None):  # noqa: ANN001, ANN202
        received.append(queue_outputs)
        return criterion(high, low, queue_outputs=queue_outputs)

    model.criterion.forward = recording
    images = [model.views((uint8_batch(seed=s), None), batch_idx=s) for s in range(3)]
    model.training_loss(images[0])
    model.training_loss(images[1])
    banks = [queue.bank.clone() for queue in model.queues]
    model.training_loss(images[2])
    assert received[0] is None and received[1] is None  # 8, then 16 of 16 rows filled
    assert len(received[2]) == 2
    for scores, bank in zip(received[2], banks, strict=True):
        assert scores.shape == (16, 32) and not scores.requires_grad
        torch.testing.assert_close(scores, model.prototypes(bank))
    later = build("method_kwargs.queue_length=16", "method_kwargs.queue_start_epoch=1")
    before = later.queues[0].bank.clone()
    later.training_loss(later.views((uint8_batch(), None), batch_idx=0))  # epoch 0: no queue
    assert torch.equal(later.queues[0].bank, before)
    assert not len(build().queues)  # queue_length=0 (the default): none


def test_loss_falls_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = build("method_kwargs.freeze_prototypes_steps=0")
    views = model.views((uint8_batch(32), None), batch_idx=0)
    losses = losses_on_fixed_views(model, views, steps=8, lr=0.1)
    assert losses[-1] < losses[0] - 1.0, losses


def test_prototype_koleo_weight_adds_its_term_and_zero_changes_nothing() -> None:
    """Govindarajan et al.'s KoLeo on the prototypes, as DINO's; refused below 0."""
    views = build().views((uint8_batch(8), None), batch_idx=0)
    check_prototype_koleo_knob(build, views, "prototypes.heads.0.weight")
    with pytest.raises(UserError, match="prototype_koleo_weight' of swav must be in"):
        build("method_kwargs.prototype_koleo_weight=-0.1")
