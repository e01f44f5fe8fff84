"""The trainer glue of SSLMethod: warm-up length, a second configure_optimizers, lr_find."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightly.utils.scheduler import cosine_warmup_schedule
from lightning.pytorch.tuner import Tuner
from torch.utils.data import DataLoader, TensorDataset

from ssl_syre.methods.base import CosineSchedule
from tests.conftest import build_method

pytestmark = pytest.mark.usefixtures("one_thread")


class RecordLR(pl.Callback):
    """The lr of the first parameter group at every optimizer step."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_before_optimizer_step(self, trainer: pl.Trainer, *args: Any) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def loader(batches: int, batch_size: int = 8) -> DataLoader:
    """`batches` batches of uint8 16x16 grey images (the device path's input)."""
    images = torch.randint(0, 256, (batches * batch_size, 1, 16, 16), dtype=torch.uint8)
    return DataLoader(TensorDataset(images, torch.zeros(len(images))), batch_size=batch_size)


def fit(model: pl.LightningModule, data: DataLoader, tmp_path: Path, **trainer: Any) -> RecordLR:
    record = RecordLR()
    pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=[record],
        **trainer,
    ).fit(model, data)
    return record


@pytest.mark.parametrize("max_epochs", [-1, 100, 2])
@pytest.mark.parametrize(
    ("batches", "extra"),
    [(4, {}), (8, {"limit_train_batches": 4}), (8, {"accumulate_grad_batches": 2})],
)
def test_warmup_lasts_warmup_epochs_of_loader_steps_when_max_steps_ends_the_run(
    max_epochs: int, batches: int, extra: dict[str, Any], tmp_path: Path
) -> None:
    """4 optimizer steps an epoch, warmup_epochs=1, max_steps=5: 4 warm-up steps, then cosine."""
    model, cfg = build_method("simclr", "optimizer.warmup_epochs=1", "data.batch_size=8")
    record = fit(model, loader(batches), tmp_path, max_epochs=max_epochs, max_steps=5, **extra)
    peak = model.learning_rate()
    assert len(record.lrs) == 5
    # lightly's warm-up reaches the peak at its 4th step; step 5 is the cosine's last (1e-3).
    schedule = [cosine_warmup_schedule(k, 5, 1.0, 0.001, 4, 0.0) for k in range(5)]
    assert schedule[:4] == [0.25, 0.5, 0.75, 1.0]
    expected = [peak * s for s in schedule]
    assert record.lrs == pytest.approx(expected)


def test_fit_twice_on_one_model_moves_syre_to_the_new_optimizer(tmp_path: Path) -> None:
    model, _ = build_method("simclr", "data.batch_size=8")
    data = loader(2)
    fit(model, data, tmp_path, max_epochs=1)
    first = model.trainer.optimizers[0]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    fit(model, data, tmp_path, max_epochs=1)
    second = model.trainer.optimizers[0]
    assert second is not first
    assert model.syre.attached
    assert len(second._optimizer_step_pre_hooks) == 1  # SyRe's hook
    assert len(first._optimizer_step_pre_hooks) == 0
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_lr_find_then_fit_trains_at_the_suggested_lr(tmp_path: Path) -> None:
    """Lightning's Tuner sets `model.lr`; the fit that follows starts its cosine there."""
    model, cfg = build_method("simclr", "data.batch_size=8", "optimizer.lr=0.06")
    record = RecordLR()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=[record],
    )
    finder = Tuner(trainer).lr_find(
        model, train_dataloaders=loader(24), num_training=20, early_stop_threshold=None
    )
    suggestion = finder.suggestion()
    assert suggestion is not None and math.isfinite(suggestion)
    assert model.lr == pytest.approx(suggestion)
    assert callable(model.learning_rate)  # the Tuner set `lr`, not our method
    record.lrs.clear()
    trainer.fit(model, loader(4))
    assert trainer.global_step == 4
    assert record.lrs[0] == pytest.approx(suggestion)  # cosine, no warm-up: the peak first
    assert model.syre.attached


def test_resumed_cosine_schedule_takes_this_runs_lr_not_the_checkpoints() -> None:
    """Resumed at lr 0.6 after 2 of 6 steps at 0.03: the lr curve of a 0.6 run from the start."""

    def schedule(lr: float) -> tuple[torch.optim.Optimizer, CosineSchedule]:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr, momentum=0.9)
        return optimizer, CosineSchedule(optimizer, warmup_epochs=1, max_epochs=6)

    def step(optimizer: torch.optim.Optimizer, scheduler: CosineSchedule) -> float:
        optimizer.step()
        scheduler.step()
        return optimizer.param_groups[0]["lr"]

    old_optimizer, old_scheduler = schedule(0.03)
    for _ in range(2):
        step(old_optimizer, old_scheduler)
    whole_optimizer, whole_scheduler = schedule(0.6)
    whole = [step(whole_optimizer, whole_scheduler) for _ in range(4)]  # lrs after steps 1-4

    optimizer, scheduler = schedule(0.6)
    optimizer.load_state_dict(old_optimizer.state_dict())  # Lightning's order: optimizer first
    scheduler.load_state_dict(old_scheduler.state_dict())
    at_step_2 = 0.6 * cosine_warmup_schedule(2, 6, 1.0, 0.001, 1, 0.0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(at_step_2)
    assert [step(optimizer, scheduler) for _ in range(2)] == pytest.approx(whole[2:4])


class RecordGroupLRs(pl.Callback):
    """Every param group's lr, by group name, at every optimizer step."""

    def __init__(self) -> None:
        self.lrs: dict[str, list[float]] = {}

    def on_before_optimizer_step(self, trainer: pl.Trainer, *args: Any) -> None:
        for group in trainer.optimizers[0].param_groups:
            self.lrs.setdefault(group["name"], []).append(group["lr"])


@pytest.mark.parametrize("fixed", [True, False])
def test_simsiam_fix_predictor_lr_keeps_the_predictor_at_the_peak(
    fixed: bool, tmp_path: Path
) -> None:
    model, _ = build_method(
        "simsiam",
        "data.batch_size=8",
        "optimizer.warmup_epochs=1",
        f"method_kwargs.fix_predictor_lr={str(fixed).lower()}",
        "method_kwargs.prediction_hidden_dim=8",
    )
    record = RecordGroupLRs()
    pl.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=[record],
    ).fit(model, loader(2))
    peak = model.learning_rate()
    schedule = [peak * cosine_warmup_schedule(k, 4, 1.0, 0.001, 2, 0.0) for k in range(4)]
    predictor = {id(p) for p in model.prediction_head.parameters()}
    groups = model.trainer.optimizers[0].param_groups
    fixed_groups = [g for g in groups if g.get("fixed_lr")]
    assert bool(fixed_groups) == fixed
    for group in groups:
        ids = {id(p) for p in group["params"]}
        assert ids <= predictor if group.get("fixed_lr") else not (fixed and ids & predictor)
        expected = [peak] * 4 if group.get("fixed_lr") else schedule
        assert record.lrs[group["name"]] == pytest.approx(expected), group["name"]
    if fixed:  # the predictor's weights are still SyRe's, its biases still undecayed
        assert {g["name"] for g in fixed_groups} == {"syre/fixed_lr", "no_decay/fixed_lr"}


class RecordDecay(pl.Callback):
    """Every param group's weight_decay, by group name, and SyRe's γ at every optimizer step."""

    def __init__(self) -> None:
        self.decay: dict[str, list[float]] = {}
        self.gamma: list[float] = []

    def on_before_optimizer_step(self, trainer: pl.Trainer, module: Any, *args: Any) -> None:
        for group in trainer.optimizers[0].param_groups:
            self.decay.setdefault(group["name"], []).append(group["weight_decay"])
        self.gamma.append(module.syre.weight_decay)


def test_a_fixed_lr_group_follows_the_weight_decay_schedule(tmp_path: Path) -> None:
    """SimSiam's predictor in its own fixed-lr group still decays on the schedule: the plain
    decay follows it in "decay" and in "decay/fixed_lr" alike, and SyRe's γ too."""
    from lightly.utils.scheduler import cosine_schedule

    model, _ = build_method(
        "simsiam",
        "data.batch_size=8",
        "method_kwargs.fix_predictor_lr=true",
        "method_kwargs.prediction_hidden_dim=8",
        "optimizer.weight_decay=0.04",
        "optimizer.weight_decay_end=0.4",
        "syre.parts=[backbone]",  # the heads then decay toward 0 in the plain groups
    )
    record = RecordDecay()
    pl.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=[record],
    ).fit(model, loader(2))
    expected = [cosine_schedule(k, 4, 0.04, 0.4) for k in range(4)]
    assert {"decay", "decay/fixed_lr"} <= set(record.decay)
    assert record.decay["decay"] == pytest.approx(expected)
    assert record.decay["decay/fixed_lr"] == pytest.approx(expected)
    assert record.gamma == pytest.approx(expected)
    assert all(value == 0 for value in record.decay["syre"] + record.decay["no_decay"])
