"""Checkpoints that survive kills and full disks, hold no NaN, and load without unpickling code."""

from __future__ import annotations

import errno
import glob
import os
import pickle
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.apply_func import apply_to_collection
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ssl_syre.errors import UserError
from ssl_syre.training.run_dir import run_dir_of

# Write failures that the user fixes (space, quota, permissions, read-only disk).
USER_FIXABLE_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
# Temporary files of interrupted writes: mkstemp(prefix=".<name>.") beside the target.
PARTIAL_WRITE_PATTERN = ".?*.ckpt.*"


class NonFiniteWeightsError(UserError):
    """A checkpoint about to be written holds NaN or infinite values."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file in the same folder, fsync, then rename over the target.

    A kill or a full disk during the write leaves the previous checkpoint intact (rename is
    atomic on POSIX); Lightning's own writer truncates the target without an fsync. Weights
    or optimizer state with NaN/inf are never written: the last good checkpoint stays.
    Leftovers of writes killed half-way are removed at the next save in that folder.
    Loading always uses `torch.load(weights_only=True)`: no code in a checkpoint runs.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):  # remote storage: fsspec's transaction is the atomic path there
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        check_finite(checkpoint, target)
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_partial_writes(target.parent)
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            give_umask_mode(temporary)
            os.replace(temporary, target)
            _fsync_directory(target.parent)  # makes the rename itself survive a power cut
        except BaseException as error:
            Path(temporary).unlink(missing_ok=True)
            if isinstance(error, OSError) and error.errno in USER_FIXABLE_WRITE_ERRORS:
                raise UserError(
                    f"cannot write checkpoint '{target}': {os.strerror(error.errno)}; the "
                    f"previous checkpoint is intact: fix this, then resume={run_dir_of(target)}"
                ) from None
            raise

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_checkpoint(path, map_location=map_location or "cpu")


def umask() -> int:
    """This process's umask, read without changing it where the OS allows."""
    try:  # Linux: reading is free of the set-and-restore race os.umask() has with threads
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def give_umask_mode(path: str | Path) -> None:
    """Set a file's mode to what open() would give a new file (0o666 less the umask).

    Temporary files (mkstemp, safetensors' writer) are created 0600 whatever the umask, and
    a rename keeps that mode: other users of a shared machine or a group project folder
    could not read the checkpoint or the export.
    """
    os.chmod(path, 0o666 & ~umask())


def _fsync_directory(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:  # some file systems do not open folders; the rename is still atomic
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def remove_partial_writes(directory: Path) -> None:
    """Delete temporary files of checkpoint writes that were killed half-way."""
    for leftover in glob.glob(os.path.join(glob.escape(str(directory)), PARTIAL_WRITE_PATTERN)):
        Path(leftover).unlink(missing_ok=True)


def _tensors(value: Any, key: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        yield key, value
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _tensors(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _tensors(item, f"{key}.{index}")


def check_finite(checkpoint: dict[str, Any], target: Path) -> None:
    """Raise NonFiniteWeightsError when weights or optimizer state hold NaN or inf.

    A run whose loss is still finite can already have overflowed its weights in the last step
    of an epoch; writing them would replace the last good checkpoint with a useless one.
    """
    parts = {"state_dict": checkpoint.get("state_dict", {})}
    parts["optimizer_states"] = checkpoint.get("optimizer_states", [])
    for name, tensor in _tensors(parts):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            where = (
                f"epoch {checkpoint.get('epoch', '?')}, step {checkpoint.get('global_step', '?')}"
            )
            raise NonFiniteWeightsError(
                f"training diverged: '{name.split('.', 1)[1]}' holds NaN or inf at {where}, so "
                f"'{target.name}' was not written and the last good checkpoint is kept; lower "
                f"optimizer.lr or add optimizer.warmup_epochs, then resume={run_dir_of(target)}"
            )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:160] if text else type(error).__name__


def load_checkpoint(
    path: str | Path, map_location: Any = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """Load a Lightning checkpoint with weights_only=True and turn failures into one line.

    Only tensors and plain containers are unpickled; a file that holds any other Python
    object (which could run code while loading) is refused before anything in it runs.

    Raises:
        UserError: the file is missing, unreadable, truncated, not a checkpoint, or holds
            objects that weights_only loading refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint '{path}' does not exist; pass a .ckpt file or a run directory")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        # "Unsupported global: GLOBAL x" or "unsupported GLOBAL x whose module y is blocked"
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if found:
            raise UserError(
                f"cannot load checkpoint '{path}': it holds a Python object ({found.group(1)}) "
                "that could run code, so it was refused and nothing in it ran; ssl_syre loads "
                "only tensors and plain containers (weights_only=True): use a checkpoint it wrote"
            ) from None
        raise UserError(
            f"cannot load checkpoint '{path}': it is corrupt or not a checkpoint (it does not "
            "unpickle as tensors and plain containers); use a run's checkpoints/last.ckpt"
        ) from None
    except OSError as error:
        raise UserError(f"cannot load checkpoint '{path}': {_first_line(error)}") from None
    except Exception as error:  # truncated zip, random bytes, empty file: many error types
        raise UserError(
            f"cannot load checkpoint '{path}': it is truncated or not a checkpoint "
            f"({_first_line(error)}); use a run's checkpoints/last.ckpt, or the epochNNN.ckpt "
            "beside it"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(
            f"cannot load checkpoint '{path}': it holds no model weights (no state_dict), so "
            "it is not a training checkpoint"
        )
    return checkpoint


class EpochCheckpoint(ModelCheckpoint):
    """ModelCheckpoint every `every_n_epochs` epochs that still leaves last.ckpt at the end
    of training and on Ctrl-C.

    Each checkpoint write is fsynced (AtomicCheckpointIO), which a long run pays at every
    epoch. Between writes, the epoch-end state is held in host memory instead (a copy, no
    disk), and written as last.ckpt if the run is interrupted: a resumed run then continues
    from the last finished epoch, exactly as with a checkpoint every epoch. Lightning's own
    `on_train_end` writes last.ckpt only when no checkpoint was saved at all.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._held: dict[str, Any] | None = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._held = None
        if self._every_n_epochs > 1 and self._last_global_step_saved != trainer.global_step:
            state = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
            self._held = apply_to_collection(
                state, torch.Tensor, lambda t: t.detach().to("cpu", copy=True)
            )

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        super().on_exception(trainer, pl_module, exception)
        if self._held is not None and isinstance(exception, KeyboardInterrupt):
            path = os.path.join(str(self.dirpath), self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION)
            trainer.strategy.save_checkpoint(self._held, path)
            self._held = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
