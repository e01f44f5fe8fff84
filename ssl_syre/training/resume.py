"""What a resume may change: it continues the same run, so it never rewrites what a run is.

A resume (`resume=RUN`) trains on from `RUN/checkpoints/last.ckpt` and then writes the run's
results (metrics.json, eval_indices.json, spectrum.png, export/) again. If it changed the data,
the subsets, the method, the backbone, SyRe or the evaluation, those results would describe
another run than the one config.yaml and the checkpoints hold; if it had nothing to train, it
would only replace a finished run's results. Both are refused before anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssl_syre.config import with_defaults
from ssl_syre.errors import UserError
from ssl_syre.training.checkpoint import load_checkpoint
from ssl_syre.training.run_dir import CONFIG, METRICS, run_dir_of

# Keys a resume may change: how far to train, on which hardware, where the data lives, and
# the lr (a changed optimizer.lr takes effect from the resumed step on). Everything else
# (data, subsets, method, backbone, optimizer name and decay, SyRe, evaluation, export, seed)
# is what the run is.
MAY_CHANGE = (
    "resume",
    "output_dir",
    "run_name",
    "optimizer.lr",
    "data.root",
    "data.download",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.precision",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    # How the same computation runs or is recorded, not what it computes (each tested equal).
    "backbone.compile",
    "data.on_device",
    "eval.on_device",
    "checkpoint_every_n_epochs",
    "loggers",
)
# Whole sections that may change: where the same metrics are sent.
MAY_CHANGE_SECTIONS = ("logger_kwargs.",)
# With views made on the device, DataLoader workers only read and decode: their number
# changes nothing. With views made in the workers, each worker has its own random stream.
MAY_CHANGE_ON_DEVICE_PATH = ("data.num_workers",)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat if flat or not prefix else {prefix: {}}
    return {prefix: value}


class _Unset:
    """A key one of the two configs does not have."""

    def __repr__(self) -> str:
        return "unset"


UNSET = _Unset()


def _override(key: str, value: Any) -> str:
    """KEY=VALUE as the command line writes it."""
    if value is None:
        return f"{key}=null"
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    return f"{key}={value}".replace(" ", "")


def changed_settings(saved: dict[str, Any], cfg: DictConfig) -> list[tuple[str, Any, Any]]:
    """(key, value in the run, value in this command) for each setting a resume may not change."""
    before = _flatten(OmegaConf.to_container(with_defaults(saved), resolve=True))
    now = _flatten(OmegaConf.to_container(cfg, resolve=True))
    allowed = set(MAY_CHANGE)
    if cfg.data.augment_on == "device" and before.get("data.augment_on") == "device":
        allowed |= set(MAY_CHANGE_ON_DEVICE_PATH)
    return [
        (key, before.get(key, UNSET), now.get(key, UNSET))
        for key in sorted(set(before) | set(now))
        if key not in allowed
        and not key.startswith(MAY_CHANGE_SECTIONS)
        and before.get(key, UNSET) != now.get(key, UNSET)
    ]


def _trained(checkpoint: dict[str, Any]) -> tuple[int, int, bool]:
    """(completed epochs, steps, stopped inside an epoch) of a checkpoint."""
    state = checkpoint.get("callbacks", {}).get("ReseedEachEpoch", {})
    epochs = int(state.get("next_epoch", int(checkpoint.get("epoch", -1)) + 1))
    return epochs, int(checkpoint.get("global_step", 0)), int(state.get("done_batches", 0)) > 0


def nothing_to_train(checkpoint: dict[str, Any], cfg: DictConfig) -> str | None:
    """The stop setting the checkpoint already reached ('trainer.max_epochs=2'), or None."""
    epochs, steps, _ = _trained(checkpoint)
    max_steps = cfg.trainer.get("max_steps", -1)
    max_epochs = cfg.trainer.get("max_epochs")
    if max_epochs is None:  # Lightning's default: 1000 epochs unless max_steps is set
        max_epochs = 1000 if max_steps in (-1, None) else -1
    if max_steps not in (-1, None) and steps >= max_steps:
        return f"trainer.max_steps={max_steps}"
    if max_epochs != -1 and epochs >= max_epochs:
        return f"trainer.max_epochs={max_epochs}"
    return None


def results_match(metrics_path: Path, checkpoint: dict[str, Any]) -> bool:
    """True when metrics.json is whole and describes this checkpoint (the same step count).

    A run is finished only then: a metrics.json that a kill cut short, or one older than
    last.ckpt (a resume that trained on and was stopped while writing its results), means the
    results are still to be written, and a resume with the same settings writes them.
    """
    try:
        metrics = json.loads(metrics_path.read_text())
    except (OSError, ValueError):
        return False
    run = metrics.get("run") if isinstance(metrics, dict) else None
    if not isinstance(run, dict):
        return False
    return run.get("steps") == int(checkpoint.get("global_step", -1))


def check_resumable(checkpoint_path: Path, cfg: DictConfig) -> None:
    """Refuse, in one line, a resume that changes what the run is or has nothing to train.

    Compares every setting of the checkpoint's config (the one its last part trained with)
    with this command's, except MAY_CHANGE, before Lightning loads anything, so the message
    names the setting instead of a tensor shape. A finished run (a whole metrics.json at the
    checkpoint's step, `results_match`) whose checkpoint already reached this command's
    max_epochs / max_steps is refused too; an unfinished one (killed while evaluating or
    writing its results) is evaluated and exported again.

    Raises:
        UserError: the checkpoint cannot be loaded safely, a setting differs, or a finished
            run has nothing left to train.
    """
    checkpoint = load_checkpoint(checkpoint_path, mmap=True)
    run_dir = run_dir_of(checkpoint_path)
    saved = checkpoint.get("hyper_parameters", {}).get("cfg")
    if isinstance(saved, dict):
        differ = changed_settings(saved, cfg)
        if differ:
            key, old, new = differ[0]
            more = ""
            if len(differ) > 1:
                more = f" (and {len(differ) - 1} more: {', '.join(k for k, _, _ in differ[1:4])})"
            overrides = [_override(k, v) for k, _, v in differ if v is not UNSET]
            raise UserError(
                f"cannot resume from '{checkpoint_path}': it was trained with {key}={old!r}, "
                f"this command sets {key}={new!r}{more}; a resume continues the same run and "
                "may change only trainer.max_epochs/max_steps, trainer device settings and "
                f"optimizer.lr (docs/reliability.md): to continue it, repeat its settings "
                f"({run_dir / CONFIG}) with resume=; for a new run with these settings: python "
                f"train.py {run_dir / CONFIG} run_name=NEW_NAME {' '.join(overrides[:8])}"
            )
    reached = nothing_to_train(checkpoint, cfg)
    if reached is not None and results_match(run_dir / METRICS, checkpoint):
        epochs, steps, inside = _trained(checkpoint)
        done = f"{epochs} epochs{' and part of the next' if inside else ''}, {steps} steps"
        raise UserError(
            f"cannot resume '{run_dir}': it is finished ({done}), so {reached} leaves nothing "
            "to train and resuming would only overwrite its results; to train it longer raise "
            f"trainer.max_epochs (or trainer.max_steps) past that, to evaluate it again run "
            f"eval/knn.py {run_dir}, or start a new run: python train.py {run_dir / CONFIG} "
            "run_name=NEW_NAME KEY=VALUE"
        )
