"""Where a run may not write, and what a refused resume leaves: one line each, nothing lost
(issue 33, items 6, 7, 13 and 14).

Permissions cannot be tested with chmod here: the tests may run as root, which ignores them.
A read-only file system is simulated instead by making os.mkdir and os.open fail with EROFS
(the errno a read-only mount gives) for paths under the test's folder.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.test_reliability import FAST, cli, one_error_line, train_once

pytestmark = pytest.mark.usefixtures("one_thread")


def read_only(monkeypatch: Any, root: Path) -> None:
    """Writes under `root` fail as on a read-only mount (os.mkdir, and os.open for writing)."""
    real_mkdir, real_open = os.mkdir, os.open
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def refused(path: Any) -> bool:
        return str(os.path.abspath(path)).startswith(str(root))

    def mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if refused(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        real_mkdir(path, *args, **kwargs)

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & writing and refused(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("finished")
    train_once([*FAST, f"output_dir={runs}", "run_name=done", "trainer.max_epochs=1"])
    return runs / "done"


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_read_only_output_dir_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    """Item 6: `output_dir=` on a read-only mount."""
    read_only(monkeypatch, tmp_path / "mount")
    code, stderr = cli(capsys, *FAST, f"output_dir={tmp_path / 'mount/runs'}", "run_name=x")
    line = one_error_line(code, stderr, "cannot create run directory")
    assert "Read-only file system" in line and "output_dir=" in line


@pytest.mark.slow
def test_resuming_a_run_on_a_read_only_mount_is_one_line(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    """Item 6: `resume=` of a run the process may read but not write."""
    run = tmp_path / "mount/done"
    shutil.copytree(finished, run)
    before = files(run)
    read_only(monkeypatch, tmp_path / "mount")
    args = [*FAST, f"output_dir={tmp_path}", "trainer.max_epochs=2", f"resume={run}"]
    line = one_error_line(*cli(capsys, *args), "Read-only file system")
    assert f"cannot write to run directory '{run}'" in line and "copy it" in line
    monkeypatch.undo()
    assert files(run) == before


def test_an_output_dir_that_is_a_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 7."""
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    code, stderr = cli(capsys, *FAST, f"output_dir={blocker}", "run_name=x")
    line = one_error_line(code, stderr, "is a file, not a folder")
    assert str(blocker) in line and "output_dir=" in line
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "ABSOLUTE", ".."])
def test_a_run_name_that_leaves_output_dir_is_refused(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 14: run_name=../../x wrote outside output_dir (the absolute name points into
    tmp_path, so that the code before the check wrote nowhere else)."""
    runs = tmp_path / "a" / "b" / "runs"
    name = str(tmp_path / "absolute") if name == "ABSOLUTE" else name
    code, stderr = cli(capsys, *FAST, f"output_dir={runs}", f"run_name={name}")
    one_error_line(code, stderr, "is not a folder name")
    assert list(tmp_path.rglob("*")) == []


def test_a_train_subset_larger_than_the_split_is_one_warning_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 14: it silently took the whole split. The run is stopped right after the data
    are built (trainer.strategy=foo is refused next), so no training is paid for."""
    with pytest.warns(UserWarning) as warned:
        code, stderr = cli(
            capsys,
            *FAST,
            f"output_dir={tmp_path}",
            "data.train_subset=1000000",
            "trainer.strategy=foo",
        )
    one_error_line(code, stderr, "trainer")
    lines = [str(w.message) for w in warned if "train_subset" in str(w.message)]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith("data.train_subset=1000000 is larger than the split")


@pytest.mark.slow
def test_a_nan_before_the_first_checkpoint_does_not_advise_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 13: with 2 steps per epoch the NaN comes in epoch 0, before any checkpoint."""
    code, stderr = cli(capsys, *FAST, f"output_dir={tmp_path}", "run_name=nan", "optimizer.lr=1e30")
    line = one_error_line(code, stderr, "training loss became nan")
    assert "resume=" not in line and "nothing to resume" in line
    assert not (tmp_path / "nan/checkpoints/last.ckpt").exists()


@pytest.mark.slow
def test_a_resume_refused_by_its_weights_names_the_key_and_leaves_no_log_folder(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 13: the message was 'Error(s) in loading state_dict for SimCLR:' and nothing
    more, and logs/resume-1/ stayed behind."""
    run = tmp_path / "done"
    shutil.copytree(finished, run)
    last = run / "checkpoints/last.ckpt"
    state = torch.load(last, weights_only=True)
    name = next(key for key in state["state_dict"] if key.startswith("backbone."))
    del state["state_dict"][name]
    torch.save(state, last)
    args = [*FAST, f"output_dir={tmp_path}", "trainer.max_epochs=2", f"resume={run}"]
    line = one_error_line(*cli(capsys, *args), "another architecture")
    assert f"missing key '{name}'" in line
    assert not (run / "logs/resume-1").exists()
