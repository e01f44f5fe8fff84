"""The online linear probe: it learns from detached features, catches only the training
forward pass, and leaves the SSL weights exactly as they are without it."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ssl_syre.training.callbacks import OnlineLinearProbe
from ssl_syre.training.checkpoint import load_checkpoint
from tests.conftest import train_in_process


def _module_with_backbone(backbone: nn.Module) -> SimpleNamespace:
    logged: dict[str, float] = {}
    return SimpleNamespace(
        backbone=backbone,
        device=torch.device("cpu"),
        log=lambda name, value, **kwargs: logged.__setitem__(name, float(value)),
        logged=logged,
    )


def test_probe_learns_separable_features_through_the_backbone_hook(one_thread: None) -> None:
    generator = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 8, generator=generator) * 4
    backbone = nn.Identity()  # the hook catches what the backbone returns
    module = _module_with_backbone(backbone)
    trainer = SimpleNamespace(world_size=1)
    probe = OnlineLinearProbe(feature_dim=8, num_classes=3, lr=0.05)
    probe.setup(trainer, module, "fit")
    for step in range(60):
        labels = torch.randint(0, 3, (64,), generator=generator)
        features = centers[labels] + torch.randn(64, 8, generator=generator)
        probe.on_train_batch_start(trainer, module, (features, labels), step)
        backbone.train()
        backbone(features)  # the training step's forward pass: caught
        backbone(features * 0)  # a second call in the same step (another view): not caught
        probe.on_train_batch_end(trainer, module, None, (features, labels), step)
    labels = torch.randint(0, 3, (500,), generator=generator)
    test = centers[labels] + torch.randn(500, 8, generator=generator)
    assert probe.accuracy(test, labels) > 0.9
    assert module.logged["online_probe/train_top1"] > 0.9
    probe.teardown(trainer, module, "fit")
    assert not backbone._forward_hooks  # noqa: SLF001


def test_probe_ignores_eval_mode_and_unlabelled_images() -> None:
    backbone = nn.Identity()
    module = _module_with_backbone(backbone)
    trainer = SimpleNamespace(world_size=1)
    probe = OnlineLinearProbe(feature_dim=4, num_classes=2, lr=0.1)
    probe.setup(trainer, module, "fit")
    before = probe.classifier.weight.detach().clone()
    probe.on_train_batch_start(trainer, module, None, 0)
    backbone.eval()  # feature extraction of an evaluation: not a training step
    backbone(torch.ones(4, 4))
    probe.on_train_batch_end(trainer, module, None, (None, torch.zeros(4, dtype=torch.long)), 0)
    assert torch.equal(probe.classifier.weight, before) and not module.logged
    probe.on_train_batch_start(trainer, module, None, 1)
    backbone.train()
    backbone(torch.eye(4))  # row i has feature i only
    probe.on_train_batch_end(trainer, module, None, (None, torch.tensor([-1, -1, 0, 1])), 1)
    weight = probe.classifier.weight.detach()
    assert weight[:, 2:].abs().min() > 0  # trained on the two labelled rows
    assert torch.equal(weight[:, :2], before[:, :2])  # and on nothing of the unlabelled ones


def test_probe_does_not_touch_the_global_rng() -> None:
    state = torch.get_rng_state()
    OnlineLinearProbe(feature_dim=16, num_classes=4, lr=1e-3)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.slow
def test_ssl_weights_are_identical_with_and_without_the_probe(tmp_path: Path) -> None:
    common = ["eval.online_every_n_epochs=1", "eval.linear_probe=false", "export.enabled=false"]
    without = train_in_process(tmp_path / "off", *common)
    with_probe = train_in_process(tmp_path / "on", *common, "eval.online_linear_probe=true")
    weights = [
        load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]
        for run in (without, with_probe)
    ]
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name
    online = json.loads((with_probe / "metrics.json").read_text())["online"]
    assert 0.0 <= online[-1]["linear_top1_backbone"] <= 1.0
    state = load_checkpoint(with_probe / "checkpoints" / "last.ckpt")["callbacks"]
    assert any("OnlineLinearProbe" in key for key in state)  # saved for resume
