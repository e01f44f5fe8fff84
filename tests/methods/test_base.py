"""ssl_syre.methods.base: a training step reads nothing back from the device outside logging
steps (each read is a host sync that empties the GPU's queue)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from ssl_syre.methods import SSLMethod
from tests.conftest import train_in_process

# The Tensor methods that read a value back to the host.
READS = ("item", "__bool__", "__float__", "__int__", "tolist")


@pytest.mark.slow
def test_training_steps_read_nothing_back_outside_logging_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    reads: dict[int, Counter[str]] = {}
    step: list[int | None] = [None]

    def counting(name: str) -> Any:
        original = getattr(torch.Tensor, name)

        def read(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if step[0] is not None:
                reads.setdefault(step[0], Counter())[name] += 1
            return original(self, *args, **kwargs)

        return read

    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, counting(name))

    def on_train_batch_start(self: SSLMethod, batch: Any, batch_idx: int) -> None:
        step[0] = self.global_step  # counts until the next batch starts: logging included

    def on_train_end(self: SSLMethod) -> None:
        step[0] = None

    monkeypatch.setattr(SSLMethod, "on_train_batch_start", on_train_batch_start, raising=False)
    monkeypatch.setattr(SSLMethod, "on_train_end", on_train_end, raising=False)
    train_in_process(
        tmp_path,
        "trainer.limit_train_batches=8",
        "trainer.log_every_n_steps=3",
        "trainer.enable_progress_bar=true",
        "eval.online_every_n_epochs=0",
        "eval.linear_probe=false",
        "eval.knn_k=[5]",
        "export=false",
    )
    logging = {2, 5, 7}  # every 3rd step (Lightning counts from 1) and the epoch's last
    quiet = {s: dict(reads.get(s, {})) for s in range(8) if s not in logging}
    assert quiet == {s: {} for s in quiet}
    # The counting sees the reads that remain: the finite check and the logger's.
    assert all(sum(reads[s].values()) >= 1 for s in logging), reads


@pytest.mark.slow
def test_a_nan_between_logging_steps_stops_the_epoch_before_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    """No logging step in the run: epoch 1's first loss is NaN; the check at the epoch's last
    step names that step, and last.ckpt stays epoch 0's."""
    from ssl_syre.checkpoint import load_checkpoint
    from ssl_syre.methods.base import NonFiniteLossError
    from ssl_syre.methods.simclr import SimCLR

    original = SimCLR.training_loss

    def training_loss(self: SimCLR, views: Any) -> torch.Tensor:
        loss = original(self, views)
        return loss * float("nan") if self.global_step == 4 else loss

    monkeypatch.setattr(SimCLR, "training_loss", training_loss)
    with pytest.raises(NonFiniteLossError, match="became nan at step 4 .epoch 1."):
        train_in_process(
            tmp_path,
            "trainer.limit_train_batches=4",
            "trainer.max_epochs=2",
            "trainer.log_every_n_steps=100",
            "eval.online_every_n_epochs=0",
            "export=false",
        )
    assert load_checkpoint(tmp_path / "run/checkpoints/last.ckpt")["epoch"] == 0
