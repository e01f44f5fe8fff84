"""SyRe state dicts written by the single-module ssl_syre/syre.py still load and train the same.

tests/syre/fixtures/syre_states.pt was written by that code (commit b17e55d) with

    states = {
        "anchored": SyRe(mlp(), weight_decay=0.2, sigma0=0.3, d_eps=0.1, seed=5,
                         mode="coupled", include_1d=True).state_dict(),
        "absolute": SyRe(mlp(), weight_decay=5e-4, sigma0=0.01, seed=2,
                         anchor_scale="absolute").state_dict(),
        "off": SyRe(mlp(), weight_decay=5e-4, sigma0=0.0, mode="coupled").state_dict(),
    }

and, for each state, the parameters of `mlp()` after `three_sgd_steps` below.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from ssl_syre.syre import SyRe, syre_param_groups

FIXTURE = Path(__file__).parent / "fixtures" / "syre_states.pt"

pytestmark = pytest.mark.usefixtures("one_thread")


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 12),
        nn.LayerNorm(12),
        nn.Tanh(),
        nn.Linear(12, 12),
        nn.Tanh(),
        nn.Linear(12, 3),
    )


def three_sgd_steps(model: nn.Module, syre: SyRe) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    inputs, targets = (
        torch.randn(32, 6, generator=generator),
        torch.randn(32, 3, generator=generator),
    )
    optimizer = torch.optim.SGD(
        syre_param_groups(model, syre, weight_decay=0.0), lr=0.1, momentum=0.9
    )
    syre.attach(optimizer)
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(inputs), targets).backward()
        optimizer.step()
    return {name: p.detach() for name, p in model.named_parameters()}


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURE, weights_only=True)


@pytest.mark.parametrize("key", ["anchored", "absolute", "off"])
def test_saved_state_loads_and_trains_as_when_it_was_saved(fixture: dict, key: str) -> None:
    saved = fixture["states"][key]
    model = mlp()
    syre = SyRe(model, seed=99, include_1d=saved["config"]["include_1d"])
    syre.load_state_dict(saved)
    state = syre.state_dict()
    assert state["config"] == saved["config"]
    assert state["covered_names"] == saved["covered_names"]
    assert set(state) == {"config", "covered_names", "anchors", "d_diagonal"}
    for name, anchor in saved["anchors"].items():
        assert torch.equal(syre.anchors[name], anchor)
    assert (syre.d_diagonal is None) == (saved["d_diagonal"] is None)
    after = three_sgd_steps(model, syre)
    for name, expected in fixture["after_3_sgd_steps"][key].items():
        torch.testing.assert_close(after[name], expected, atol=1e-6, rtol=0)


def test_state_written_now_has_the_saved_format_and_round_trips(fixture: dict) -> None:
    """What is saved now loads in the same way as what was saved before."""
    saved = fixture["states"]["absolute"]
    now = SyRe(mlp(), weight_decay=5e-4, sigma0=0.01, seed=2, anchor_scale="absolute")
    state = now.state_dict()
    assert state["config"] == saved["config"]
    assert state["d_diagonal"] is None
    # ≥2-D anchors are drawn as they were: same seed and name, same tensor.
    for name, anchor in saved["anchors"].items():
        assert torch.equal(state["anchors"][name], anchor)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restored = SyRe(mlp(), seed=7)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.state_dict()["config"] == saved["config"]


def test_a_refused_state_changes_nothing(fixture: dict) -> None:
    syre = SyRe(mlp(), weight_decay=1e-3, seed=4)
    before = syre.state_dict()
    broken = dict(fixture["states"]["absolute"])
    broken["anchors"] = {**broken["anchors"], "3.weight": torch.zeros(2, 2)}
    with pytest.raises(ValueError, match="shape \\(2, 2\\) for '3.weight'"):
        syre.load_state_dict(broken)
    after = syre.state_dict()
    assert after["config"] == before["config"]
    assert all(torch.equal(after["anchors"][n], t) for n, t in before["anchors"].items())


def regenerated_state() -> dict:
    return SyRe(
        mlp(), sigma0=0.3, d_eps=0.1, include_1d=True, anchor_storage="regenerate"
    ).state_dict()


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda s: s["config"].update(anchor_storage="float8"), "anchor_storage must be one of"),
        (lambda s: s["anchor_seeds"].pop("3.weight"), "does not match"),
        (lambda s: s.update(d_seeds=None), "D must be kept"),
        (lambda s: s["config"].pop("anchor_storage"), "anchor seeds without"),
        (lambda s: s["anchors"].update({"3.weight": torch.zeros(12, 12)}), "does not match"),
    ],
)
def test_a_broken_regenerated_state_is_refused(break_it: Any, message: str) -> None:
    """Seeds and kept anchors together name every covered tensor once; D is seeded iff d_eps."""
    state = regenerated_state()
    break_it(state)
    syre = SyRe(mlp(), include_1d=True)
    with pytest.raises(ValueError, match=message):
        syre.load_state_dict(state)
    assert syre.anchor_storage == "float32"
