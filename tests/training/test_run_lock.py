"""One process trains a run at a time: a second resume is refused in one line naming the
first one's pid, and the lock of a killed process is free (issue 33, item 3)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from ssl_syre.errors import UserError, run_cli
from ssl_syre.training.pipeline import main
from ssl_syre.training.run_dir import RUN_DIR_ENV, claim, run_lock
from tests.test_reliability import FAST, cli, one_error_line

pytestmark = pytest.mark.usefixtures("one_thread")


def _hold(run_dir: str, ready: str) -> None:
    with run_lock(Path(run_dir)) as lock:
        claim(lock)
        Path(ready).touch()
        time.sleep(120)
    os._exit(0)


def wait_for(path: Path, process: Any, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not path.exists():
        assert process.exitcode is None, "the child ended early"
        assert time.time() < deadline, f"no {path.name} after {seconds} s"
        time.sleep(0.02)


def test_a_held_lock_is_refused_with_the_holders_pid_and_freed_by_its_death(
    tmp_path: Path,
) -> None:
    ready = tmp_path / "ready"
    holder = multiprocessing.get_context("fork").Process(
        target=_hold, args=(str(tmp_path), str(ready))
    )
    holder.start()
    try:
        wait_for(ready, holder)
        with pytest.raises(UserError) as refused:
            with run_lock(tmp_path):
                pass
        assert str(refused.value).startswith(
            f"run {tmp_path} is being trained by another process (pid {holder.pid})"
        )
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join()
    with run_lock(tmp_path) as lock:  # the dead process's lock is free, no cleanup needed
        claim(lock)
        assert lock.read_text().strip() == str(os.getpid())


def _train_and_block(log: str, ready: str, args: list[str]) -> None:
    """train.py's entry point, stopped at the start of its first epoch until killed."""
    from ssl_syre.training import callbacks

    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    original = callbacks.ReseedEachEpoch.on_train_epoch_start

    def block(self: Any, trainer: Any, module: Any) -> None:
        original(self, trainer, module)
        Path(ready).touch()
        time.sleep(120)

    callbacks.ReseedEachEpoch.on_train_epoch_start = block  # type: ignore[method-assign]
    os.environ.pop(RUN_DIR_ENV, None)
    try:
        run_cli(main, args)
    finally:
        os._exit(0)


@pytest.mark.slow
def test_two_resumes_of_one_run_the_second_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*FAST, f"output_dir={tmp_path}", "trainer.max_epochs=1"]
    assert cli(capsys, *args, "run_name=run")[0] == 0
    run = tmp_path / "run"
    longer = [*FAST, f"output_dir={tmp_path}", "trainer.max_epochs=3", f"resume={run}"]
    ready = tmp_path / "ready"
    first = multiprocessing.get_context("fork").Process(
        target=_train_and_block, args=(str(tmp_path / "first.log"), str(ready), longer)
    )
    first.start()
    try:
        wait_for(ready, first)
        before = sorted(p.name for p in (run / "checkpoints").iterdir())
        line = one_error_line(*cli(capsys, *longer), "is being trained by another process")
        assert f"run {run} is being trained by another process (pid {first.pid})" in line
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.join()
    code, stderr = cli(capsys, *longer)  # kill -9 freed the lock: the resume goes ahead
    assert code == 0, stderr[-3000:]
