"""The end-of-run files (metrics.json, eval files, pictures, export/) are written whole or not
at all, and a resume repairs a run whose results are older than its checkpoint (issue 33,
items 1, 2 and 5)."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

from ssl_syre.atomic_write import (
    publish,
    staging_folder,
    write_atomically,
    write_text_atomically,
)
from ssl_syre.errors import UserError
from ssl_syre.export import load_backbone
from ssl_syre.training.checkpoint import AtomicCheckpointIO, load_checkpoint
from ssl_syre.training.pipeline import main
from ssl_syre.training.run_dir import RUN_DIR_ENV
from tests.test_reliability import FAST, cli, one_error_line, train_once

pytestmark = pytest.mark.usefixtures("one_thread")

WITH_EXPORT = [*FAST, "export=true"]


class Killed(BaseException):
    """Stands for SIGKILL in this process: nothing after it runs, no handler catches it."""


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-epoch run with its export (4 steps); tests work on copies."""
    runs = tmp_path_factory.mktemp("finished")
    train_once([*WITH_EXPORT, f"output_dir={runs}", "run_name=done", "trainer.max_epochs=2"])
    return runs / "done"


def steps_in_metrics(run: Path) -> int:
    return json.loads((run / "metrics.json").read_text())["run"]["steps"]


def test_an_interrupted_write_leaves_the_old_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    write_text_atomically(target, '{"old": 1}')

    def half_then_killed(file: Any) -> None:
        file.write(b'{"new"')
        raise Killed

    with pytest.raises(Killed):
        write_atomically(target, half_then_killed)
    assert json.loads(target.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_publish_moves_staged_files_in_with_the_named_ones_last(tmp_path: Path) -> None:
    staging = staging_folder(tmp_path, "results")
    (staging / "export").mkdir()
    for name in ("metrics.json", "a.png", "export/model.safetensors"):
        (staging / name).write_text(name)
    written = publish(staging, tmp_path, last=("metrics.json",))
    assert written[-1] == tmp_path / "metrics.json"
    assert (tmp_path / "export/model.safetensors").read_text() == "export/model.safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "export", "metrics.json"]
    leftover = staging_folder(tmp_path, "results")  # a killed one is removed by the next
    assert staging_folder(tmp_path, "results") != leftover and not leftover.exists()


@pytest.mark.slow
def test_a_kill_while_the_export_is_rewritten_loses_nothing_and_resume_repairs(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    """Item 1: a resume that trains on is killed half-way through model.safetensors."""
    run = tmp_path / "done"
    shutil.copytree(finished, run)
    old_metrics = (run / "metrics.json").read_bytes()
    real_save = safetensors.torch.save_file

    def killed_half_way(tensors: Any, path: Any, *args: Any, **kwargs: Any) -> None:
        real_save(tensors, path, *args, **kwargs)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])
        raise Killed

    monkeypatch.setattr(safetensors.torch, "save_file", killed_half_way)
    args = [*WITH_EXPORT, f"output_dir={tmp_path}", "trainer.max_epochs=3", f"resume={run}"]
    os.environ.pop(RUN_DIR_ENV, None)
    with pytest.raises(Killed):
        main(args)
    os.environ.pop(RUN_DIR_ENV, None)
    assert load_checkpoint(run / "checkpoints/last.ckpt")["global_step"] == 6
    load_backbone(run / "export")  # the old export is whole
    assert (run / "metrics.json").read_bytes() == old_metrics  # and says 4 steps

    monkeypatch.setattr(safetensors.torch, "save_file", real_save)
    code, stderr = cli(capsys, *args)  # the documented repair: the same command again
    assert code == 0, stderr[-3000:]
    assert steps_in_metrics(run) == 6
    state = load_checkpoint(run / "checkpoints/last.ckpt")["state_dict"]
    exported = load_backbone(run / "export").state_dict()
    for name, tensor in exported.items():  # the export holds the resumed run's weights
        assert torch.equal(tensor, state[f"backbone.{name}"]), name
    assert not list(run.glob(".*staging*"))


@pytest.mark.slow
def test_a_cut_metrics_json_means_not_finished(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 2: 50 bytes of metrics.json (a kill while it was written in place)."""
    run = tmp_path / "done"
    shutil.copytree(finished, run)
    (run / "metrics.json").write_bytes((run / "metrics.json").read_bytes()[:50])
    code, stderr = cli(
        capsys, *WITH_EXPORT, f"output_dir={tmp_path}", "trainer.max_epochs=2", f"resume={run}"
    )
    assert code == 0, stderr[-3000:]
    assert steps_in_metrics(run) == 4


@pytest.mark.slow
def test_a_full_disk_at_the_end_of_a_run_is_one_line_and_resume_repairs(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    """Item 5 at the end of a run: ENOSPC while the export is written."""
    run = tmp_path / "done"
    shutil.copytree(finished, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and "logs" not in p.parts}

    def full(*_: Any, **__: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    args = [*WITH_EXPORT, f"output_dir={tmp_path}", "trainer.max_epochs=3", f"resume={run}"]
    line = one_error_line(*cli(capsys, *args), "No space left on device")
    assert f"resume={run}" in line
    for path, data in before.items():  # nothing half-written; only checkpoints moved on
        if "checkpoints" not in path.parts and path.name not in (".lock", "config.yaml"):
            assert path.read_bytes() == data, path
    # config.yaml records what the run now is (written whole): it trained on to 3 epochs
    assert "max_epochs: 3" in (run / "config.yaml").read_text()
    assert not list(run.glob(".*staging*"))
    monkeypatch.undo()
    assert cli(capsys, *args)[0] == 0
    assert steps_in_metrics(run) == 6


def test_enospc_hidden_in_torchs_runtime_error_is_one_line(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Item 5: torch's zip writer raises RuntimeError('... unexpected pos') with the OSError
    (ENOSPC) only in __context__."""
    target = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, target)
    previous = target.read_bytes()

    def full_disk(obj: Any, file: Any, *args: Any, **kwargs: Any) -> None:
        file.write(b"PK\x03\x04 partial")
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            # implicitly chained: the OSError is only the RuntimeError's __context__
            raise RuntimeError(  # noqa: B904 (as torch does)
                "[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0"
            )

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(UserError) as refused:
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(2)}}, target)
    message = str(refused.value)
    assert "No space left on device" in message and str(target) in message
    assert "previous checkpoint is intact" in message and "\n" not in message
    assert target.read_bytes() == previous
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]
