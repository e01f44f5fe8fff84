"""Recipe settings of the optimizer: lr scaling by the recipe's reference batch, and weight
decay of biases and norm weights (lightly's CIFAR-10 script decays every parameter)."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.conftest import ROOT, build_method


@pytest.mark.parametrize(
    "method, extra, expected",
    [
        # solo-learn's VICReg: LARS 0.3 per 256 images, so 0.6 at 512 (not 0.3 x 512/128 = 1.2).
        ("vicreg", [], 0.3 * 512 / 256),
        # lightly's SGD recipes: 0.06 per 128 images.
        ("simclr", [], 0.06 * 512 / 128),
        ("simclr", ["optimizer.lr_reference_batch=256"], 0.06 * 512 / 256),
        ("vicreg", ["optimizer.scale_lr=false"], 0.3),
    ],
)
def test_lr_scales_by_the_recipes_reference_batch(
    method: str, extra: list[str], expected: float
) -> None:
    model, _ = build_method(method, "data.batch_size=512", *extra)
    assert model.learning_rate() == pytest.approx(expected)


def _config_lr(files: list[str], overrides: list[str]) -> tuple[float, int]:
    """The peak lr `SSLMethod.learning_rate` gives a config, and its batch (no model built)."""
    from types import SimpleNamespace

    from ssl_syre.config import load_config
    from ssl_syre.methods.base import SSLMethod

    cfg = load_config([ROOT / f for f in files] or None, overrides)
    batch = int(cfg.data.batch_size)
    run = SimpleNamespace(cfg=cfg, global_batch_size=lambda: batch)
    return SSLMethod.learning_rate(run), batch  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "files, overrides, base, reference",
    [
        # MAE (PRETRAIN.md, main_pretrain.py): blr 1.5e-4 x batch / 256.
        (["configs/data/cifar10.yaml", "configs/method/mae.yaml"], [], 1.5e-4, 256),
        ([], ["method=mae", "backbone.name=test_vit"], 1.5e-4, 256),  # the method's defaults
        (["configs/mae_fashion_mnist.yaml"], [], 1.5e-3, 256),  # 10x, for a short run
        # MoCo v3 (solo-learn CIFAR): LARS 0.3 x batch / 256.
        (["configs/mocov3_cifar10.yaml"], [], 0.3, 256),
        (["configs/data/cifar10.yaml", "configs/method/mocov3.yaml"], [], 0.3, 256),
        # iBOT (lightly's ViT benchmark): 5e-4 x batch / 256.
        (["configs/data/cifar10.yaml", "configs/method/ibot.yaml"], [], 5e-4, 256),
    ],
)
@pytest.mark.parametrize("batch", [None, 96])
def test_recipe_configs_run_their_sources_lr(
    files: list[str], overrides: list[str], base: float, reference: int, batch: int | None
) -> None:
    """Each config states its lr as its source does (base lr per reference batch) and runs
    base x batch / reference at its own batch and at another."""
    extra = [f"data.batch_size={batch}"] if batch else []
    lr, used = _config_lr(files, [*overrides, *extra])
    assert lr == pytest.approx(base * used / reference, rel=1e-12)


def test_lr_reference_batch_must_be_positive() -> None:
    from ssl_syre.config import load_config
    from ssl_syre.errors import UserError

    with pytest.raises(UserError, match="optimizer.lr_reference_batch"):
        load_config(None, ["optimizer.lr_reference_batch=0"])


def _groups_by_parameter(model) -> dict[str, dict]:
    optimizer = model.configure_optimizers()
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    return {name: group_of[id(p)] for name, p in model.named_parameters() if id(p) in group_of}


@pytest.mark.parametrize("enabled", ["true", "false"])
def test_decay_norm_and_bias_gives_biases_and_norms_the_plain_decay(enabled: str) -> None:
    common = ["optimizer.scheduler=constant", f"syre.enabled={enabled}", "syre.parts=[backbone]"]
    default, _ = build_method("simclr", *common)
    decayed, _ = build_method("simclr", "optimizer.decay_norm_and_bias=true", *common)
    before, after = _groups_by_parameter(default), _groups_by_parameter(decayed)
    one_d = [name for name, p in decayed.named_parameters() if p.ndim == 1]
    assert any(".bn" in name or "norm" in name for name in one_d)
    assert any(name.endswith(".bias") for name in one_d)
    for name in one_d:
        assert before[name]["weight_decay"] == 0.0, name
        assert after[name]["name"] == "decay" and after[name]["weight_decay"] == 5e-4, name
    # The covered weights stay with SyRe (decay 0 in their group) and the uncovered >= 2-D
    # weights (the head, outside syre.parts) keep their plain decay: only 1-D tensors moved.
    for name, group in before.items():
        if name not in one_d:
            assert after[name]["name"] == group["name"], name
    assert set(decayed.syre.covered_names) == set(default.syre.covered_names)


def test_decay_norm_and_bias_leaves_no_weight_decay_names_alone() -> None:
    model, _ = build_method(
        "simclr",
        "backbone.name=test_vit",
        "optimizer.decay_norm_and_bias=true",
        "optimizer.scheduler=constant",
    )
    groups = _groups_by_parameter(model)
    assert groups["backbone.pos_embed"]["weight_decay"] == 0.0
    assert groups["backbone.cls_token"]["weight_decay"] == 0.0
    assert groups["backbone.norm.weight"]["weight_decay"] == 5e-4


def _train(model, optimizer, steps: int = 3) -> None:
    generator = torch.Generator().manual_seed(0)
    size = model.info.image_size
    for _ in range(steps):
        views = [torch.randn(16, 1, size, size, generator=generator) for _ in range(2)]
        optimizer.zero_grad()
        model.training_loss(views).backward()
        optimizer.step()


def test_decay_norm_and_bias_off_arm_is_lightlys_sgd_on_every_parameter() -> None:
    """syre.enabled=false, coupled, with biases and norms decayed: torch SGD with
    weight_decay on all parameters (lightly's CIFAR-10 optimizer), bit for bit."""
    model, cfg = build_method(
        "simclr",
        "optimizer.decay_norm_and_bias=true",
        "syre.enabled=false",
        "syre.mode=coupled",
        "optimizer.weight_decay=0.05",  # large enough that a missed decay shows
        "optimizer.scheduler=constant",
    )
    reference = copy.deepcopy(model)
    params = [p for m in reference.trainable_parts().values() for p in m.parameters()]
    plain = torch.optim.SGD(params, lr=model.learning_rate(), momentum=0.9, weight_decay=0.05)
    _train(model, model.configure_optimizers())
    _train(reference, plain)
    for (name, ours), theirs in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(ours, theirs), name


@pytest.mark.parametrize("decay_norm_and_bias", ["true", "false"])
@pytest.mark.parametrize("mode", ["coupled", "decoupled"])
def test_syre_off_is_sigma0_zero_bit_for_bit(decay_norm_and_bias: str, mode: str) -> None:
    """The control arm: syre.enabled=false trains exactly as SyRe on with σ0 = 0, whether or
    not biases and norms decay, and SyRe on (σ0 = 1) differs from it."""
    common = [
        f"optimizer.decay_norm_and_bias={decay_norm_and_bias}",
        f"syre.mode={mode}",
        "optimizer.weight_decay=0.05",
        "optimizer.scheduler=constant",
    ]
    arms = {}
    for arm, setting in (("off", "syre.enabled=false"), ("sigma0=0", "syre.sigma0=0"), ("on", "")):
        torch.manual_seed(0)  # the same initial weights in every arm
        arms[arm] = build_method("simclr", *[s for s in (setting, *common) if s])[0]
    for model in arms.values():
        _train(model, model.configure_optimizers())
    off, zero, on = (dict(m.named_parameters()) for m in arms.values())
    for name in off:
        assert torch.equal(off[name], zero[name]), name
    assert any(not torch.equal(off[name], on[name]) for name in arms["on"].syre.covered_names)
