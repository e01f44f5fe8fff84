"""Each method builds from config, trains a step, and hands SyRe the right parameters."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from ssl_syre.data import data_info
from ssl_syre.errors import UserError
from ssl_syre.methods import METHODS
from tests.conftest import build_method


def build(method: str, *extra: str):
    return build_method(method, *extra)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_loss_is_finite_and_trains_every_head(method: str) -> None:
    model, _ = build(method)
    info = model.info
    views = [torch.randn(8, info.in_chans, info.image_size, info.image_size) for _ in range(2)]
    loss = model.training_loss(views)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for part, module in model.trainable_parts().items():
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), part


@pytest.mark.parametrize("method", sorted(METHODS))
def test_syre_covers_configured_parts_only(method: str) -> None:
    model, _ = build(method, "syre.parts=[backbone]")
    covered = model.syre.covered_names
    assert covered and all(name.startswith("backbone.") for name in covered)
    model, _ = build(method)
    parts = {name.split(".")[0] for name in model.syre.covered_names}
    assert parts == set(model.trainable_parts())
    assert not any("momentum" in name for name in model.syre.covered_names)


@pytest.mark.parametrize("method", ["byol", "mocov2", "mocov3"])
def test_momentum_copy_is_frozen_and_follows(method: str) -> None:
    model, _ = build(method)
    assert not any(p.requires_grad for p in model.backbone_momentum.parameters())
    assert "backbone_momentum" not in model.trainable_parts()
    pairs = [
        (model.backbone, model.backbone_momentum),
        (model.projection_head, model.projection_head_momentum),
    ]
    with torch.no_grad():  # move the online networks away from their copies
        for online, _ in pairs:
            for param in online.parameters():
                param.add_(torch.randn_like(param))
    before = [[p.clone() for p in target.parameters()] for _, target in pairs]
    m = model.momentum()
    assert 0 < m < 1
    views = [torch.randn(4, 1, model.info.image_size, model.info.image_size) for _ in range(2)]
    model.training_loss(views)
    for (online, target), old in zip(pairs, before, strict=True):
        for online_p, target_p, old_p in zip(
            online.parameters(), target.parameters(), old, strict=True
        ):
            # The EMA step: target <- m * target + (1 - m) * online.
            torch.testing.assert_close(target_p, m * old_p + (1 - m) * online_p)
            assert not torch.equal(target_p, old_p)


@pytest.mark.parametrize("method", ["byol", "mocov2", "mocov3"])
def test_momentum_updates_once_per_optimizer_step_under_accumulation(
    method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    from ssl_syre.methods import momentum
    from tests.conftest import train_in_process

    calls: list[int] = []

    def counting_update(model: nn.Module, model_ema: nn.Module, m: float) -> None:
        calls.append(1)
        return update_momentum(model, model_ema, m)

    update_momentum = momentum.update_momentum
    monkeypatch.setattr(momentum, "update_momentum", counting_update)
    run_dir = train_in_process(
        tmp_path,
        f"method={method}",
        "trainer.accumulate_grad_batches=2",
        "trainer.limit_train_batches=4",
        "eval.online_every_n_epochs=0",
        "eval.linear_probe=false",
        "eval.raw_pixel_baseline=false",
        "eval.knn_k=[5]",
        "export=false",
    )
    steps = json.loads((run_dir / "metrics.json").read_text())["run"]["steps"]
    assert steps == 2  # 4 micro-batches, 2 optimizer steps
    assert len(calls) == 2 * steps  # backbone and projection head, once per step each


@pytest.mark.parametrize("mode", ["decoupled", "coupled"])
def test_syre_off_is_the_same_update_with_the_anchor_at_zero(mode: str) -> None:
    """syre.enabled=false: SyRe's own update, same coverage and mode, with θ0 = 0."""
    on, _ = build("simclr", f"syre.mode={mode}")
    off, _ = build(
        "simclr",
        "syre.enabled=false",
        f"syre.mode={mode}",
        "syre.d_eps=0.1",
        "optimizer.scheduler=constant",  # configure_optimizers then needs no Trainer
    )
    assert off.syre is not None and off.syre.zero_anchors and off.syre.d_diagonal is None
    assert off.syre.mode == mode and off.syre.weight_decay == on.syre.weight_decay
    assert off.syre.covered_names == on.syre.covered_names
    assert all(not anchor.any() for anchor in off.syre.anchors.values())
    assert off.decay_summary()["toward"] == "zero" and on.decay_summary()["toward"] == "anchor"
    optimizer = off.configure_optimizers()
    groups = {group["name"]: group for group in optimizer.param_groups}
    # Every covered weight decays through SyRe (weight_decay=0 in its group), none through
    # torch's own weight_decay, which would be coupled whatever syre.mode says.
    assert groups["syre"]["weight_decay"] == 0.0
    assert len(groups["syre"]["params"]) == len(off.syre.covered_names)
    assert all(group["weight_decay"] == 0.0 for group in optimizer.param_groups)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_transform_gives_the_method_views(method: str) -> None:
    from PIL import Image

    model, cfg = build(method)
    transform = METHODS[method].build_transform(model.info, cfg.data)
    views = transform(Image.new("L", (8, 8), color=128))
    # Two or more (joint-embedding methods, multi-crop); MAE's one view is its only input.
    expected = 1 if method == "mae" else 2
    assert len(views) == len(METHODS[method].view_recipes(model.info, cfg.data)) >= expected
    assert views[0].shape == (1, model.info.image_size, model.info.image_size)


@pytest.mark.parametrize("enabled", ["true", "false"])
def test_vit_no_weight_decay_names_get_neither_decay_nor_an_anchor(enabled: str) -> None:
    """timm's ViT says pos_embed and cls_token take no decay; the optimizer groups agree."""
    model, _ = build(
        "simclr",
        "backbone.name=test_vit",
        f"syre.enabled={enabled}",
        "optimizer.scheduler=constant",
    )
    exempt = {f"backbone.{name}" for name in model.backbone.no_weight_decay()}
    params = dict(model.named_parameters())
    exempt = {name for name in exempt if name in params}
    assert exempt >= {"backbone.pos_embed", "backbone.cls_token"}
    assert not exempt & set(model.syre.covered_names)
    optimizer = model.configure_optimizers()
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    for name in exempt:
        assert group_of[id(params[name])]["weight_decay"] == 0.0, name
        assert group_of[id(params[name])]["name"] == "no_decay", name
    # With SyRe on every part, nothing is left for a plain-decay group.
    assert all(group["name"] != "decay" for group in optimizer.param_groups)


@pytest.mark.parametrize("optimizer_name", ["sgd", "lars", "adamw"])
@pytest.mark.parametrize("enabled", ["true", "false"])
def test_configure_optimizers_steps_every_optimizer(optimizer_name: str, enabled: str) -> None:
    """Each optimizer trains every trainable parameter once, covered weights decayed by SyRe only."""
    model, _ = build(
        "byol",
        f"optimizer.name={optimizer_name}",
        f"syre.enabled={enabled}",
        "syre.mode=coupled",
        "optimizer.scheduler=constant",
    )
    optimizer = model.configure_optimizers()
    held = [p for group in optimizer.param_groups for p in group["params"]]
    trainable = [p for m in model.trainable_parts().values() for p in m.parameters()]
    assert len(held) == len({id(p) for p in held}) == len(trainable)
    assert {id(p) for p in held} == {id(p) for p in trainable}
    covered = {id(p) for p in model.syre.covered_parameters()}
    for group in optimizer.param_groups:
        if any(id(p) in covered for p in group["params"]):
            assert group["weight_decay"] == 0.0  # SyRe's decay, not the optimizer's
    views = [torch.randn(8, 1, model.info.image_size, model.info.image_size) for _ in range(2)]
    loss = model.training_loss(views)  # BYOL's EMA update happens here, before the snapshot
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    loss.backward()
    optimizer.step()
    moved = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert any(name.startswith("backbone.") for name in moved)
    assert not any("momentum" in name for name in moved)  # the optimizer leaves BYOL's copies
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_lars_step_on_covered_weights_is_lightly_lars_with_plain_decay() -> None:
    """The off arm under LARS (θ0 = 0) takes lightly's LARS step with weight_decay=γ, bit for bit."""
    from lightly.utils.lars import LARS

    from ssl_syre.syre import syre_param_groups

    model, cfg = build(
        "simclr",
        "optimizer.name=lars",
        "syre.enabled=false",
        "syre.mode=coupled",
        "optimizer.weight_decay=0.05",
        "optimizer.scheduler=constant",
    )
    reference = copy.deepcopy(model)
    named = [
        (f"{part}.{name}", p)
        for part, module in reference.trainable_parts().items()
        for name, p in module.named_parameters()
    ]
    plain = LARS(
        syre_param_groups(reference, None, 0.05, parameters=named),
        lr=model.learning_rate(),
        momentum=cfg.optimizer.momentum,
    )
    optimizer = model.configure_optimizers()
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        size = model.info.image_size
        views = [torch.randn(16, 1, size, size, generator=generator) for _ in range(2)]
        for net, opt in ((model, optimizer), (reference, plain)):
            opt.zero_grad()
            net.training_loss(views).backward()
            opt.step()
    covered = set(model.syre.covered_names)
    assert covered
    for (name, ours), theirs in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(ours, theirs), name


class ConstantPredictor(nn.Module):
    """A predictor whose output ignores its input: only the target branch can then reach the
    backbone, and the stop-gradient must stop it there."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.randn(dim, generator=torch.Generator().manual_seed(0)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.value.expand(len(z), -1)


@pytest.mark.parametrize("method", ["simsiam", "byol"])
def test_stop_gradient_keeps_the_target_branch_out_of_the_gradient(method: str) -> None:
    model, _ = build(method)
    model.prediction_head = ConstantPredictor(model.kwargs.projection_output_dim)
    size = model.info.image_size
    views = [
        torch.randn(8, 1, size, size, generator=torch.Generator().manual_seed(i)) for i in (1, 2)
    ]
    model.training_loss(views).backward()
    assert model.prediction_head.value.grad is not None and model.prediction_head.value.grad.any()
    for part in ("backbone", "projection_head", "backbone_momentum", "projection_head_momentum"):
        module = getattr(model, part, None)
        if module is not None:
            grads = [p.grad for p in module.parameters()]
            assert all(g is None or not g.any() for g in grads), part


def test_a_config_saved_before_newer_keys_still_builds_the_model() -> None:
    """Checkpoints keep the config they were trained with; keys added since take defaults."""
    from omegaconf import OmegaConf

    _, cfg = build("simclr")
    saved = OmegaConf.to_container(cfg, resolve=True)
    del saved["syre"]["anchor_scale"], saved["data"]["augment_on"]  # keys of 2026-11-27
    model = METHODS["simclr"](saved, data_info(cfg.data))
    assert model.syre.anchor_scale == "fan_in" and model.cfg.data.augment_on == "device"


def test_syre_cover_conv_linear_is_every_conv_and_linear_weight_and_bias() -> None:
    """The paper's notebook: every conv/linear weight and bias carries an anchor, no norm layer."""
    model, _ = build_method(
        "simclr",
        "method_kwargs.projection_batch_norm=false",  # linear layers with biases
        "syre.cover=conv_linear",
        "syre.anchor_scale=absolute",
        "syre.sigma0=0.01",
    )
    expected = {
        f"{part}.{module_name}.{name}"
        for part in ("backbone", "projection_head")
        for module_name, module in getattr(model, part).named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear))
        for name, _ in module.named_parameters(recurse=False)
    }
    assert any(name.endswith(".bias") for name in expected)
    assert set(model.syre.covered_names) == expected
    default, _ = build_method("simclr", "method_kwargs.projection_batch_norm=false")
    assert set(default.syre.covered_names) == {n for n in expected if n.endswith(".weight")}
    with pytest.raises(UserError, match="syre.cover"):
        build_method("simclr", "syre.cover=everything")


def test_syre_on_with_nothing_to_cover_is_refused() -> None:
    """Parts whose weights are all 1-D (left out unless syre.include_1d): SyRe would be off in
    a run labelled SyRe, so building the model refuses it."""
    from ssl_syre.errors import UserError
    from ssl_syre.methods.simclr import SimCLR

    class NormOnly(SimCLR):
        parts = ("projection_head",)

        def build_heads(self, feature_dim: int) -> None:
            super().build_heads(feature_dim)
            self.projection_head = nn.BatchNorm1d(feature_dim)

    _, cfg = build("simclr")
    with pytest.raises(UserError, match="covers no weight of simclr"):
        NormOnly(cfg, data_info(cfg.data))
    cfg.syre.include_1d = True
    assert NormOnly(cfg, data_info(cfg.data)).syre.covered_names
