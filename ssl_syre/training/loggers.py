"""Lightning loggers by config (`loggers: [csv, tensorboard, wandb, mlflow]`), checked up front.

Lightning sends every `self.log` value (loss, lr, online kNN and probe, RankMe, SyRe
distance) to each logger of the Trainer, so the trackers show the same metrics. W&B and
MLflow are optional extras; a missing package, a missing W&B login or an unreachable MLflow
server stops the run with one line before its run directory exists.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ssl_syre.errors import UserError, suggest

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger
    from matplotlib.figure import Figure

LOGGERS = ("csv", "tensorboard", "wandb", "mlflow")
# Keys ssl_syre sets itself: where a logger writes and what it names the run.
OWN_KEYS = {
    "csv": ("save_dir", "name", "version"),
    "tensorboard": ("save_dir", "name", "version"),
    "wandb": ("save_dir", "dir"),
    "mlflow": ("save_dir",),
}
WANDB_OFFLINE_MODES = ("offline", "disabled", "dryrun")
MLFLOW_DB = "mlflow.db"  # the run's own MLflow store (SQLite: MLflow 3 refuses plain files)
MLFLOW_ARTIFACTS = "mlflow-artifacts"


def logger_kwargs(cfg: DictConfig, name: str) -> dict[str, Any]:
    """`logger_kwargs.<name>` as a plain dict ({} when not given)."""
    value = cfg.logger_kwargs.get(name)
    if value is None:
        return {}
    return dict(OmegaConf.to_container(value, resolve=True))  # type: ignore[arg-type]


def _logger_class(name: str) -> type:
    from lightning.pytorch import loggers

    return {
        "csv": loggers.CSVLogger,
        "tensorboard": loggers.TensorBoardLogger,
        "wandb": loggers.WandbLogger,
        "mlflow": loggers.MLFlowLogger,
    }[name]


def check_logger_settings(cfg: DictConfig) -> None:
    """Check `loggers` and `logger_kwargs` (names and keys), without importing W&B or MLflow.

    Raises:
        UserError: an unknown or repeated logger, kwargs for a logger not in `loggers`, or a
            keyword the logger does not take or ssl_syre sets itself.
    """
    names = [str(name) for name in cfg.loggers]
    for name in names:
        if name not in LOGGERS:
            raise UserError(
                f"unknown logger '{name}' in config key 'loggers'{suggest(name, LOGGERS)}; "
                f"choose from {', '.join(LOGGERS)}"
            )
    if len(set(names)) < len(names):
        raise UserError(f"config key 'loggers' names a logger twice: {names}")
    for name in cfg.logger_kwargs:
        if name not in names:
            raise UserError(
                f"config key 'logger_kwargs.{name}' is set but '{name}' is not in loggers "
                f"({names}); add it, e.g. loggers=[{','.join([*names, str(name)])}]"
            )
        if not isinstance(cfg.logger_kwargs[name], DictConfig):
            raise UserError(
                f"config key 'logger_kwargs.{name}' must hold keyword arguments "
                f"(logger_kwargs.{name}.KEY=VALUE)"
            )
        parameters = inspect.signature(_logger_class(str(name)).__init__).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        for key in cfg.logger_kwargs[name]:
            if key in OWN_KEYS[str(name)]:
                raise UserError(
                    f"'logger_kwargs.{name}.{key}' is set by ssl_syre (the run directory); "
                    "remove it"
                )
            if key not in parameters and not takes_any:
                raise UserError(
                    f"unknown config key 'logger_kwargs.{name}.{key}'"
                    f"{suggest(str(key), list(parameters))}; see {_logger_class(str(name)).__name__}"
                )


def wandb_offline(kwargs: dict[str, Any]) -> bool:
    """Whether W&B logs offline: logger_kwargs.wandb.offline/mode, or WANDB_MODE."""
    mode = kwargs.get("mode") or os.environ.get("WANDB_MODE", "")
    return bool(kwargs.get("offline")) or str(mode) in WANDB_OFFLINE_MODES


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_loggers_ready(cfg: DictConfig) -> None:
    """Check that each logger can start: its package is installed and it can log in.

    Called before the run directory exists. W&B online needs an API key, which is verified
    with the server; MLflow with a remote `tracking_uri` needs the server to answer.

    Raises:
        UserError: naming the extra to install or the fix.
    """
    for name in cfg.loggers:
        if name not in ("wandb", "mlflow"):
            continue
        try:
            module = __import__(name)
        except ImportError:
            raise UserError(
                f"loggers: {name} needs the {name} package, which is not installed; "
                f'pip install -e ".[{name}]" (or pip install {name}), or drop it from loggers'
            ) from None
        kwargs = logger_kwargs(cfg, name)
        if name == "wandb" and not wandb_offline(kwargs):
            _check_wandb_login(module)
        if name == "mlflow" and str(kwargs.get("tracking_uri", "")).startswith("http"):
            _check_mlflow_server(module, str(kwargs["tracking_uri"]))


def _check_wandb_login(wandb: Any) -> None:
    fix = (
        "run `wandb login` (or set WANDB_API_KEY), or log offline with WANDB_MODE=offline "
        "or logger_kwargs.wandb.offline=true (then `wandb sync RUN/wandb/offline-run-*`)"
    )
    if not wandb.login(prompt=False, verify=False):
        raise UserError(f"loggers: wandb is not logged in; {fix}")
    try:
        wandb.login(prompt=False, verify=True, timeout=10)
    except Exception as error:  # wandb.errors.CommError and its subclasses, network errors
        first = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
        raise UserError(f"loggers: wandb cannot log in ({first}); {fix}") from None


def _check_mlflow_server(mlflow: Any, uri: str) -> None:
    try:
        with _environment(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10"):
            mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as error:  # MlflowException, requests' connection errors
        first = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
        raise UserError(
            f"loggers: the MLflow server at logger_kwargs.mlflow.tracking_uri={uri} does not "
            f"answer ({first}); start it, fix the URI, or drop tracking_uri to log into the run "
            "directory"
        ) from None


def build_loggers(cfg: DictConfig, run_dir: Path, version: str) -> list[Logger]:
    """The Trainer's loggers, each writing inside `run_dir`.

    `version` is '' for a new run and resume-N for a continuation (see run_dir.log_version):
    CSV and TensorBoard log to logs/<version>, W&B and MLflow start a run named after the
    run directory and the version.
    """
    run_name = run_dir.name + (f"-{version}" if version else "")
    loggers: list[Logger] = []
    for name in cfg.loggers:
        kwargs = logger_kwargs(cfg, name)
        cls = _logger_class(name)
        if name in ("csv", "tensorboard"):
            loggers.append(cls(save_dir=str(run_dir), name="logs", version=version, **kwargs))
        elif name == "wandb":
            kwargs.setdefault("project", "ssl_syre")
            kwargs.setdefault("name", run_name)
            loggers.append(cls(save_dir=str(run_dir), **kwargs))
        else:
            kwargs.setdefault("experiment_name", "ssl_syre")
            kwargs.setdefault("run_name", run_name)
            if "tracking_uri" not in kwargs:
                kwargs["tracking_uri"] = f"sqlite:///{(run_dir / MLFLOW_DB).resolve()}"
                kwargs.setdefault("artifact_location", str((run_dir / MLFLOW_ARTIFACTS).resolve()))
            loggers.append(cls(**kwargs))
    return loggers


def log_figure(loggers: list[Logger], key: str, figure: Figure, step: int) -> None:
    """Send a matplotlib figure to each logger that stores pictures (not CSV)."""
    from lightning.pytorch import loggers as pl_loggers

    for logger in loggers:
        if isinstance(logger, pl_loggers.TensorBoardLogger):
            logger.experiment.add_figure(key, figure, global_step=step, close=False)
        elif isinstance(logger, pl_loggers.WandbLogger):
            figure.canvas.draw()
            pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3]  # type: ignore[attr-defined]
            logger.log_image(key, [pixels], step=step)
        elif isinstance(logger, pl_loggers.MLFlowLogger):
            logger.experiment.log_figure(logger.run_id, figure, f"{key}/step{step:07d}.png")


def log_summary(loggers: list[Logger], summary: dict[str, float], step: int) -> None:
    """Send the run's final results to every logger after training (each flushed at once)."""
    for logger in loggers:
        logger.log_metrics(summary, step=step)
        logger.save()
