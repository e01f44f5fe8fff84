"""Checkpoints that survive kills and full disks, hold no NaN, and load without unpickling code."""

from __future__ import annotations

import dataclasses
import errno
import glob
import os
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.apply_func import apply_to_collection
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ssl_syre.atomic_write import write_atomically
from ssl_syre.errors import UserError
from ssl_syre.training.run_dir import run_dir_of

# Write failures that the user fixes (space, quota, permissions, read-only disk).
USER_FIXABLE_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
# Config sections that are mappings (a section given as a number cannot be merged).
_CONFIG_SECTIONS = ("backbone", "data", "optimizer", "syre", "eval", "trainer", "method_kwargs")
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
        try:
            write_atomically(target, lambda file: torch.save(checkpoint, file))
        except BaseException as error:
            cause = user_fixable_os_error(error)
            if cause is not None:
                raise UserError(
                    f"cannot write checkpoint '{target}': {os.strerror(cause.errno)}; the "
                    f"previous checkpoint is intact: fix this, then resume={run_dir_of(target)}"
                ) from None
            raise

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_checkpoint(path, map_location=map_location or "cpu")


def user_fixable_os_error(error: BaseException) -> OSError | None:
    """The OSError the user can fix (full disk, quota, permissions) behind `error`, if any.

    torch's zip writer reports a failed write as `RuntimeError: [enforce fail at
    inline_container.cc] unexpected pos` and keeps the OSError (ENOSPC) only in the
    exception's `__context__`, so the whole chain is searched.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in USER_FIXABLE_WRITE_ERRORS:
            return current
        current = current.__cause__ or current.__context__
    return None


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
    _check_container(path)
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
    check_structure(checkpoint, path)
    return checkpoint


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6: a zip archive


def _check_container(path: Path) -> None:
    """Say what an empty or legacy-format file is before torch describes it in mmap terms."""
    try:
        with open(path, "rb") as file:
            head = file.read(4)
    except OSError as error:
        raise UserError(f"cannot read checkpoint '{path}': {_first_line(error)}") from None
    if not head:
        raise UserError(
            f"cannot load checkpoint '{path}': the file is empty (0 bytes), as a write stopped "
            "before its first byte leaves it; use the epochNNN.ckpt beside it, or train again"
        )
    if head != ZIP_MAGIC:
        raise UserError(
            f"cannot load checkpoint '{path}': it is not in torch.save's zip format (a legacy "
            "pickle file from torch < 1.6, or not a checkpoint); ssl_syre writes and reads only "
            "the zip format: use a checkpoint that train.py wrote"
        )


# Where ssl_syre keeps what it needs in a checkpoint, and the type each must have.
_SECTIONS = {"hyper_parameters": dict, "callbacks": dict, "optimizer_states": list, "syre": dict}


def _malformed(path: Path, where: str, found: Any, wanted: str) -> UserError:
    return UserError(
        f"cannot load checkpoint '{path}': its {where} is {type(found).__name__} "
        f"{str(found)[:40]!r}, not {wanted}, so it was not written by ssl_syre; use a run's "
        "checkpoints/last.ckpt"
    )


def check_structure(checkpoint: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint whose parts have the wrong types, before anything reads them.

    weights_only loading guarantees tensors and plain containers, not their shape: a file
    with `hyper_parameters=3` or `state_dict=[1]` would otherwise fail deep inside resume,
    evaluation or export with a traceback.

    Raises:
        UserError: naming the part, what it holds and what it should hold.
    """
    from ssl_syre.data import DataInfo  # here: data imports torchvision, heavy for a check

    state = checkpoint["state_dict"]
    if not isinstance(state, dict):
        raise _malformed(path, "state_dict", state, "a mapping of names to tensors")
    for name, tensor in state.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise _malformed(path, f"state_dict entry {name!r}", tensor, "a tensor")
    for key, kind in _SECTIONS.items():
        if key in checkpoint and not isinstance(checkpoint[key], kind):
            raise _malformed(path, key, checkpoint[key], f"a {kind.__name__}")
    hparams = checkpoint.get("hyper_parameters", {})
    cfg = hparams.get("cfg", {})
    if not isinstance(cfg, dict):
        raise _malformed(path, "hyper_parameters.cfg", cfg, "a mapping of config keys")
    for section, value in cfg.items():
        if section in _CONFIG_SECTIONS and not isinstance(value, dict):
            raise _malformed(path, f"config section '{section}'", value, "a mapping")
    if "info" in hparams:
        info = hparams["info"]
        if not isinstance(info, dict):
            raise _malformed(path, "hyper_parameters.info", info, "a mapping (DataInfo)")
        fields = {field.name for field in dataclasses.fields(DataInfo)}
        required = {
            field.name
            for field in dataclasses.fields(DataInfo)
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        }
        unknown, missing = sorted(set(info) - fields), sorted(required - set(info))
        if unknown or missing:
            what = f"unknown key '{unknown[0]}'" if unknown else f"no '{missing[0]}'"
            raise UserError(
                f"cannot load checkpoint '{path}': its hyper_parameters.info (the data "
                f"description) has {what}, so it was not written by this ssl_syre; use a run's "
                "checkpoints/last.ckpt"
            )


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
