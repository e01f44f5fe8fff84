"""Loggers by config: names and keyword checks, missing extras and logins refused before the
run directory exists, and (offline) the same metrics in CSV, TensorBoard, W&B and MLflow."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from ssl_syre.config import load_config
from ssl_syre.errors import UserError
from ssl_syre.training.loggers import build_loggers, check_loggers_ready, wandb_offline
from tests.conftest import train_in_process


def test_default_is_csv_and_tensorboard_in_logs(tmp_path: Path) -> None:
    cfg = load_config(None, [])
    assert list(cfg.loggers) == ["csv", "tensorboard"]
    loggers = build_loggers(cfg, tmp_path / "run", "")
    assert [type(logger).__name__ for logger in loggers] == ["CSVLogger", "TensorBoardLogger"]
    assert all(Path(logger.log_dir) == tmp_path / "run" / "logs" for logger in loggers)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (
            ["loggers=[csv,wandbb]"],
            "unknown logger 'wandbb' in config key 'loggers' (did you mean 'wandb'?)",
        ),
        (["loggers=[csv,csv]"], "names a logger twice"),
        (["logger_kwargs.wandb.project=x"], "'wandb' is not in loggers"),
        (["loggers=[csv]", "logger_kwargs.csv.save_dir=x"], "set by ssl_syre"),
        (
            ["loggers=[csv]", "logger_kwargs.csv.flush_every=3"],
            "unknown config key 'logger_kwargs.csv.flush_every' (did you mean 'flush_logs_every_n_steps'?)",
        ),
        (["loggers=[mlflow]", "logger_kwargs.mlflow=3"], "must hold keyword arguments"),
    ],
)
def test_bad_logger_settings_are_one_line(overrides: list[str], needle: str) -> None:
    with pytest.raises(UserError, match=None) as error:
        load_config(None, overrides)
    assert needle in str(error.value)


def test_logger_kwargs_reach_the_logger(tmp_path: Path) -> None:
    cfg = load_config(None, ["loggers=[csv]", "logger_kwargs.csv.flush_logs_every_n_steps=7"])
    (logger,) = build_loggers(cfg, tmp_path, "resume-1")
    assert logger._flush_logs_every_n_steps == 7  # noqa: SLF001
    assert Path(logger.log_dir) == tmp_path / "logs" / "resume-1"


@pytest.mark.parametrize("name", ["wandb", "mlflow"])
def test_a_missing_package_names_its_extra(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, name, None)  # import now fails, as if not installed
    cfg = load_config(None, [f"loggers=[csv,{name}]"])
    with pytest.raises(UserError, match=rf'pip install -e "\.\[{name}\]"'):
        check_loggers_ready(cfg)


def test_a_missing_package_stops_train_before_the_run_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(UserError, match="mlflow"):
        train_in_process(tmp_path / "runs", "loggers=[csv,mlflow]")
    assert not (tmp_path / "runs").exists()


def test_wandb_offline_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert not wandb_offline({})
    assert wandb_offline({"offline": True})
    assert wandb_offline({"mode": "offline"})
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_offline({})


def test_wandb_without_login_is_one_line_before_the_run_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("wandb")
    for key in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: not logged in
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    with pytest.raises(
        UserError, match="wandb is not logged in; run `wandb login`.*WANDB_MODE=offline"
    ):
        train_in_process(tmp_path / "runs", "loggers=[csv,wandb]")
    assert not (tmp_path / "runs").exists()


def test_mlflow_server_that_does_not_answer_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    cfg = load_config(
        None,
        ["loggers=[mlflow]", "logger_kwargs.mlflow.tracking_uri=http://127.0.0.1:9"],
    )
    with pytest.raises(UserError, match="MLflow server .* does not answer"):
        check_loggers_ready(cfg)


@pytest.mark.slow
def test_every_logger_gets_the_same_metrics_offline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """One tiny run logging to all four; W&B offline, MLflow into the run directory; the UMAP
    picture of every epoch to the three that keep pictures."""
    wandb = pytest.importorskip("wandb")
    pytest.importorskip("umap")
    mlflow = pytest.importorskip("mlflow")
    wandb.teardown()  # W&B's process-wide state from earlier tests' logins would ask for a key
    from lightning.pytorch.loggers import WandbLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    wandb_keys: set[str] = set()
    original = WandbLogger.log_metrics

    def spy(self, metrics, step=None):  # the .wandb file is binary; what Lightning handed W&B
        wandb_keys.update(metrics)
        return original(self, metrics, step)

    monkeypatch.setattr(WandbLogger, "log_metrics", spy)
    run_dir = train_in_process(
        tmp_path,
        "loggers=[csv,tensorboard,wandb,mlflow]",
        # Offline in the logger's own arguments too: W&B caches its settings process-wide at
        # its first use, so an earlier test's W&B call would otherwise outrank WANDB_MODE.
        "logger_kwargs.wandb.offline=true",
        "eval.online_every_n_epochs=1",
        "eval.online_linear_probe=true",
        "eval.linear_probe=false",
        "eval.projector=false",
        "eval.raw_pixel_baseline=false",
        "export.enabled=false",
        "eval.umap=true",
        "eval.umap_every_n_epochs=1",
        "eval.umap_points=150",
    )
    ignore = {"epoch", "step", "trainer/global_step"}
    with (run_dir / "logs" / "metrics.csv").open() as file:
        csv_keys = set(csv.DictReader(file).fieldnames or []) - ignore
    events = EventAccumulator(str(run_dir / "logs")).Reload()
    tensorboard_keys = set(events.Tags()["scalars"]) - ignore - {"hp_metric"}
    client = mlflow.MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("ssl_syre").experiment_id])
    mlflow_keys = set(run.data.metrics) - ignore
    expected = {
        "train/loss_epoch",
        "online/knn_top1_backbone",
        "online/rankme_backbone",
        "online/linear_top1_backbone",
        "online_probe/train_top1",
        "syre/distance_to_anchor/backbone",
    }
    assert expected <= csv_keys
    # The final evaluation reaches every logger as the run's summary (not only the curves).
    assert {"final/rankme/backbone", "final/symmetry/dead_units"} <= mlflow_keys, mlflow_keys
    assert any(key.startswith("final/knn_top1/backbone_k") for key in mlflow_keys), mlflow_keys
    # W&B takes pictures through log_metrics too (WandbLogger.log_image): the UMAP's key.
    assert "umap/backbone" in wandb_keys
    assert csv_keys == tensorboard_keys == mlflow_keys == wandb_keys - ignore - {"umap/backbone"}
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))  # W&B wrote its run there
    # The UMAP of each epoch reached the loggers that keep pictures; umap.png the run directory.
    assert (run_dir / "umap.png").is_file()
    assert events.Tags()["images"] == ["umap/backbone"]
    assert list((run_dir / "wandb").glob("offline-run-*/files/media/images/umap/backbone_*.png"))
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "umap/backbone")]
    assert artifacts and all(path.endswith(".png") for path in artifacts)
