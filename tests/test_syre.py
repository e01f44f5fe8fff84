"""Tests of SyRe: the update equals the paper's loss, anchors, coverage, refusals, state, toy."""

from __future__ import annotations

import copy
import importlib.util
import io
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from ssl_syre.syre import SyRe, syre_param_groups

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_thread")


def mlp(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(6, 12),
        nn.LayerNorm(12),
        nn.Tanh(),
        nn.Linear(12, 12),
        nn.Tanh(),
        nn.Linear(12, 3),
    ).to(dtype)


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(32, 6, generator=generator), torch.randn(32, 3, generator=generator)


def sgd_with_syre(model: nn.Module, syre: SyRe, lr: float, **kwargs: float) -> torch.optim.SGD:
    optimizer = torch.optim.SGD(syre_param_groups(model, syre, weight_decay=0.0), lr=lr, **kwargs)
    syre.attach(optimizer)
    return optimizer


def zero_loss_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """A step whose loss gradient is exactly zero but present (not None)."""
    optimizer.zero_grad()
    (0.0 * model(batch()[0]).sum()).backward()
    optimizer.step()


# ---------------------------------------------------------------- 1. the paper's loss


@pytest.mark.parametrize(
    "mode, d_eps, include_1d",
    [
        ("decoupled", 0.0, False),
        ("decoupled", 0.1, False),
        ("coupled", 0.0, False),
        ("coupled", 0.1, True),
        ("decoupled", 0.1, True),
    ],
)
def test_plain_sgd_equals_gradient_descent_on_the_paper_loss(
    mode: str, d_eps: float, include_1d: bool
) -> None:
    """w = θ + θ0 under SyRe + SGD follows GD on ℓ(θ + θ0) + γ/2·θᵀDθ computed by autograd."""
    lr, gamma, steps = 0.1, 0.5, 6  # a strong γ and a large σ0 so that every term shows
    model = mlp()
    reference = copy.deepcopy(model)
    syre = SyRe(
        model, weight_decay=gamma, sigma0=1.0, d_eps=d_eps, seed=3, mode=mode, include_1d=include_1d
    )
    optimizer = sgd_with_syre(model, syre, lr=lr)
    assert (syre.d_diagonal is not None) == (d_eps > 0)

    # The paper's parametrisation: trained θ, fixed θ0, the penalty written out.
    anchors = syre.anchors
    d_diagonal = syre.d_diagonal or {n: torch.ones_like(a) for n, a in anchors.items()}
    theta = {
        name: (p.detach() - anchors.get(name, 0.0)).clone().requires_grad_(True)
        for name, p in reference.named_parameters()
    }
    inputs, targets = batch()
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(inputs), targets).backward()
        optimizer.step()

        weights = {name: t + anchors.get(name, 0.0) for name, t in theta.items()}
        output = torch.func.functional_call(reference, weights, (inputs,))
        penalty = sum((d_diagonal[n] * theta[n] ** 2).sum() for n in syre.covered_names)
        loss = nn.functional.mse_loss(output, targets) + gamma / 2 * penalty
        grads = torch.autograd.grad(loss, list(theta.values()))
        with torch.no_grad():
            for t, g in zip(theta.values(), grads, strict=True):
                t -= lr * g

    for name, p in model.named_parameters():
        expected = theta[name].detach() + anchors.get(name, 0.0)
        torch.testing.assert_close(p.detach(), expected, atol=1e-6, rtol=0)
    # Anchors far above the tolerance, so decaying toward 0 instead could not pass.
    assert min(a.abs().max().item() for a in anchors.values()) > 0.1


def make_closure(
    model: nn.Module, optimizer: torch.optim.Optimizer, inputs: torch.Tensor, targets: torch.Tensor
) -> Callable[[], torch.Tensor]:
    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        return loss

    return closure


@pytest.mark.parametrize("mode", ["decoupled", "coupled"])
def test_closure_gives_the_same_step_as_no_closure(mode: str) -> None:
    """Lightning passes a closure that zeroes grads and runs backward inside step()."""
    inputs, targets = batch()
    results = []
    for use_closure in (False, True):
        model = mlp()
        syre = SyRe(model, weight_decay=0.3, sigma0=1.0, mode=mode)
        optimizer = sgd_with_syre(model, syre, lr=0.1, momentum=0.9)
        # Stale gradients, as Lightning leaves them between steps: the closure must win.
        nn.functional.mse_loss(model(inputs), targets).mul(5).backward()
        closure = make_closure(model, optimizer, inputs, targets)
        for _ in range(3):
            if use_closure:
                optimizer.step(closure)
            else:
                closure()
                optimizer.step()
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(results[0], results[1], atol=1e-7, rtol=0)


def test_zero_anchors_reproduce_torch_weight_decay() -> None:
    """σ0 = 0: coupled is SGD's weight_decay (with momentum), decoupled is AdamW's, bit for bit."""
    inputs, targets = batch()

    def train(model: nn.Module, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        for _ in range(5):
            optimizer.zero_grad()
            nn.functional.mse_loss(model(inputs), targets).backward()
            optimizer.step()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    def decayed_groups(model: nn.Module, gamma: float) -> list[dict]:
        return syre_param_groups(model, None, weight_decay=gamma)

    gamma = 0.2
    model = mlp()
    syre = SyRe(model, weight_decay=gamma, sigma0=0.0, mode="coupled")
    ours = train(model, sgd_with_syre(model, syre, lr=0.1, momentum=0.9, nesterov=True))
    model = mlp()
    torchs = train(
        model, torch.optim.SGD(decayed_groups(model, gamma), lr=0.1, momentum=0.9, nesterov=True)
    )
    assert torch.equal(ours, torchs)

    model = mlp()
    syre = SyRe(model, weight_decay=gamma, sigma0=0.0, mode="decoupled")
    optimizer = torch.optim.Adam(syre_param_groups(model, syre, 0.0), lr=0.01)
    syre.attach(optimizer)
    ours = train(model, optimizer)
    model = mlp()
    torchs = train(model, torch.optim.AdamW(decayed_groups(model, gamma), lr=0.01))
    assert torch.equal(ours, torchs)


# ---------------------------------------------------------------- 2. where the decay pulls


def test_zero_loss_converges_to_anchors_and_plain_decay_to_zero() -> None:
    model = mlp()
    syre = SyRe(model, weight_decay=1.0, sigma0=0.1)
    optimizer = sgd_with_syre(model, syre, lr=0.1)
    for _ in range(250):
        zero_loss_step(model, optimizer)
    params = dict(model.named_parameters())
    for name, anchor in syre.anchors.items():
        assert anchor.abs().max() > 1e-3
        torch.testing.assert_close(params[name].detach(), anchor, atol=1e-7, rtol=0)
    assert syre.distance_to_anchor()["all"] < 1e-6

    plain = mlp()
    optimizer = torch.optim.SGD(syre_param_groups(plain, None, weight_decay=1.0), lr=0.1)
    for _ in range(250):
        zero_loss_step(plain, optimizer)
    for name in syre.covered_names:
        assert dict(plain.named_parameters())[name].abs().max() < 1e-8


def test_parameters_without_gradient_are_skipped() -> None:
    for mode in ("decoupled", "coupled"):
        model = mlp()
        syre = SyRe(model, weight_decay=1.0, sigma0=0.1, mode=mode)
        optimizer = sgd_with_syre(model, syre, lr=0.1)
        before = model[5].weight.detach().clone()
        optimizer.zero_grad()
        model[:5](batch()[0]).sum().backward()  # the last layer gets no gradient
        optimizer.step()
        assert model[5].weight.grad is None
        torch.testing.assert_close(model[5].weight.detach(), before, atol=0, rtol=0)
        assert not torch.equal(model[3].weight.detach(), dict(mlp().named_parameters())["3.weight"])


# ---------------------------------------------------------------- 3. anchors


class Net(nn.Module):
    """Same parameter names as Swapped, registered in the other order."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(20, 30)
        self.head = nn.Conv2d(3, 8, 3)


class Swapped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3)
        self.encoder = nn.Linear(20, 30)


def test_same_seed_same_anchors_whatever_the_order_and_the_init() -> None:
    torch.manual_seed(0)
    first = SyRe(Net(), seed=7)
    torch.manual_seed(1)
    second = SyRe(Swapped().double(), seed=7)
    assert first.covered_names == ["encoder.weight", "head.weight"]
    assert second.covered_names == ["head.weight", "encoder.weight"]
    for name, anchor in first.anchors.items():
        assert torch.equal(anchor, second.anchors[name])
    other = SyRe(Net(), seed=8)
    for name, anchor in first.anchors.items():
        assert not torch.allclose(anchor, other.anchors[name])
    # Distinct names get distinct anchors, even with the same shape.
    twin = SyRe(nn.Sequential(nn.Linear(5, 5), nn.Linear(5, 5)), seed=7)
    assert not torch.allclose(twin.anchors["0.weight"], twin.anchors["1.weight"])


def test_anchor_and_d_statistics_and_global_rng_untouched() -> None:
    model = nn.Sequential(nn.Linear(1000, 400), nn.Conv2d(64, 64, 3), nn.BatchNorm2d(64))
    state = torch.random.get_rng_state()
    syre = SyRe(model, sigma0=0.1, d_eps=0.05, include_1d=True)
    assert torch.equal(torch.random.get_rng_state(), state)
    anchors = syre.anchors
    assert anchors["0.weight"].std().item() == pytest.approx(0.1 / 1000**0.5, rel=0.01)
    assert anchors["1.weight"].std().item() == pytest.approx(0.1 / (64 * 9) ** 0.5, rel=0.02)
    assert anchors["0.weight"].mean().abs().item() < 1e-4
    assert anchors["2.weight"].std().item() == pytest.approx(0.1, rel=0.3)  # 1-D: fan_in = 1
    d = syre.d_diagonal
    assert d is not None
    assert 0.95 - 1e-6 <= d["0.weight"].min().item() < 0.951
    assert 1.049 < d["0.weight"].max().item() <= 1.05 + 1e-6
    assert SyRe(model, sigma0=0.1).d_diagonal is None


def test_absolute_anchor_scale_is_the_papers_sigma0_for_every_layer() -> None:
    """anchor_scale="absolute": std sigma0 whatever the fan_in; same draws, rescaled."""
    model = nn.Sequential(nn.Linear(1000, 400), nn.Conv2d(64, 64, 3))
    absolute = SyRe(model, sigma0=0.01, anchor_scale="absolute")
    relative = SyRe(model, sigma0=0.01)
    for name, fan_in in (("0.weight", 1000), ("1.weight", 64 * 9)):
        assert absolute.anchors[name].std().item() == pytest.approx(0.01, rel=0.02)
        torch.testing.assert_close(absolute.anchors[name], relative.anchors[name] * fan_in**0.5)
    restored = SyRe(model, sigma0=0.5)
    restored.load_state_dict(absolute.state_dict())
    assert restored.anchor_scale == "absolute"
    assert torch.equal(restored.anchors["1.weight"], absolute.anchors["1.weight"])
    with pytest.raises(ValueError, match="anchor_scale"):
        SyRe(model, anchor_scale="relative")


# ---------------------------------------------------------------- 4. coverage


def test_coverage_convention() -> None:
    class WithTokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
            self.proj = nn.Linear(8, 8)
            self.norm = nn.LayerNorm(8)

        def no_weight_decay(self) -> set[str]:
            return {"pos_embed"}

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = WithTokens()
            self.projection_head = nn.Linear(8, 4)
            self.momentum_head = nn.Linear(8, 4)
            self.momentum_head.requires_grad_(False)

    model = Wrapper()
    assert SyRe(model).covered_names == ["backbone.proj.weight", "projection_head.weight"]
    assert SyRe(model, include_1d=True).covered_names == [
        "backbone.proj.weight",
        "backbone.proj.bias",
        "backbone.norm.weight",
        "backbone.norm.bias",
        "projection_head.weight",
        "projection_head.bias",
    ]
    # Top-level no_weight_decay() names are matched as given, like timm.
    assert SyRe(model.backbone).covered_names == ["proj.weight"]
    # parameters= narrows the candidates; the convention still applies to them.
    everything = SyRe(model, parameters=model.named_parameters())
    assert everything.covered_names == SyRe(model).covered_names
    head = SyRe(model, parameters=[("projection_head.weight", model.projection_head.weight)])
    assert head.covered_names == ["projection_head.weight"]
    assert list(head.covered_parameters()) == [model.projection_head.weight]


def test_param_groups() -> None:
    model = mlp()
    groups = syre_param_groups(model, None, weight_decay=5e-4)
    assert [(g["name"], g["weight_decay"], len(g["params"])) for g in groups] == [
        ("decay", 5e-4, 3),
        ("no_decay", 0.0, 5),
    ]
    syre = SyRe(model, parameters=[(n, p) for n, p in model.named_parameters() if n < "3"])
    groups = syre_param_groups(model, syre, weight_decay=5e-4)
    assert [(g["name"], g["weight_decay"], len(g["params"])) for g in groups] == [
        ("syre", 0.0, 1),
        ("decay", 5e-4, 2),
        ("no_decay", 0.0, 5),
    ]
    assert groups[0]["params"] == [model[0].weight]
    syre.attach(torch.optim.SGD(groups, lr=0.1))  # no double decay
    # A recipe that decays biases and norms: they join the plain decay, covered ones stay SyRe's.
    groups = syre_param_groups(model, syre, weight_decay=5e-4, decay_norm_and_bias=True)
    assert [(g["name"], g["weight_decay"], len(g["params"])) for g in groups] == [
        ("syre", 0.0, 1),
        ("decay", 5e-4, 7),
    ]
    syre_1d = SyRe(model, include_1d=True)
    groups = syre_param_groups(model, syre_1d, weight_decay=5e-4, decay_norm_and_bias=True)
    assert [(g["name"], len(g["params"])) for g in groups] == [("syre", 8)]


# ---------------------------------------------------------------- 5. refusals


def test_double_decay_refused() -> None:
    model = mlp()
    syre = SyRe(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=5e-4)
    with pytest.raises(ValueError, match="set weight_decay=0 for the parameters SyRe covers"):
        syre.attach(optimizer)
    assert not syre.attached
    # A decay switched on after attach is caught at the next step.
    optimizer = sgd_with_syre(model, syre, lr=0.1)
    optimizer.param_groups[0]["weight_decay"] = 1e-4
    with pytest.raises(ValueError, match="decay it twice"):
        zero_loss_step(model, optimizer)


def test_low_precision_refused() -> None:
    with pytest.raises(ValueError, match="one ulp.*bf16-mixed"):
        SyRe(mlp().to(torch.bfloat16))
    model = mlp()
    syre = SyRe(model)
    model.half()
    with pytest.raises(ValueError, match="torch.float16 parameter"):
        syre.attach(torch.optim.SGD(syre_param_groups(model, syre, 0.0), lr=0.1))


def test_attach_twice_refused_and_detach() -> None:
    model = mlp()
    syre = SyRe(model, weight_decay=1.0, sigma0=0.1)
    optimizer = sgd_with_syre(model, syre, lr=0.1)
    with pytest.raises(ValueError, match="already attached"):
        syre.attach(optimizer)
    syre.detach()
    assert not syre.attached
    before = model[0].weight.detach().clone()
    zero_loss_step(model, optimizer)
    assert torch.equal(model[0].weight.detach(), before)
    syre.attach(optimizer)
    zero_loss_step(model, optimizer)
    assert not torch.equal(model[0].weight.detach(), before)


def test_optimizer_missing_covered_parameters_refused() -> None:
    model = mlp()
    syre = SyRe(model)
    with pytest.raises(ValueError, match="does not train.*parameters="):
        syre.attach(torch.optim.SGD(model[0].parameters(), lr=0.1))


def test_bad_configuration_refused() -> None:
    with pytest.raises(ValueError, match="mode"):
        SyRe(mlp(), mode="l2")
    with pytest.raises(ValueError, match="d_eps"):
        SyRe(mlp(), d_eps=1.0)
    syre = SyRe(mlp())
    with pytest.raises(ValueError, match="weight_decay"):
        syre.weight_decay = -1.0
    syre.weight_decay, syre.mode = 1e-3, "coupled"
    assert (syre.weight_decay, syre.mode) == (1e-3, "coupled")


# ---------------------------------------------------------------- 6. learning-rate schedules


def test_decay_follows_the_current_learning_rate() -> None:
    lr, gamma = 0.1, 1.0
    model = mlp()
    syre = SyRe(model, weight_decay=gamma, sigma0=0.1)
    optimizer = sgd_with_syre(model, syre, lr=lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    anchor = syre.anchors["0.weight"]

    def gap() -> torch.Tensor:
        return model[0].weight.detach() - anchor

    for step in range(3):
        before = gap()
        zero_loss_step(model, optimizer)
        current = lr * 0.5**step
        torch.testing.assert_close(gap(), (1 - current * gamma) * before, atol=1e-7, rtol=0)
        scheduler.step()

    optimizer.param_groups[0]["lr"] = 0.0
    before = gap()
    zero_loss_step(model, optimizer)
    assert torch.equal(gap(), before)


# ---------------------------------------------------------------- 7. state


def test_state_dict_round_trip() -> None:
    model = mlp()
    saved = SyRe(model, weight_decay=0.2, sigma0=0.3, d_eps=0.1, seed=5, mode="coupled")
    buffer = io.BytesIO()
    torch.save(saved.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # what Lightning checkpoints allow

    restored = SyRe(model, seed=99)
    restored.load_state_dict(state)
    assert restored.state_dict()["config"] == saved.state_dict()["config"]
    for name, anchor in saved.anchors.items():
        assert torch.equal(restored.anchors[name], anchor)
        assert torch.equal(restored.d_diagonal[name], saved.d_diagonal[name])
    assert all(t.device.type == "cpu" for t in state["anchors"].values())

    # The restored SyRe trains exactly like the original.
    results = []
    for syre in (saved, restored):
        copy_ = copy.deepcopy(model)
        clone = SyRe(copy_)
        clone.load_state_dict(syre.state_dict())
        optimizer = sgd_with_syre(copy_, clone, lr=0.1)
        for _ in range(2):
            zero_loss_step(copy_, optimizer)
        results.append(copy_[0].weight.detach())
    assert torch.equal(results[0], results[1])


def test_mismatched_state_refused() -> None:
    state = SyRe(mlp()).state_dict()
    with pytest.raises(ValueError, match="another model"):
        SyRe(nn.Sequential(nn.Linear(6, 12), nn.Linear(12, 3))).load_state_dict(state)
    wider = nn.Sequential(
        nn.Linear(6, 13),
        nn.LayerNorm(13),
        nn.Tanh(),
        nn.Linear(13, 12),
        nn.Tanh(),
        nn.Linear(12, 3),
    )
    with pytest.raises(ValueError, match=r"shape \(12, 6\) for '0.weight'"):
        SyRe(wider).load_state_dict(state)
    with pytest.raises(ValueError, match="another coverage"):
        SyRe(mlp(), include_1d=True).load_state_dict(state)
    with pytest.raises(ValueError, match="not a SyRe state dict"):
        SyRe(mlp()).load_state_dict({"anchors": {}})


class Holder(nn.Module):
    """A model and its SyRe in one module, as a LightningModule holds them."""

    def __init__(self) -> None:
        super().__init__()
        self.model = mlp()
        self.syre = SyRe(self.model, weight_decay=1.0, sigma0=0.1)


def test_copies_start_detached_and_cover_the_copied_parameters() -> None:
    holder = Holder()
    sgd_with_syre(holder.model, holder.syre, lr=0.1)
    for twin in (copy.deepcopy(holder), pickle.loads(pickle.dumps(holder))):
        assert holder.syre.attached and not twin.syre.attached
        assert list(twin.syre.covered_parameters())[0] is twin.model[0].weight
        assert torch.equal(twin.syre.anchors["0.weight"], holder.syre.anchors["0.weight"])
        optimizer = sgd_with_syre(twin.model, twin.syre, lr=0.1)
        before = twin.model[0].weight.detach() - twin.syre.anchors["0.weight"]
        zero_loss_step(twin.model, optimizer)
        gap = twin.model[0].weight.detach() - twin.syre.anchors["0.weight"]
        torch.testing.assert_close(gap, 0.9 * before, atol=1e-7, rtol=0)


# ---------------------------------------------------------------- logging


def test_distance_to_anchor_by_part() -> None:
    model = mlp()
    syre = SyRe(model, weight_decay=1.0, sigma0=0.1)
    parts = {"first": "0.", "rest": "3.", "absent": "9."}
    with torch.no_grad():
        model[0].weight.copy_(syre.anchors["0.weight"])
        model[3].weight.zero_()
    distance = syre.distance_to_anchor(parts)
    assert distance["first"] == pytest.approx(0.0, abs=1e-7)
    assert distance["rest"] == pytest.approx(1.0, rel=1e-6)
    assert "absent" not in distance
    anchors = syre.anchors
    moved = (model[5].weight.detach() - anchors["5.weight"]).square().sum()
    pooled = (anchors["3.weight"].square().sum() + moved) / sum(
        a.square().sum() for a in anchors.values()
    )
    assert distance["all"] == pytest.approx(pooled.sqrt().item(), rel=1e-5)


# ---------------------------------------------------------------- Lightning


@pytest.mark.parametrize("mode", ["decoupled", "coupled"])
def test_lightning_closure_keeps_the_decay(mode: str) -> None:
    """Lightning's closure zeroes grads inside step(): the decay must survive it."""
    from lightning.pytorch import LightningModule, Trainer

    lr, gamma, steps = 0.1, 1.0, 4

    class Module(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = mlp()
            self.syre = SyRe(self.model, weight_decay=gamma, sigma0=0.1, mode=mode)

        def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
            return 0.0 * self.model(batch[0]).sum()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return sgd_with_syre(self.model, self.syre, lr=lr)

    module = Module()
    anchor = module.syre.anchors["3.weight"]
    before = module.model[3].weight.detach().clone() - anchor
    data = torch.utils.data.TensorDataset(batch()[0])
    trainer = Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=8))
    after = module.model[3].weight.detach() - anchor
    torch.testing.assert_close(after, (1 - lr * gamma) ** steps * before, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- 8. the paper's toy


def test_toy_identical_neurons_stay_collapsed_under_weight_decay_but_not_under_syre() -> None:
    spec = importlib.util.spec_from_file_location("syre_toy", ROOT / "benchmarks" / "syre_toy.py")
    assert spec is not None and spec.loader is not None
    toy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(toy)

    plain = toy.run_toy(use_syre=False, steps=600)
    syre = toy.run_toy(use_syre=True, steps=600)
    assert plain["rank"] == 1 and plain["spread"] < 1e-6
    assert syre["rank"] > 1 and syre["spread"] > 0.1
    assert syre["loss"] < 0.5 * plain["loss"]
