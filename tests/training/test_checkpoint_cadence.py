"""ssl_syre.training.checkpoint.EpochCheckpoint: a checkpoint cadence that keeps last.ckpt current at
the end of training and on Ctrl-C."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from ssl_syre.training.checkpoint import load_checkpoint
from tests.conftest import train_in_process

QUICK = [
    "trainer.limit_train_batches=2",
    "eval.online_every_n_epochs=0",
    "eval.linear_probe=false",
    "eval.knn_k=[5]",
    "export=false",
]


@pytest.mark.slow
def test_cadence_writes_every_nth_epoch_and_last_at_the_end(tmp_path: Path, one_thread: None):
    written: list[tuple[str, int]] = []
    from ssl_syre.training.checkpoint import AtomicCheckpointIO

    original = AtomicCheckpointIO.save_checkpoint

    def save(self: Any, checkpoint: dict[str, Any], path: Any, **kwargs: Any) -> None:
        written.append((Path(path).name, int(checkpoint["epoch"])))
        original(self, checkpoint, path, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AtomicCheckpointIO, "save_checkpoint", save)
        run = train_in_process(
            tmp_path, *QUICK, "trainer.max_epochs=3", "checkpoint_every_n_epochs=2"
        )
    # Epoch index 1 is the 2nd epoch: one numbered checkpoint; last.ckpt then and at the end.
    # Lightning counts the end of training as epoch 3 (the epoch a resume would start).
    assert written == [("epoch001.ckpt", 1), ("last.ckpt", 1), ("last.ckpt", 3)]
    assert load_checkpoint(run / "checkpoints/last.ckpt")["global_step"] == 6


@pytest.mark.slow
def test_ctrl_c_between_checkpoints_writes_the_last_finished_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    from ssl_syre.methods.simclr import SimCLR

    original = SimCLR.training_loss
    states: dict[int, dict[str, torch.Tensor]] = {}

    def training_loss(self: SimCLR, views: Any) -> torch.Tensor:
        if self.global_step == 4:  # first step of epoch index 2
            states[4] = {k: v.clone() for k, v in self.state_dict().items()}
            raise KeyboardInterrupt
        return original(self, views)

    monkeypatch.setattr(SimCLR, "training_loss", training_loss)
    with pytest.raises(KeyboardInterrupt):
        train_in_process(tmp_path, *QUICK, "trainer.max_epochs=6", "checkpoint_every_n_epochs=5")
    checkpoint = load_checkpoint(tmp_path / "run/checkpoints/last.ckpt")
    assert checkpoint["epoch"] == 1 and checkpoint["global_step"] == 4
    for name, value in states[4].items():  # the state at the end of epoch index 1
        assert torch.equal(checkpoint["state_dict"][name], value), name
    assert sorted(p.name for p in (tmp_path / "run/checkpoints").iterdir()) == ["last.ckpt"]


def test_resume_ignores_runtime_switches_and_keys_older_checkpoints_lack(tmp_path: Path):
    from omegaconf import OmegaConf

    from ssl_syre.config import load_config
    from ssl_syre.errors import UserError
    from ssl_syre.training.resume import check_resumable

    saved = OmegaConf.to_container(load_config(None, []), resolve=True)
    del saved["backbone"]["compile"]  # a checkpoint from before the key existed
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {"cfg": saved}}, path)
    check_resumable(path, load_config(None, ["backbone.compile=true"]))
    check_resumable(path, load_config(None, []))
    with pytest.raises(UserError, match="backbone.name"):
        check_resumable(path, load_config(None, ["backbone.name=resnet34"]))
