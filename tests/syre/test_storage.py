"""Anchor storages (syre.anchor_storage): each gives the float32 copy's anchors (exactly, or
within its rounding), σ0 = 0 is plain decay toward 0 in each, and each resumes exactly."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from ssl_syre.lars import SyReLARS
from ssl_syre.syre import ANCHOR_STORAGES, SyRe, syre_param_groups
from ssl_syre.syre import anchors as anchors_module
from ssl_syre.syre.anchors import numel_chunks

pytestmark = pytest.mark.usefixtures("one_thread")
ROUNDING = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def net() -> nn.Sequential:
    """Conv (kept channels_last), norm, linear: every layout and kind SyRe covers."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 12),
        nn.Tanh(),
        nn.Linear(12, 3),
    )
    return model.to(memory_format=torch.channels_last)


def steps(
    model: nn.Module, syre: SyRe, n: int = 3, optimizer_name: str = "sgd"
) -> dict[str, torch.Tensor]:
    """`n` optimizer steps on a fixed regression batch; the weights after them."""
    generator = torch.Generator().manual_seed(1)
    inputs, targets = (
        torch.randn(16, 3, 6, 6, generator=generator),
        torch.randn(16, 3, generator=generator),
    )
    groups = syre_param_groups(model, syre, weight_decay=0.0)
    if optimizer_name == "lars":
        optimizer: torch.optim.Optimizer = SyReLARS(groups, syre, lr=0.1, momentum=0.9)
    else:
        optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
        syre.attach(optimizer)
    try:
        for _ in range(n):
            optimizer.zero_grad()
            nn.functional.mse_loss(model(inputs), targets).backward()
            optimizer.step()
    finally:
        syre.detach()
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def kwargs(mode: str, **extra: object) -> dict:
    return dict(weight_decay=0.3, sigma0=0.7, d_eps=0.1, seed=3, mode=mode, **extra)


@pytest.mark.parametrize("include_1d", [False, True])
@pytest.mark.parametrize("mode", ["coupled", "decoupled"])
def test_regenerated_anchors_equal_the_stored_ones_bit_for_bit_on_the_cpu(
    mode: str, include_1d: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(anchors_module, "CHUNK_NUMEL", 100)  # several chunks per step
    stored_model, regen_model = net(), net()
    stored = SyRe(stored_model, **kwargs(mode, include_1d=include_1d))
    regen = SyRe(regen_model, **kwargs(mode, include_1d=include_1d, anchor_storage="regenerate"))
    assert stored.anchors.keys() == regen.anchors.keys()
    for table in ("anchors", "d_diagonal"):
        for name, tensor in getattr(stored, table).items():
            assert torch.equal(getattr(regen, table)[name], tensor), (table, name)
    after_stored, after_regen = steps(stored_model, stored), steps(regen_model, regen)
    for name, weight in after_stored.items():
        assert torch.equal(after_regen[name], weight), name
    assert stored.distance_to_anchor() == regen.distance_to_anchor()
    # Nothing kept but the anchors centred at their init values (1-D tensors under include_1d).
    assert regen.held_bytes().get("cpu", 0) == 4 * sum(
        p.numel() for n, p in regen_model.named_parameters() if include_1d and p.ndim == 1
    )


def test_regenerated_anchors_under_lars_equal_the_stored_ones() -> None:
    """SyReLARS reads one displacement at a time (`SyRe.displacement`): the same numbers."""
    stored_model, regen_model = net(), net()
    stored = SyRe(stored_model, **kwargs("coupled"))
    regen = SyRe(regen_model, **kwargs("coupled", anchor_storage="regenerate"))
    after_stored = steps(stored_model, stored, optimizer_name="lars")
    after_regen = steps(regen_model, regen, optimizer_name="lars")
    for name, weight in after_stored.items():
        assert torch.equal(after_regen[name], weight), name


@pytest.mark.parametrize("storage", ["bfloat16", "float16"])
@pytest.mark.parametrize("mode", ["coupled", "decoupled"])
def test_rounded_anchors_are_the_stored_ones_within_their_rounding(storage: str, mode: str) -> None:
    dtype = ROUNDING[storage]
    stored_model, rounded_model = net(), net()
    stored = SyRe(stored_model, **kwargs(mode, include_1d=True))
    rounded = SyRe(rounded_model, **kwargs(mode, include_1d=True, anchor_storage=storage))
    for name, anchor in stored.anchors.items():
        assert torch.equal(rounded.anchors[name], anchor.to(dtype).float()), name
        # Half an ulp: relative for normal numbers, absolute among float16's subnormals.
        info = torch.finfo(dtype)
        error = (rounded.anchors[name] - anchor).abs()
        bound = torch.maximum(anchor.abs() * info.eps / 2, torch.tensor(info.tiny * info.eps / 2))
        assert bool((error <= bound).all()), name
    for name, d in stored.d_diagonal.items():  # D stays float32
        assert torch.equal(rounded.d_diagonal[name], d), name
    numel = sum(p.numel() for p in stored.covered_parameters())
    assert stored.held_bytes() == {"cpu": 4 * numel + 4 * numel}  # anchors and D
    assert rounded.held_bytes() == {"cpu": 2 * numel + 4 * numel}
    # The update is the float32 one with the rounded anchors, bit for bit.
    state = stored.state_dict()
    state["anchors"] = {n: a.to(dtype).float() for n, a in state["anchors"].items()}
    stored.load_state_dict(state)
    after_stored, after_rounded = steps(stored_model, stored), steps(rounded_model, rounded)
    for name, weight in after_stored.items():
        assert torch.equal(after_rounded[name], weight), name


@pytest.mark.parametrize("storage", ANCHOR_STORAGES)
@pytest.mark.parametrize("mode", ["coupled", "decoupled"])
def test_zero_sigma0_is_plain_decay_toward_zero_in_every_storage(storage: str, mode: str) -> None:
    """The fair-arm rule: σ0 = 0 (syre.enabled=false) is the same update in every storage,
    and under coupled SGD it is torch SGD's own weight_decay."""
    reference_model, model = net(), net()
    reference = SyRe(reference_model, weight_decay=0.3, sigma0=0.0, mode=mode)
    off = SyRe(model, weight_decay=0.3, sigma0=0.0, mode=mode, anchor_storage=storage)
    assert off.zero_anchors and not off._store.transient
    after_reference, after = steps(reference_model, reference), steps(model, off)
    for name, weight in after_reference.items():
        assert torch.equal(after[name], weight), name
    if mode == "coupled":
        torch_model = net()
        generator = torch.Generator().manual_seed(1)
        inputs, targets = (
            torch.randn(16, 3, 6, 6, generator=generator),
            torch.randn(16, 3, generator=generator),
        )
        named = dict(torch_model.named_parameters())
        decayed = [named[n] for n in off.covered_names]
        rest = [p for n, p in named.items() if n not in off.covered_names]
        optimizer = torch.optim.SGD(
            [{"params": decayed, "weight_decay": 0.3}, {"params": rest, "weight_decay": 0.0}],
            lr=0.1,
            momentum=0.9,
        )
        for _ in range(3):
            optimizer.zero_grad()
            nn.functional.mse_loss(torch_model(inputs), targets).backward()
            optimizer.step()
        for name, p in named.items():
            assert torch.equal(p.detach(), after[name]), name


def reload(state: dict) -> dict:
    """`state` through torch.save and a weights_only load, as a checkpoint carries it."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("storage", ANCHOR_STORAGES)
def test_resume_is_exact_in_every_storage(storage: str) -> None:
    model = net()
    syre = SyRe(model, **kwargs("coupled", include_1d=True, anchor_storage=storage))
    steps(model, syre, n=1)
    state = reload(syre.state_dict())
    twin_model = net()
    twin_model.load_state_dict(model.state_dict())
    twin = SyRe(twin_model, seed=99, include_1d=True)  # another seed: the state must win
    twin.load_state_dict(state)
    assert twin.anchor_storage == storage and twin.state_dict().keys() == state.keys()
    for table in ("anchors", "d_diagonal"):
        for name, tensor in getattr(syre, table).items():
            assert torch.equal(getattr(twin, table)[name], tensor), (table, name)
    after, after_twin = steps(model, syre), steps(twin_model, twin)
    assert twin.held_bytes() == syre.held_bytes()
    for name, weight in after.items():
        assert torch.equal(after_twin[name], weight), name
    if storage == "regenerate":  # seeds, not tensors, for every anchor not centred at its init
        assert set(state["anchors"]) == {n for n in syre.covered_names if n.endswith(".bias")} | {
            "1.weight"
        }
        assert set(state["anchor_seeds"]) == set(syre.covered_names) - set(state["anchors"])
        assert all(isinstance(s, int) for s in state["anchor_seeds"].values())
        assert state["d_diagonal"] is None and set(state["d_seeds"]) == set(syre.covered_names)
    else:
        assert "anchor_seeds" not in state
    if storage == "float32":  # the keys of every float32 checkpoint written so far
        assert "anchor_storage" not in state["config"]


def test_a_regenerated_state_from_a_device_that_draws_otherwise_is_refused() -> None:
    model = net()
    syre = SyRe(model, **kwargs("decoupled", anchor_storage="regenerate"))
    state = reload(syre.state_dict())
    assert state["anchor_check"]["device"] == "cpu"
    state["anchor_check"] = {"device": "cuda:0", "fingerprint": 0.5}  # as a GPU wrote it
    twin_model = net()
    twin = SyRe(twin_model, **kwargs("decoupled"))
    twin.load_state_dict(state)
    with pytest.raises(
        ValueError, match="differ from those of the checkpoint, regenerated on cuda"
    ):
        steps(twin_model, twin, n=1)
    # Unchanged, the state loads and trains.
    state["anchor_check"] = syre.state_dict()["anchor_check"]
    twin.load_state_dict(state)
    steps(twin_model, twin, n=1)


def test_numel_chunks_keep_order_and_size() -> None:
    tensors = [torch.zeros(n) for n in (3, 4, 10, 1, 1)]
    assert numel_chunks(tensors, limit=7) == [[0, 1], [2], [3, 4]]
    assert numel_chunks([], limit=7) == []
