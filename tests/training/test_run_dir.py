"""Tests for ssl_syre.training.run_dir: where a run writes, and how its processes agree on the folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from lightning.pytorch.utilities import rank_zero_only

from ssl_syre.config import load_config
from ssl_syre.errors import UserError
from ssl_syre.training.run_dir import (
    RUN_DIR_ENV,
    is_run_dir,
    last_checkpoint,
    log_version,
    make_run_dir,
    run_dir_of,
)

LAUNCHER_VARIABLES = (
    "TORCHELASTIC_RUN_ID",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "SLURM_NTASKS",
    "SLURM_NTASKS_PER_NODE",
    "SLURM_JOB_ID",
    "SLURM_JOB_NAME",
    "SLURM_PROCID",
    RUN_DIR_ENV,
)


@pytest.fixture
def single_process(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No launcher in the environment, rank 0: as `python train.py` runs."""
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    return monkeypatch


def config(tmp_path: Path, *overrides: str):
    return load_config(None, ["data.name=digits", f"output_dir={tmp_path}", *overrides])


def test_run_dir_of_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_dir_of(Path("runs/a/checkpoints/last.ckpt")) == Path("runs/a")
    assert run_dir_of(Path("elsewhere/model.ckpt")) == Path("elsewhere")
    assert last_checkpoint("runs/a") == Path("runs/a/checkpoints/last.ckpt")
    (tmp_path / "a" / "checkpoints").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "checkpoints")
    assert run_dir_of(Path("last.ckpt")) == (tmp_path / "a").resolve()
    assert is_run_dir(tmp_path / "a") and not is_run_dir(tmp_path)


def test_fresh_names_never_overwrite(tmp_path: Path, single_process: pytest.MonkeyPatch) -> None:
    first = make_run_dir(config(tmp_path, "run_name=same"))
    assert first == tmp_path / "same" and first.is_dir()
    with pytest.raises(UserError, match="already exists"):
        make_run_dir(config(tmp_path, "run_name=same"))
    dated = [make_run_dir(config(tmp_path)) for _ in range(2)]
    assert dated[0] != dated[1] and all(path.is_dir() for path in dated)


def test_resume_needs_the_last_checkpoint(
    tmp_path: Path, single_process: pytest.MonkeyPatch
) -> None:
    with pytest.raises(UserError, match="no checkpoints/last.ckpt"):
        make_run_dir(config(tmp_path, f"resume={tmp_path}"))
    last_checkpoint(tmp_path).parent.mkdir()
    last_checkpoint(tmp_path).write_bytes(b"")
    cfg = config(tmp_path, f"resume={tmp_path}")
    assert make_run_dir(cfg) == tmp_path
    assert log_version(tmp_path, cfg) == "resume-1"
    (tmp_path / "logs" / "resume-1").mkdir(parents=True)
    assert log_version(tmp_path, cfg) == "resume-2"


def test_a_ddp_child_takes_the_directory_rank_zero_made(
    tmp_path: Path, single_process: pytest.MonkeyPatch
) -> None:
    single_process.setenv(RUN_DIR_ENV, str(tmp_path / "made_by_rank_0"))
    assert make_run_dir(config(tmp_path, "run_name=x")) == tmp_path / "x"  # rank 0: its own
    single_process.setattr(rank_zero_only, "rank", 1)
    assert make_run_dir(config(tmp_path, "run_name=x")) == tmp_path / "made_by_rank_0"
    assert not (tmp_path / "made_by_rank_0").exists()


def test_torchrun_processes_agree_on_the_job_name(
    tmp_path: Path, single_process: pytest.MonkeyPatch
) -> None:
    single_process.setenv("TORCHELASTIC_RUN_ID", "abc")
    single_process.setenv("WORLD_SIZE", "2")
    single_process.setattr(rank_zero_only, "rank", 1)
    other = make_run_dir(config(tmp_path))
    assert other == tmp_path / "simclr_digits_jobabc" and not other.exists()  # rank 0 makes it
    single_process.setattr(rank_zero_only, "rank", 0)
    assert make_run_dir(config(tmp_path)) == other and other.is_dir()
    with pytest.raises(UserError, match="already exists"):
        make_run_dir(config(tmp_path))

    single_process.setenv("TORCHELASTIC_RUN_ID", "none")  # torchrun's default: no shared id
    with pytest.raises(UserError, match="run_name=NAME"):
        make_run_dir(config(tmp_path))
    assert make_run_dir(config(tmp_path, "run_name=shared")) == tmp_path / "shared"

    single_process.setenv("WORLD_SIZE", "1")  # one process under torchrun: an ordinary run
    assert make_run_dir(config(tmp_path)).name.startswith("simclr_digits_2")


def test_srun_processes_agree_on_the_job_name(
    tmp_path: Path, single_process: pytest.MonkeyPatch
) -> None:
    single_process.setenv("SLURM_NTASKS", "2")
    single_process.setenv("SLURM_NTASKS_PER_NODE", "2")
    single_process.setenv("SLURM_JOB_ID", "77")
    assert make_run_dir(config(tmp_path)) == tmp_path / "simclr_digits_job77"
    assert os.listdir(tmp_path) == ["simclr_digits_job77"]
