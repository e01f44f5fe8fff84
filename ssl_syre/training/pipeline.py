"""The training job behind train.py: data, method, Trainer, then the end-of-run results.

The final evaluation and the export are `results.finish`; the run directory is locked for
the life of the job (`run_dir.run_lock`), so no second process trains the same run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from ssl_syre.atomic_write import write_text_atomically
from ssl_syre.config import DEFAULT_CONFIG, load_config
from ssl_syre.data import (
    build_eval_datasets,
    build_ssl_dataset,
    data_info,
    seeded_subset,
    uint8_transform,
    whole_split,
)
from ssl_syre.data.loaders import train_loader, training_device
from ssl_syre.errors import UserError
from ssl_syre.evaluation.umap_plot import check_umap_installed
from ssl_syre.export import state_dict_mismatch
from ssl_syre.export.hub import check_hub_ready
from ssl_syre.methods import METHODS, SSLMethod
from ssl_syre.methods.base import NonFiniteLossError
from ssl_syre.training.callbacks import (
    LossProgressBar,
    OnlineEvaluation,
    OnlineLinearProbe,
    ReseedEachEpoch,
    UmapEveryNEpochs,
)
from ssl_syre.training.checkpoint import (
    AtomicCheckpointIO,
    EpochCheckpoint,
)
from ssl_syre.training.distributed import SyReAnchorCheck
from ssl_syre.training.loggers import build_loggers, check_loggers_ready, log_summary
from ssl_syre.training.results import finish
from ssl_syre.training.resume import check_resumable
from ssl_syre.training.run_dir import (
    CHECKPOINTS,
    CONFIG,
    RUN_DIR_ENV,
    check_run_name,
    claim,
    last_checkpoint,
    log_version,
    make_run_dir,
    remove_log_version,
    run_lock,
)

# Lightning precision modes that keep the weights themselves in 16 bits ("transformer-engine"
# casts them to bf16, "-float16" to fp16). The int and short string aliases (16, "16", "bf16")
# name the *mixed* modes, with fp32 weights; 64/"64"/"64-true" keep fp64 weights.
SIXTEEN_BIT_WEIGHTS = ("16-true", "bf16-true", "transformer-engine", "transformer-engine-float16")


def parse_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split `[CONFIG.yaml ...] [key=value ...]` into the config paths and the overrides.

    Config files are the words without '=', merged in the order given (a later file's keys
    win); they may stand anywhere among the overrides, which win over every file.
    """
    return [arg for arg in argv if "=" not in arg], [arg for arg in argv if "=" in arg]


class DeferredTransform:
    """The workers-path transform, bound to the model's `make_transform()` once the model is
    built: its views may depend on its settings and backbone (DINO's multi-crop), and building
    the model before the data would change the random draws of its initialization."""

    def __init__(self) -> None:
        self.transform: Any = None

    def bind(self, transform: Any) -> None:
        self.transform = transform

    def __call__(self, image: Any) -> Any:
        return self.transform(image)


def trainer_kwargs(cfg: DictConfig, steps_per_epoch: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = OmegaConf.to_container(cfg.trainer, resolve=True)  # type: ignore[assignment]
    kwargs.setdefault("log_every_n_steps", max(1, min(50, steps_per_epoch)))
    on_gpu = torch.cuda.is_available() and kwargs.get("accelerator", "auto") not in ("cpu",)
    if on_gpu:  # cuDNN autotuning: fast convolutions; bitwise repeatability is a CPU promise
        kwargs.setdefault("benchmark", True)
    else:
        kwargs.setdefault("deterministic", "warn")
    precision = str(kwargs.get("precision", "32-true"))
    if precision in SIXTEEN_BIT_WEIGHTS:
        # Both arms decay through SyRe's update (toward θ0, or toward 0 when syre.enabled=false).
        raise UserError(
            f"trainer.precision={precision} keeps the weights in 16 bits, where the decay's pull "
            "falls below one ulp; use trainer.precision=bf16-mixed (fp32 master weights)"
        )
    return kwargs


def _quiet_lightning() -> contextlib.ExitStack:
    """Silence Lightning's warnings and info lines (device summary, precision notes)."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    for name in ("lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        stack.callback(logger.setLevel, logger.level)
        logger.setLevel(logging.ERROR)
    return stack


def check_trainer(cfg: DictConfig, steps_per_epoch: int) -> dict[str, Any]:
    """The Trainer arguments of this run, checked by building a Trainer with them.

    Runs before the run directory exists, so that a bad `trainer.*` value creates nothing.
    Lightning's own complaint (a MisconfigurationException, ValueError or TypeError) becomes
    one line naming the key; the key is found by leaving out one setting at a time.

    Raises:
        UserError: a `trainer.*` value Lightning refuses, or a precision SyRe cannot work in.
    """
    kwargs = trainer_kwargs(cfg, steps_per_epoch)
    fixed = {"logger": False, "enable_checkpointing": False, "callbacks": []}

    def refusal(arguments: dict[str, Any]) -> Exception | None:
        with _quiet_lightning():
            try:
                pl.Trainer(**arguments, **fixed)
            except (MisconfigurationException, ValueError, TypeError, RuntimeError) as error:
                return error
        return None

    error = refusal(kwargs)
    if error is None:
        return kwargs
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    culprits = [
        key for key in cfg.trainer if refusal({k: v for k, v in kwargs.items() if k != key}) is None
    ]
    if len(culprits) == 1:
        key = culprits[0]
        raise UserError(
            f"bad value for config key 'trainer.{key}' ({kwargs[key]!r}): Lightning says: {message}"
        )
    settings = ", ".join(f"trainer.{key}={value!r}" for key, value in cfg.trainer.items())
    raise UserError(f"Lightning refuses the trainer settings ({settings}): {message}")


def quiet_known_warnings() -> None:
    """Silence warnings that say nothing to our users.

    Epoch-level values we log under DDP (SyRe distances, online kNN on rank 0) are identical
    on every process or rank-0 only, so Lightning's advice to sync them does not apply.
    """
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # A resume writes into its own checkpoints/ folder; one inside an epoch skips the trained
    # batches itself (ReseedEachEpoch), which Lightning cannot see in the DataLoader.
    warnings.filterwarnings(
        "ignore", message=r".*Checkpoint directory .* exists and is not empty.*"
    )
    warnings.filterwarnings("ignore", message=".*checkpoint that ended before the epoch ended.*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "litlogger" not in record.getMessage()
    )


def train(cfg: DictConfig) -> Path:
    """Pre-train, evaluate and export; return the run directory."""
    check_run_name(cfg.run_name)
    quiet_known_warnings()
    started = time.time()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    info = data_info(cfg.data)
    method_cls: type[SSLMethod] = METHODS[cfg.method]
    if cfg.data.augment_on == "workers":
        transform: Any = DeferredTransform()  # the model's own, bound once it is built
    else:  # in-memory data sets serve uint8 as they are; image folders decode to uint8
        min_scale = min(r.min_scale for r in method_cls.view_recipes(info, cfg.data))
        transform = uint8_transform(info, min_scale)
    train_set = build_ssl_dataset(cfg.data, transform, cfg.seed)
    if len(train_set) < cfg.data.batch_size:
        raise UserError(
            f"data.batch_size={cfg.data.batch_size} is larger than the training set "
            f"({len(train_set)} images); lower data.batch_size"
        )
    eval_train, eval_test = build_eval_datasets(cfg.data, cfg.seed)
    # Everything the user's settings can break is built before the run directory exists, so
    # that a bad value (backbone, trainer.*) leaves nothing behind.
    check_subset_sizes(cfg, train_set, eval_test)
    model = method_cls(cfg, info)
    if isinstance(transform, DeferredTransform):
        transform.bind(model.make_transform())
    kwargs = check_trainer(cfg, len(train_set) // cfg.data.batch_size)
    check_tools(cfg)
    run_dir = make_run_dir(cfg)
    with contextlib.ExitStack() as held:
        lock = None
        if rank_zero_only.rank == 0:  # DDP children train the run that rank 0 locked
            lock = held.enter_context(run_lock(run_dir))
        if cfg.resume:
            check_resumable(last_checkpoint(run_dir), cfg)
        if lock is not None:
            claim(lock)
        sets_env = RUN_DIR_ENV not in os.environ  # cleared after fit, so a next train() starts anew
        os.environ[RUN_DIR_ENV] = str(run_dir)
        if rank_zero_only.rank == 0:  # a resume records what the run now is (max_steps, lr)
            write_text_atomically(run_dir / CONFIG, OmegaConf.to_yaml(cfg))

        # Order (and worker seeds) from (seed, epoch) alone: a resumed run replays the same epochs.
        loader, sampler = train_loader(
            train_set, cfg.data, cfg.seed, cfg.data.augment_on, training_device(cfg.trainer)
        )
        callbacks: list[pl.Callback] = [
            ReseedEachEpoch(cfg.seed, sampler, batch_size=cfg.data.batch_size),
            EpochCheckpoint(
                dirpath=run_dir / CHECKPOINTS,
                filename="epoch{epoch:03d}",
                auto_insert_metric_name=False,
                save_last=True,
                save_top_k=1,
                every_n_epochs=int(getattr(cfg, "checkpoint_every_n_epochs", 1)),
                # Else a resumed run that was moved or copied writes last-v1.ckpt beside the
                # stale last.ckpt, and the next resume silently goes back to the stale one.
                enable_version_counter=False,
            ),
            LearningRateMonitor(logging_interval="epoch"),
        ]
        if cfg.trainer.get("enable_progress_bar", True):
            callbacks.append(LossProgressBar())
        anchor_check = SyReAnchorCheck() if cfg.syre.enabled else None
        if anchor_check is not None:
            callbacks.append(anchor_check)
        probe = None
        if cfg.eval.online_linear_probe and info.num_classes > 0:
            probe = OnlineLinearProbe(
                model.feature_dim, info.num_classes, cfg.eval.online_linear_lr
            )
            callbacks.append(probe)
        online = None
        if cfg.eval.online_every_n_epochs > 0 and info.num_classes > 0 and eval_test is not None:
            online = OnlineEvaluation(
                bank=seeded_subset(
                    eval_train, cfg.eval.online_train_subset, cfg.seed, "eval.online_train_subset"
                ),
                test=seeded_subset(
                    eval_test, cfg.eval.online_test_subset, cfg.seed, "eval.online_test_subset"
                ),
                num_classes=info.num_classes,
                every_n_epochs=cfg.eval.online_every_n_epochs,
                k=min(cfg.eval.knn_k),
                temperature=cfg.eval.knn_t,
                batch_size=cfg.eval.batch_size,
                probe=probe,
            )
            callbacks.append(online)
        if cfg.eval.umap_every_n_epochs > 0 and eval_test is not None:
            callbacks.append(
                UmapEveryNEpochs(
                    seeded_subset(
                        eval_test, cfg.eval.online_test_subset, cfg.seed, "eval.online_test_subset"
                    ),
                    cfg.eval.umap_every_n_epochs,
                    cfg.seed,
                    cfg.eval.umap_points,
                    cfg.eval.batch_size,
                )
            )
        version = log_version(run_dir, cfg)
        trainer = pl.Trainer(
            **kwargs,
            default_root_dir=str(run_dir),
            logger=build_loggers(cfg, run_dir, version),
            callbacks=callbacks,
            plugins=[AtomicCheckpointIO()],
        )
        checkpoint = last_checkpoint(run_dir) if cfg.resume else None
        try:
            trainer.fit(model, loader, ckpt_path=str(checkpoint) if checkpoint else None)
        except SystemExit:
            if trainer.interrupted:  # Lightning answers Ctrl-C with exit(1) and SIGINT ignored
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt from None
            raise
        except NonFiniteLossError as error:
            if last_checkpoint(run_dir).is_file():
                raise
            # Nothing to resume from: the advice is a new run, not resume=.
            reason = str(error).split("; the last good checkpoint", 1)[0]
            raise UserError(
                f"{reason}, before the first checkpoint, so there is nothing to resume; lower "
                "optimizer.lr or add optimizer.warmup_epochs and start a new run (another run_name)"
            ) from None
        except RuntimeError as error:
            if checkpoint is not None and "state_dict" in str(error):
                remove_log_version(run_dir, version)
                raise UserError(
                    f"checkpoint '{checkpoint}' was made by another architecture "
                    f"({state_dict_mismatch(error)}); resume with the run's own config.yaml"
                ) from None
            raise
        finally:
            if sets_env:
                os.environ.pop(RUN_DIR_ENV, None)
        if trainer.interrupted:
            raise KeyboardInterrupt
        if trainer.is_global_zero:
            distributed = {
                "world_size": trainer.world_size,
                "global_batch_size": model.global_batch_size(),
                "learning_rate": model.learning_rate(),
                # [first step, peak lr] per stretch: a run resumed at another optimizer.lr has two
                "learning_rate_segments": [list(segment) for segment in model.lr_segments],
                "syre_anchor_fingerprints": anchor_check.fingerprints if anchor_check else [],
            }
            summary = finish(
                cfg, model, info, eval_train, eval_test, run_dir, online, started, distributed
            )
            log_summary(trainer.loggers, summary, model.global_step)
    return run_dir


def check_subset_sizes(cfg: DictConfig, train_set: Dataset, eval_test: Dataset | None) -> None:
    """Warn, in one line, when data.train_subset / data.test_subset ask for more images than
    the split has: the whole split is used, which the user may not expect."""
    splits = [("data.train_subset", cfg.data.train_subset, train_set)]
    if eval_test is not None:
        splits.append(("data.test_subset", cfg.data.test_subset, eval_test))
    for key, size, dataset in splits:
        total = len(whole_split(dataset)[0])  # type: ignore[arg-type]
        if size is not None and size > total:
            warnings.warn(
                f"{key}={size} is larger than the split ({total} images); the whole split is "
                f"used, as with {key}=null",
                UserWarning,
                stacklevel=2,
            )


def check_tools(cfg: DictConfig) -> None:
    """The optional packages and logins this run needs (loggers, UMAP, the Hub), checked on
    rank 0 before the run directory exists, so that a missing one costs no training."""
    if rank_zero_only.rank != 0:
        return
    check_loggers_ready(cfg)
    if cfg.eval.umap or cfg.eval.umap_every_n_epochs > 0:
        check_umap_installed()
    if cfg.export.push_to_hub:
        check_hub_ready(cfg.export.push_to_hub)


def main(argv: list[str]) -> Path | None:
    """python train.py [CONFIG.yaml ...] [dotted.key=value ...]; -h/--help prints the keys."""
    if "-h" in argv or "--help" in argv:
        from ssl_syre.config.usage import train_help

        print(train_help())
        return None
    paths, overrides = parse_args(argv)
    if not paths:
        paths = [str(base)] if (base := base_config(overrides)) else []
    cfg = load_config(paths, overrides)
    return train(cfg)


def base_config(overrides: list[str]) -> Path | None:
    """The config a command without a CONFIG.yaml starts from: the resumed run's own
    config.yaml for `resume=RUN` (so `resume=RUN trainer.max_steps=N` is the whole command),
    else configs/default.yaml where it exists."""
    resume = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == "resume"]
    if resume and resume[-1] not in ("", "null", "None"):
        saved = Path(resume[-1]) / CONFIG
        if saved.is_file():
            return saved
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None
