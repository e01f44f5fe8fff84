"""DINO: multi-crop views, the teacher's inputs and stop-gradient, the center, the frozen last
layer, the teacher's momentum under accumulation and the weight-decay schedule."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lightly.loss import DINOLoss
from lightly.transforms import DINOTransform
from lightly.utils.scheduler import cosine_schedule
from PIL import Image
from scipy.stats import ks_2samp
from torch import nn

from ssl_syre.data.augment import BatchAugment, ViewRecipe
from ssl_syre.errors import UserError
from ssl_syre.methods import METHODS
from ssl_syre.methods.dino import dino_view_kwargs
from tests.conftest import (
    build_method,
    check_prototype_koleo_knob,
    losses_on_fixed_views,
    train_in_process,
)
from tests.data.test_augment import lightly_parameters, recipe_parameters

pytestmark = pytest.mark.usefixtures("one_thread")

# Tiny DINO: 2 global crops of 16 px (digits at 16), 2 local ones of 8 px.
SMALL = ["method=dino", "method_kwargs.n_local_views=2", "method_kwargs.local_crop_size=8"]
# In-process training runs: no evaluation beyond one kNN, no export.
QUICK = [
    "eval.online_every_n_epochs=0",
    "eval.linear_probe=false",
    "eval.raw_pixel_baseline=false",
    "eval.knn_k=[5]",
    "export=false",
]


def build(*extra: str):
    return build_method("dino", *SMALL[1:], *extra)[0]


def uint8_batch(count: int = 8, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 1, 8, 8), dtype=torch.uint8, generator=generator)


def test_multi_crop_views_have_the_configured_sizes_on_both_paths() -> None:
    model = build("method_kwargs.n_local_views=3", "method_kwargs.local_crop_size=6")
    views = model.views((uint8_batch(), None), batch_idx=0)
    assert [tuple(v.shape[-2:]) for v in views] == [(16, 16)] * 2 + [(6, 6)] * 3
    assert all(v.shape[:2] == (8, 1) for v in views)
    transform = model.make_transform()
    assert isinstance(transform, DINOTransform)
    crops = transform(Image.new("L", (8, 8), color=128))
    assert [tuple(c.shape) for c in crops] == [(1, 16, 16)] * 2 + [(1, 6, 6)] * 3


def test_a_vit_takes_local_crops_rounded_to_its_patch() -> None:
    """test_vit cuts 16-px patches: 96/224 of 32 px rounds to one patch, and the ViT takes
    both sizes (dynamic_img_size)."""
    model = build_method("dino", "backbone.name=test_vit", "data.image_size=32")[0]
    assert model.local_size == 16 and model.backbone_kwargs["dynamic_img_size"] is True
    views = model.views((uint8_batch(4), None), batch_idx=0)
    assert {tuple(v.shape[-2:]) for v in views} == {(32, 32), (16, 16)}
    assert torch.isfinite(model.training_loss(views))
    assert not any(isinstance(m, nn.BatchNorm1d) for m in model.projection_head.modules())
    with pytest.raises(UserError, match="local_crop_size"):
        build_method(
            "dino",
            "backbone.name=test_vit",
            "data.image_size=32",
            "method_kwargs.local_crop_size=12",
        )


def test_bad_crop_scales_are_refused() -> None:
    with pytest.raises(UserError, match="local_crop_scale"):
        build("method_kwargs.local_crop_scale=[0.5,0.1]")


@pytest.mark.parametrize("overrides", [[], ["data.cj_strength=1.0", "data.min_scale=0.3"]])
@pytest.mark.parametrize("dataset", ["digits", "stl10"])
def test_recipes_match_lightlys_dino_transform_parameter_for_parameter(
    dataset: str, overrides: list[str]
) -> None:
    """Each device recipe is the matching view of lightly's DINOTransform, crop scale range
    and bicubic interpolation included (STL-10's 96 px keeps the blur on)."""
    model = build(f"data.name={dataset}", *overrides)
    transform = model.make_transform()
    recipes = model.augment.recipes
    assert len(recipes) == len(transform.transforms) == 4
    for ours, theirs in zip(recipes, transform.transforms, strict=True):
        expected = lightly_parameters(theirs)
        mine = recipe_parameters(ours)
        for key, value in expected.items():
            assert mine[key] == pytest.approx(value), key
        crop = next(s for s in theirs.transform.transforms if hasattr(s, "scale"))
        assert (ours.min_scale, ours.max_scale) == pytest.approx(crop.scale)
        assert ours.interpolation == crop.interpolation.value == "bicubic"
    if dataset == "stl10":
        assert [r.gaussian_blur for r in recipes] == [1.0, 0.1, 0.5, 0.5]
    assert [r.solarization_prob for r in recipes] == [0.0, 0.2, 0.0, 0.0]


def test_local_crop_areas_and_grey_frequency_match_lightly() -> None:
    """Ramps in x (red) and y (green): a view's red and green ranges give its crop's width
    and height, so the crop areas of local views (scale 0.05-0.4) compare as distributions."""
    size, count = 32, 600
    ramp = (np.arange(size) + 0.5) / size
    pixels = np.zeros((size, size, 3), dtype=np.uint8)
    pixels[..., 0] = np.round(255 * ramp)[None, :]
    pixels[..., 1] = np.round(255 * ramp)[:, None]
    settings = {
        "global_crop_size": size,
        "local_crop_size": 16,
        "n_local_views": 1,
        "cj_prob": 0.0,
        "gaussian_blur": (0.0, 0.0, 0.0),
        "normalize": None,
    }
    local_view = DINOTransform(**settings, random_gray_scale=0.0).transforms[2]
    torch.manual_seed(0)
    theirs = torch.stack([local_view(Image.fromarray(pixels)) for _ in range(count)])
    recipe = ViewRecipe.from_lightly(
        type(local_view), **dino_view_kwargs({**settings, "random_gray_scale": 0.0})[2]
    )
    batch = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).expand(count, -1, -1, -1)
    ours = BatchAugment([recipe])(batch.contiguous(), torch.Generator().manual_seed(1))[0]

    def areas(views: torch.Tensor) -> np.ndarray:
        width = views[:, 0].amax(dim=(1, 2)) - views[:, 0].amin(dim=(1, 2))
        height = views[:, 1].amax(dim=(1, 2)) - views[:, 1].amin(dim=(1, 2))
        return (width * height).numpy()

    assert ours.shape == theirs.shape == (count, 3, 16, 16)
    assert ks_2samp(areas(ours), areas(theirs)).pvalue > 1e-3
    assert areas(ours).max() < 0.45 and areas(ours).mean() < 0.3  # local: at most 40%


def test_loss_falls_on_a_fixed_batch() -> None:
    model = build("optimizer.name=adamw", "optimizer.lr=0.003", "optimizer.scheduler=constant")
    optimizer = model.configure_optimizers()
    views = model.views((uint8_batch(16), None), batch_idx=0)
    losses = losses_on_fixed_views(model, views, steps=8, optimizer=optimizer)
    assert losses[-1] < losses[0] - 0.05, losses


def test_center_moves_by_its_momentum_toward_the_teachers_mean() -> None:
    model = build()
    views = model.views((uint8_batch(), None), batch_idx=0)
    assert not model.criterion.center.any()
    teacher = torch.stack(model.teacher(views[:2]))
    model.training_loss(views)
    momentum = model.kwargs.center_momentum
    # The teacher has moved by one EMA step inside training_loss: recompute its outputs.
    teacher = torch.stack(model.teacher(views[:2]))
    expected = (1 - momentum) * teacher.mean(dim=(0, 1))
    torch.testing.assert_close(model.criterion.center.flatten(), expected)
    assert model.criterion.center.abs().sum() > 0


def test_the_teacher_sees_the_global_crops_only_and_the_student_all() -> None:
    model = build()
    seen: dict[str, list[torch.Tensor]] = {"teacher": [], "student": []}
    model.backbone_momentum.register_forward_hook(lambda m, i, o: seen["teacher"].append(i[0]))
    model.backbone.register_forward_hook(lambda m, i, o: seen["student"].append(i[0]))
    views = model.views((uint8_batch(), None), batch_idx=0)
    model.training_loss(views)
    assert len(seen["teacher"]) == 1
    assert torch.equal(seen["teacher"][0], torch.cat(views[:2]))
    assert [tuple(x.shape) for x in seen["student"]] == [(16, 1, 16, 16), (16, 1, 8, 8)]
    assert torch.equal(torch.cat(seen["student"][1].chunk(2)), torch.cat(views[2:]))


def test_stop_gradient_keeps_the_teacher_branch_out_of_the_gradient() -> None:
    """With the teacher sharing the student's weights (momentum 0), the gradient must equal
    the one with the teacher's outputs as constants; without the stop-gradient it does not."""
    model = build("method_kwargs.momentum_start=1.0")  # the EMA step then leaves weights be
    model.backbone_momentum, model.projection_head_momentum = model.backbone, model.projection_head
    views = model.views((uint8_batch(), None), batch_idx=0)
    reference = copy.deepcopy(model)

    def grads(net: nn.Module) -> list[torch.Tensor]:
        return [p.grad.clone() for p in net.backbone.parameters() if p.grad is not None]

    model.training_loss(views).backward()

    def loss_with(teacher_out: list[torch.Tensor]) -> torch.Tensor:
        criterion = DINOLoss(output_dim=reference.kwargs.projection_output_dim)
        return criterion(teacher_out, reference.student(views))

    out = reference.projection_head(reference.backbone(torch.cat(views[:2]))).chunk(2)
    loss_with([o.detach() for o in out]).backward()
    detached = grads(reference)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads(model), detached, strict=True))
    reference.zero_grad()
    out = reference.projection_head(reference.backbone(torch.cat(views[:2]))).chunk(2)
    loss_with(list(out)).backward()  # no stop-gradient: the test above would see this
    assert not all(
        torch.allclose(a, b, atol=1e-6) for a, b in zip(grads(reference), detached, strict=True)
    )


def test_teacher_is_frozen_outside_syre_and_follows_by_ema() -> None:
    model = build()
    assert set(model.trainable_parts()) == {"backbone", "projection_head"}
    assert not any(p.requires_grad for p in model.projection_head_momentum.parameters())
    assert not any("momentum" in name for name in model.syre.covered_names)
    with torch.no_grad():
        for param in model.backbone.parameters():
            param.add_(torch.randn_like(param))
    before = [p.clone() for p in model.backbone_momentum.parameters()]
    m = model.momentum()
    model.training_loss(model.views((uint8_batch(), None), batch_idx=0))
    for old, target, online in zip(
        before, model.backbone_momentum.parameters(), model.backbone.parameters(), strict=True
    ):
        torch.testing.assert_close(target, m * old + (1 - m) * online)


def test_last_layer_takes_no_step_while_frozen() -> None:
    model = build("optimizer.name=adamw", "optimizer.scheduler=constant")
    optimizer = model.configure_optimizers()
    last = model.projection_head.last_layer.parametrizations.weight.original1
    before = last.detach().clone()
    first_layer = model.projection_head.layers[0].weight.detach().clone()
    model.training_loss(model.views((uint8_batch(), None), batch_idx=0)).backward()
    model.on_after_backward()  # epoch 0 < freeze_last_layer=1
    assert last.grad is None
    optimizer.step()
    assert torch.equal(last, before)  # no gradient step and no decay (SyRe skips it too)
    assert not torch.equal(model.projection_head.layers[0].weight, first_layer)


def test_momentum_updates_once_per_optimizer_step_under_accumulation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ssl_syre.methods import momentum

    calls: list[int] = []
    update_momentum = momentum.update_momentum

    def counting_update(model: nn.Module, model_ema: nn.Module, m: float) -> None:
        calls.append(1)
        return update_momentum(model, model_ema, m)

    monkeypatch.setattr(momentum, "update_momentum", counting_update)
    run_dir = train_in_process(
        tmp_path,
        *SMALL,
        "trainer.accumulate_grad_batches=2",
        "trainer.limit_train_batches=4",
        *QUICK,
    )
    steps = json.loads((run_dir / "metrics.json").read_text())["run"]["steps"]
    assert steps == 2  # 4 micro-batches, 2 optimizer steps
    assert len(calls) == 2 * steps  # backbone and head, once per step each


def test_decay_follows_the_cosine_schedule_at_every_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SyRe's γ and the plain decay group's weight_decay are the schedule's value at each
    optimizer step, and metrics.json records start, end and the last γ."""
    from ssl_syre.syre import SyRe

    seen: list[tuple[float, float]] = []
    apply = SyRe.apply

    def recording_apply(self: SyRe, optimizer: torch.optim.Optimizer) -> None:
        plain = [g["weight_decay"] for g in optimizer.param_groups if g["name"] == "decay"]
        seen.append((self.weight_decay, plain[0]))
        apply(self, optimizer)

    monkeypatch.setattr(SyRe, "apply", recording_apply)
    run_dir = train_in_process(
        tmp_path,
        *SMALL,
        "optimizer.name=adamw",
        "optimizer.weight_decay=0.04",
        "optimizer.weight_decay_end=0.4",
        "syre.parts=[backbone]",  # the head then decays in the plain "decay" group
        "trainer.limit_train_batches=5",
        "trainer.max_epochs=2",
        *QUICK,
    )
    expected = [cosine_schedule(step, 10, 0.04, 0.4) for step in range(10)]
    assert [gamma for gamma, _ in seen] == pytest.approx(expected)
    assert [plain for _, plain in seen] == pytest.approx(expected)
    assert seen[0][0] == pytest.approx(0.04) and seen[-1][0] == pytest.approx(0.4)
    decay = json.loads((run_dir / "metrics.json").read_text())["run"]["decay"]
    assert decay["weight_decay"] == 0.04 and decay["weight_decay_end"] == 0.4
    assert decay["weight_decay_last"] == pytest.approx(0.4)


def test_a_decay_end_with_a_separate_syre_gamma_is_refused() -> None:
    with pytest.raises(UserError, match="syre.weight_decay"):
        build("optimizer.weight_decay_end=0.4", "syre.weight_decay=0.1")
    with pytest.raises(UserError, match="weight_decay_end"):
        build("optimizer.weight_decay_end=-1")


def test_syre_off_equals_sigma0_zero_bit_for_bit(tmp_path: Path) -> None:
    """The off arm differs from SyRe only in the anchor, under AdamW's scheduled decay."""
    quick = [
        *SMALL,
        "optimizer.name=adamw",
        "optimizer.weight_decay=0.04",
        "optimizer.weight_decay_end=0.4",
        *QUICK,
    ]

    def weights(*overrides: str) -> dict[str, torch.Tensor]:
        run_dir = train_in_process(tmp_path / "_".join(overrides), *quick, *overrides)
        checkpoint = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
        return checkpoint["state_dict"]

    off = weights("syre.enabled=false")
    zero = weights("syre.sigma0=0.0")
    anchored = weights("syre.sigma0=1.0")
    assert off.keys() == zero.keys()
    assert all(torch.equal(off[name], zero[name]) for name in off)
    covered = [name for name in off if name.startswith("backbone.") and off[name].ndim >= 2]
    assert covered and not all(torch.equal(off[name], anchored[name]) for name in covered)


@pytest.mark.slow
def test_train_py_runs_dino_on_a_vit_at_32_px(tmp_path: Path) -> None:
    run_dir = train_in_process(
        tmp_path, "method=dino", "backbone.name=test_vit", "data.image_size=32", *QUICK
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["run"]["method"] == "dino" and metrics["run"]["steps"] == 3


def test_head_computes_lightlys_weight_normalized_layer_and_deep_copies() -> None:
    """The parametrized last layer is lightly's w = g·v/‖v‖ with g fixed at 1, and the
    model deep-copies (lightly's deprecated weight_norm does not)."""
    from lightly.models.modules import DINOProjectionHead

    from ssl_syre.methods.dino import parametrize_last_layer

    torch.manual_seed(0)
    with pytest.warns(FutureWarning):
        theirs = DINOProjectionHead(8, 16, 4, 10)
    ours = DINOProjectionHead(8, 16, 4, 10)
    ours.load_state_dict(theirs.state_dict())
    parametrize_last_layer(ours, norm_last_layer=True)
    x = torch.randn(5, 8)
    torch.testing.assert_close(ours(x), theirs(x))
    weight = ours.last_layer.weight
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(10))
    assert not ours.last_layer.parametrizations.weight.original0.requires_grad
    copy.deepcopy(build())


def test_dino_is_registered() -> None:
    assert METHODS["dino"].name == "dino"


def test_the_head_runs_once_on_all_crops_features() -> None:
    """As the paper's MultiCropWrapper: one backbone pass per crop size, one head pass on all
    crops (a BatchNorm head normalizes with every crop's statistics)."""
    model = build("method_kwargs.batch_norm=true")
    seen: list[tuple[int, ...]] = []
    model.projection_head.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    views = model.views((uint8_batch(), None), batch_idx=0)
    outputs = model.student(views)
    assert seen == [(8 * len(views), model.feature_dim)]
    assert [tuple(o.shape) for o in outputs] == [(8, model.kwargs.projection_output_dim)] * 4


def test_teacher_temperature_warms_up_from_0_04_to_0_07_over_30_epochs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The paper's schedule, one value per epoch, read from the trainer's epoch (a resumed run
    continues it)."""
    model = build()
    assert model.kwargs.teacher_temp == 0.07 and model.kwargs.warmup_teacher_temp == 0.04
    temperatures: list[float] = []
    forward = model.criterion.forward

    def recording(teacher_out, student_out, epoch=None, teacher_temp=None):
        schedule = model.criterion.teacher_temp_schedule
        temperatures.append(
            float(schedule[epoch]) if epoch < len(schedule) else model.criterion.teacher_temp
        )
        return forward(teacher_out, student_out, epoch=epoch, teacher_temp=teacher_temp)

    model.criterion.forward = recording
    views = model.views((uint8_batch(), None), batch_idx=0)
    for epoch in (0, 15, 29, 40):
        monkeypatch.setattr(type(model), "current_epoch", property(lambda self, e=epoch: e))
        model.training_loss(views)
    assert temperatures == pytest.approx([0.04, 0.04 + 0.03 * 15 / 29, 0.07, 0.07])


@pytest.mark.parametrize("clip", [3.0, 0.0])
def test_gradients_are_clipped_per_parameter(clip: float) -> None:
    """clip_grad (the paper's 3.0 by default) bounds each parameter's gradient norm on its
    own, as the DINO code's clip_gradients; 0 leaves the gradients be."""
    model = build(f"method_kwargs.clip_grad={clip}")
    params = [p for m in model.trainable_parts().values() for p in m.parameters()]
    torch.manual_seed(0)
    for index, param in enumerate(params):
        param.grad = torch.randn_like(param) * (10.0 if index % 2 else 1e-3)
    before = [p.grad.clone() for p in params]
    model.configure_gradient_clipping(torch.optim.SGD(params, lr=0.1))
    for old, param in zip(before, params, strict=True):
        norm = float(old.norm())
        if clip and norm > clip:
            torch.testing.assert_close(param.grad, old * clip / (norm + 1e-6))
        else:
            assert torch.equal(param.grad, old)
    assert any(float(old.norm()) > 3.0 for old in before)


@pytest.mark.slow
def test_the_vit_recipe_file_builds_the_papers_vit_s_recipe() -> None:
    """configs/dino_vit_cifar10.yaml: a ViT-S with 4-px patches, no BatchNorm in the head,
    AdamW with the paper's schedules, and a finite loss on multi-crop views."""
    from ssl_syre.config import load_config
    from ssl_syre.data import data_info

    cfg = load_config(
        [str(Path(__file__).resolve().parents[2] / "configs/dino_vit_cifar10.yaml")],
        ["method_kwargs.projection_output_dim=1024", "method_kwargs.n_local_views=2"],
    )
    model = METHODS["dino"](cfg, data_info(cfg.data))
    assert model.patch_size() == 4 and model.local_size == 16
    assert not any(isinstance(m, nn.BatchNorm1d) for m in model.projection_head.modules())
    k = model.kwargs
    assert (k.warmup_teacher_temp, k.teacher_temp, k.warmup_teacher_temp_epochs) == (0.04, 0.07, 30)
    assert (k.clip_grad, k.freeze_last_layer, k.momentum_start) == (3.0, 1, 0.996)
    opt = cfg.optimizer
    assert (opt.name, opt.weight_decay, opt.weight_decay_end, opt.warmup_epochs) == (
        "adamw",
        0.04,
        0.4,
        10,
    )
    assert model.learning_rate() == pytest.approx(0.0005 * cfg.data.batch_size / 256)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.isfinite(model.training_loss(model.views((images, None), batch_idx=0)))


@pytest.mark.parametrize("layers", [2, 3, 4])
def test_projection_layers_sets_the_heads_depth(layers: int) -> None:
    """2 is lightly's CIFAR-10 head (Linear-BN-GELU, Linear to the bottleneck); 3 is lightly's
    DINOProjectionHead, the paper's; every depth keeps DINOProjectionHead's init and
    the teacher is the student's copy."""
    model = build(f"method_kwargs.projection_layers={layers}")
    head = model.projection_head
    kinds = [type(m) for m in head.layers]
    expected = [nn.Linear, nn.BatchNorm1d, nn.GELU] * (layers - 1) + [nn.Linear]
    assert kinds == expected
    linears = [m for m in head.layers if isinstance(m, nn.Linear)]
    assert linears[0].in_features == model.feature_dim
    assert linears[-1].out_features == model.kwargs.bottleneck_dim
    for linear in linears:  # DINOProjectionHead._init_weights: normal, std 0.02, bias 0
        assert 0.018 < linear.weight.std() < 0.022
        assert linear.bias is None or torch.count_nonzero(linear.bias) == 0
    teacher = [type(m) for m in model.projection_head_momentum.layers]
    assert teacher == expected
    out = head(torch.randn(4, model.feature_dim))
    assert out.shape == (4, model.kwargs.projection_output_dim)


def test_prototype_koleo_weight_adds_its_term_and_zero_changes_nothing() -> None:
    """Govindarajan et al.'s KoLeo on the prototypes, shared with iBOT; refused below 0."""
    views = build().views((uint8_batch(8), None), batch_idx=0)
    prototype = "projection_head.last_layer.parametrizations.weight.original1"
    check_prototype_koleo_knob(build, views, prototype)
    with pytest.raises(UserError, match="prototype_koleo_weight' of dino must be in"):
        build("method_kwargs.prototype_koleo_weight=-0.1")
