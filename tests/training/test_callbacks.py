"""ReseedEachEpoch: the main process's random draws per (seed, epoch, rank)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import torch

from ssl_syre.training.callbacks import _MAIN, ReseedEachEpoch, epoch_seed


def draws_after_epoch_start(epoch: int, rank: int, seed: int = 0) -> tuple[float, float, float]:
    """What the main process draws (augmentations at num_workers=0, dropout) after the hook,
    on a simulated DDP rank."""
    trainer = SimpleNamespace(current_epoch=epoch, global_rank=rank)
    ReseedEachEpoch(seed).on_train_epoch_start(trainer, None)  # type: ignore[arg-type]
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_each_rank_draws_its_own_numbers_and_replays_them_on_resume() -> None:
    ranks = [draws_after_epoch_start(3, rank) for rank in range(4)]
    for a in range(4):
        for b in range(a + 1, 4):
            assert all(x != y for x, y in zip(ranks[a], ranks[b], strict=True)), (a, b)
    assert draws_after_epoch_start(3, 2) == ranks[2]  # a resumed epoch 3 on rank 2: the same
    assert draws_after_epoch_start(4, 2) != ranks[2]


def test_rank_0_keeps_the_single_process_seed() -> None:
    """A one-device run (rank 0) replays the numbers of runs made before ranks were mixed in."""
    random.seed(epoch_seed(0, 3, _MAIN))
    expected = random.random()
    assert draws_after_epoch_start(3, 0)[0] == expected


def test_progress_bar_shows_the_loss_read_at_logging_steps() -> None:
    """The bar's loss is the method's host-side copy, not a progress-bar metric (which Lightning
    would read back from the device at every batch)."""
    from ssl_syre.training.callbacks import LossProgressBar

    trainer = SimpleNamespace(progress_bar_metrics={}, loggers=[], logger=None)
    module = SimpleNamespace(shown_loss=None)
    bar = LossProgressBar()
    assert "loss" not in bar.get_metrics(trainer, module)  # type: ignore[arg-type]
    module.shown_loss = 1.23456
    assert bar.get_metrics(trainer, module)["loss"] == "1.23"  # type: ignore[arg-type]
