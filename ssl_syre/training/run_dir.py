"""Run directories: what a run writes where, and how every process of a run finds the same one.

A run directory holds config.yaml, checkpoints/ (last.ckpt and the best epochNNN.ckpt),
logs/ (logs/resume-N for each continuation), metrics.json, eval_indices.json, spectrum.png
and export/. Everything that reads or names those paths (the training job, checkpoint
messages, eval/*.py, the export command) asks this module.
"""

from __future__ import annotations

import os
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
            run_dir.mkdir(parents=True)
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
    run_dir.mkdir(parents=True)
    return run_dir


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
