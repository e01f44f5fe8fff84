"""LeJEPA: lightly's loss on global and local views, no stop-gradient, lightly's benchmark
views, and train.py as a user types it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from lightly.loss import LeJEPALoss
from lightly.transforms import DINOTransform

from tests.conftest import build_method, losses_on_fixed_views, run_train
from tests.data.test_augment import lightly_parameters, recipe_parameters

pytestmark = pytest.mark.usefixtures("one_thread")

# Tiny LeJEPA: test_vit at 32 px (16-px patches), 2 global crops and 2 local ones of 16 px.
SMALL = [
    "backbone.name=test_vit",
    "data.image_size=32",
    "method_kwargs.n_local_views=2",
    "method_kwargs.sigreg_num_vectors=256",
    "optimizer.scheduler=constant",
]


def build(*extra: str):
    return build_method("lejepa", *SMALL, *extra)[0]


def uint8_batch(count: int = 8, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 1, 28, 28), dtype=torch.uint8, generator=generator)


def test_loss_falls_on_a_fixed_batch() -> None:
    torch.manual_seed(0)  # SIGReg's random directions at each step
    model = build("optimizer.lr=0.002")
    views = model.views((uint8_batch(), None), batch_idx=0)
    losses = losses_on_fixed_views(model, views, steps=10, optimizer=model.configure_optimizers())
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses


def test_views_are_two_global_and_the_local_crops_through_one_head() -> None:
    model = build()
    views = model.views((uint8_batch(), None), batch_idx=0)
    assert [tuple(v.shape[-2:]) for v in views] == [(32, 32)] * 2 + [(16, 16)] * 2
    assert model.backbone_kwargs["dynamic_img_size"] is True
    assert set(model.trainable_parts()) == {"backbone", "projection_head"}  # no teacher
    seen: list[torch.Tensor] = []
    model.backbone.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    torch.manual_seed(3)
    loss = model.training_loss(views)
    assert [tuple(x.shape) for x in seen] == [(16, 1, 32, 32), (16, 1, 16, 16)]
    # The loss is lightly's LeJEPALoss on the stacked (V, N, D) projections.
    criterion = LeJEPALoss(lambda_param=0.05, sigreg_num_vectors=256)
    model.eval()  # BatchNorm in the head: compare with the same statistics in both passes
    torch.manual_seed(3)
    ours = model.training_loss(views)
    torch.manual_seed(3)
    theirs = criterion(
        local_proj=model.embed(views[2:]).detach(),
        global_proj=model.embed(views[:2]).detach(),
    )
    assert torch.isfinite(loss)
    torch.testing.assert_close(ours.detach(), theirs)


def test_without_local_views_the_same_formula_runs_on_the_global_views() -> None:
    model = build("method_kwargs.n_local_views=0").eval()
    views = model.views((uint8_batch(), None), batch_idx=0)
    assert len(views) == 2
    with torch.no_grad():
        proj = model.embed(views)
        torch.manual_seed(5)
        loss = model.training_loss(views)
        torch.manual_seed(5)
        sigreg = model.criterion.sigreg(proj)
    invariance = (proj.mean(0) - proj).square().mean()
    torch.testing.assert_close(loss, 0.05 * sigreg + 0.95 * invariance)


def test_no_stop_gradient_on_the_global_centre() -> None:
    """The invariance target (the mean of the global views) takes gradient, as in the paper:
    the gradient equals the one without any detach, and differs from a detached centre."""
    model = build("method_kwargs.lambda_param=0.0")  # the invariance term alone: no randomness
    views = model.views((uint8_batch(), None), batch_idx=0)
    reference = copy.deepcopy(model)

    def grads(net) -> list[torch.Tensor]:
        return [p.grad.clone() for p in net.backbone.parameters() if p.grad is not None]

    model.training_loss(views).backward()

    def invariance(detach: bool) -> torch.Tensor:
        global_proj, local_proj = reference.embed(views[:2]), reference.embed(views[2:])
        centre = global_proj.mean(0)
        centre = centre.detach() if detach else centre
        every = torch.cat([global_proj, local_proj])
        return (centre - every).square().mean()

    invariance(detach=False).backward()
    plain = grads(reference)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads(model), plain, strict=True))
    reference.zero_grad()
    invariance(detach=True).backward()  # a stop-gradient would show here
    assert not all(
        torch.allclose(a, b, atol=1e-6) for a, b in zip(grads(reference), plain, strict=True)
    )


def test_recipes_are_lightlys_lejepa_benchmark_views() -> None:
    """STL-10's 96 px keeps the blur on: every view is the matching view of lightly's
    DINOTransform as its LeJEPA benchmark builds it (crop scales 0.3-1 and 0.05-0.3, blur 0.5)."""
    model = build_method("lejepa", "data.name=stl10", "method_kwargs.n_local_views=2")[0]
    info = model.info
    theirs = DINOTransform(
        global_crop_size=96,
        local_crop_size=model.local_size,
        global_crop_scale=(0.3, 1),
        local_crop_scale=(0.05, 0.3),
        gaussian_blur=(0.5, 0.5, 0.5),
        n_local_views=2,
        normalize={"mean": list(info.mean), "std": list(info.std)},
    )
    assert model.local_size == round(96 * 96 / 224)
    recipes = model.augment.recipes
    assert len(recipes) == len(theirs.transforms) == 4
    for ours, view in zip(recipes, theirs.transforms, strict=True):
        mine = recipe_parameters(ours)
        for key, value in lightly_parameters(view).items():
            assert mine[key] == pytest.approx(value), key
        crop = next(s for s in view.transform.transforms if hasattr(s, "scale"))
        assert (ours.min_scale, ours.max_scale) == pytest.approx(crop.scale)
    assert [r.gaussian_blur for r in recipes] == [0.5] * 4


def test_syre_covers_backbone_and_projector_and_the_recipe_is_adamw() -> None:
    model = build()
    opt = model.cfg.optimizer
    assert (opt.name, opt.lr, opt.scale_lr, opt.weight_decay) == ("adamw", 5e-4, False, 0.05)
    parts = {name.split(".")[0] for name in model.syre.covered_names}
    assert parts == {"backbone", "projection_head"}
    assert "backbone.pos_embed" not in model.syre.covered_names  # timm's no_weight_decay


@pytest.mark.slow
def test_train_py_runs_lejepa_as_a_user_types_it(tmp_path: Path) -> None:
    done = run_train(
        "method=lejepa",
        "backbone.name=test_vit",
        "data.image_size=32",
        "trainer.max_steps=3",
        "data.train_subset=256",
        "data.test_subset=256",
        "data.batch_size=64",
        "eval.online_every_n_epochs=0",
        "eval.linear_probe=false",
        f"output_dir={tmp_path}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (metrics,) = tmp_path.glob("*/metrics.json")
    assert json.loads(metrics.read_text())["run"]["steps"] == 3
