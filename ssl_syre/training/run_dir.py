"""Run directories: what a run writes where, and how every process of a run finds the same one.

A run directory holds config.yaml, checkpoints/ (last.ckpt and the best epochNNN.ckpt),
logs/ (logs/resume-N for each continuation), metrics.json, eval_indices.json, spectrum.png
and export/. Everything that reads or names those paths (the training job, checkpoint
messages, eval/*.py, the export command) asks this module.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from ssl_syre.errors import UserError

RUN_DIR_ENV = "SSL_SYRE_RUN_DIR"  # hands rank 0's run directory to DDP's child processes
CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
METRICS = "metrics.json"
EVAL_INDICES = "eval_indices.json"  # positions of the evaluation images in their splits
EXPORT = "export"
LOCK = ".lock"  # held (flock) by the process that trains the run; holds its pid


def last_checkpoint(run_dir: str | Path) -> Path:
    """RUN_DIR/checkpoints/last.ckpt: the checkpoint a resume and eval/*.py start from."""
    return Path(run_dir) / CHECKPOINTS / LAST_CHECKPOINT


def run_dir_of(checkpoint: str | Path) -> Path:
    """The run directory a checkpoint belongs to: the folder above checkpoints/, else its own.

    The path is kept as given (relative stays relative, as in the commands we print), unless
    it has no folder name to look at (`last.ckpt` inside checkpoints/), which resolves it.
    """
    parent = Path(checkpoint).parent
    if parent.name in ("", ".."):
        parent = parent.resolve()
    return parent.parent if parent.name == CHECKPOINTS else parent


def is_run_dir(path: str | Path) -> bool:
    """True for a folder that train.py made (it holds config.yaml or checkpoints/)."""
    return (Path(path) / CONFIG).is_file() or (Path(path) / CHECKPOINTS).is_dir()


def make_run_dir(cfg: DictConfig) -> Path:
    """Create a fresh run directory, or return the one being resumed; never overwrite a run.

    Processes started by Lightning's DDP launcher inherit rank 0's directory through
    RUN_DIR_ENV. Processes started by torchrun or srun start together and cannot talk before
    the Trainer exists, so they agree on a name instead: `run_name`, or one made of the
    method, the data set and the launcher's job id.

    Raises:
        UserError: resume of a folder without checkpoints/last.ckpt, a run name that exists,
            or an external launch without a shared name.
    """
    inherited = os.environ.get(RUN_DIR_ENV)
    # rank_zero_only.rank is read from RANK / LOCAL_RANK / SLURM_PROCID at import, then set by
    # the Trainer. Only a DDP child inherits; in rank 0 the variable is left over from an
    # earlier train() in the same process.
    if inherited and rank_zero_only.rank != 0:
        return Path(inherited)
    if cfg.resume:
        run_dir = Path(cfg.resume)
        if not last_checkpoint(run_dir).is_file():
            raise UserError(
                f"cannot resume '{run_dir}': no {CHECKPOINTS}/{LAST_CHECKPOINT} there; pass the "
                "run directory that train.py printed (its checkpoint is written after each epoch)"
            )
        return run_dir
    launcher = next(
        (env() for env in (TorchElasticEnvironment, SLURMEnvironment) if env.detect()), None
    )
    if launcher is not None and launcher.world_size() > 1:
        return _shared_run_dir(cfg)
    name = cfg.run_name or f"{cfg.method}_{cfg.data.name}_{datetime.now():%Y%m%d-%H%M%S}"
    run_dir = Path(cfg.output_dir) / name
    suffix = 0
    while True:
        try:  # mkdir claims the name atomically, even against a run started the same second
            _make(run_dir, Path(cfg.output_dir))
            return run_dir
        except FileExistsError:
            if cfg.run_name:
                raise UserError(
                    f"run directory '{run_dir}' already exists; choose another run_name, or "
                    f"continue it with resume={run_dir}"
                ) from None
            suffix += 1
            run_dir = Path(cfg.output_dir) / f"{name}-{suffix}"


def _shared_run_dir(cfg: DictConfig) -> Path:
    """The directory every process of a torchrun / srun launch names alike; rank 0 makes it."""
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID", "")
    job = "" if job == "none" else job  # torchrun's default --rdzv-id
    name = cfg.run_name or (f"{cfg.method}_{cfg.data.name}_job{job}" if job else None)
    if name is None:
        raise UserError(
            "several processes were launched (torchrun/srun) without a shared run name; "
            "add run_name=NAME so that all of them write to one run directory"
        )
    run_dir = Path(cfg.output_dir) / name
    if rank_zero_only.rank != 0:
        return run_dir
    if run_dir.exists():
        raise UserError(f"run directory '{run_dir}' already exists; choose another run_name")
    _make(run_dir, Path(cfg.output_dir))
    return run_dir


def _make(run_dir: Path, output_dir: Path) -> None:
    """mkdir the run directory; an output_dir that is a file or not writable in one line.

    Raises:
        FileExistsError: the run directory exists (the caller picks another name).
        UserError: output_dir (or a folder above it) is a file, or cannot be written.
    """
    blocker = next((p for p in (output_dir, *output_dir.parents) if p.is_file()), None)
    if blocker is not None:
        raise UserError(
            f"output_dir '{output_dir}' cannot hold runs: '{blocker}' is a file, not a folder; "
            "pass output_dir=FOLDER"
        )
    try:
        run_dir.mkdir(parents=True)
    except FileExistsError:
        raise
    except OSError as error:
        raise UserError(
            f"cannot create run directory '{run_dir}' ({error.strerror or error}); pass "
            "output_dir= a writable folder"
        ) from None


def check_run_name(run_name: str | None) -> None:
    """A run_name is one folder name inside output_dir: no '/', no '..', not absolute.

    Raises:
        UserError: a name that would put the run outside output_dir or in a sub-folder.
    """
    if run_name is None:
        return
    name = str(run_name)
    if name in ("", ".", "..") or "/" in name or os.sep in name or "\0" in name:
        raise UserError(
            f"run_name={name!r} is not a folder name: a run lives directly in output_dir, so "
            "run_name may not be empty, absolute, or hold '/' or '..'; set output_dir= for "
            "another place and run_name=NAME for the folder"
        )


def log_version(run_dir: Path, cfg: DictConfig) -> str:
    """'' (logs/) for a new run, resume-N for its N-th continuation.

    Lightning's CSVLogger deletes the metrics.csv it finds in its folder, so each part of a
    resumed run logs into a folder of its own and no part's log is lost.
    """
    if not cfg.resume:
        return ""
    number = 1
    while (run_dir / "logs" / f"resume-{number}").exists():
        number += 1
    return f"resume-{number}"


def _unwritable(run_dir: Path, error: OSError) -> UserError:
    return UserError(
        f"cannot write to run directory '{run_dir}' ({error.strerror or error}); to continue it, "
        f"copy it to a writable folder and resume the copy (resume=COPY)"
    )


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[Path]:
    """Hold RUN_DIR/.lock while this process trains the run, so no second one trains it.

    An flock on an open descriptor: the OS releases it when the process ends in any way
    (kill -9 included), so a dead process's lock is free without anyone cleaning up. The
    pid goes into the file for the message a second process prints; call `claim` once the
    run is known to go ahead, so that a refused resume leaves the file as it was.

    Raises:
        UserError: another process holds the lock, or the run directory is not writable.
    """
    path = run_dir / LOCK
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        raise _unwritable(run_dir, error) from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
            raise UserError(
                f"run {run_dir} is being trained by another process (pid {holder}); wait for "
                "it to end (or stop it), then resume"
            ) from None
        yield path
    finally:
        os.close(descriptor)  # releases the lock


def claim(lock: Path) -> None:
    """Write this process's pid into a lock that `run_lock` holds."""
    descriptor = os.open(lock, os.O_WRONLY)
    try:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    finally:
        os.close(descriptor)


def remove_log_version(run_dir: Path, version: str) -> None:
    """Remove logs/resume-N of a resume refused while loading its checkpoint: it holds only
    the loggers' headers (the folder is new: `log_version` picks a free name)."""
    if version:
        shutil.rmtree(run_dir / "logs" / version, ignore_errors=True)
