"""Checkpoint writes: atomic, and readable as the umask says (not mkstemp's private 0600)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from ssl_syre.training.checkpoint import AtomicCheckpointIO, load_checkpoint


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002, 0o077])
def test_checkpoints_get_the_mode_the_umask_gives(mask: int, tmp_path: Path) -> None:
    target = tmp_path / "checkpoints" / "last.ckpt"
    previous = os.umask(mask)
    try:
        for _ in range(2):  # a new file, then one replaced by the atomic rename
            AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, target)
            assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    finally:
        os.umask(previous)
    assert torch.equal(load_checkpoint(target)["state_dict"]["w"], torch.ones(2))
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]  # no temporary left
