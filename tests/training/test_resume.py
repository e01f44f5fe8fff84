"""Resume: it never rewrites a finished run, and every way of stopping resumes bitwise on CPU.

Tiny digits runs in this process (see tests/test_reliability.py for why), 4 steps of 32
images per epoch; the SIGKILL case kills a forked child of this process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from ssl_syre.errors import run_cli
from ssl_syre.methods.base import SSLMethod
from ssl_syre.training.pipeline import main
from ssl_syre.training.run_dir import RUN_DIR_ENV
from tests.test_reliability import (
    FAST,
    ForkedTrain,
    assert_same_weights,
    cli,
    one_error_line,
    save_hooks,
    snapshot,
    train_once,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# The outputs of the quick start: linear probe and export too.
QUICK = [*FAST, "export=true", "eval.linear_probe=true", "eval.linear_epochs=2"]
# Four steps an epoch, a step budget instead of an epoch budget, a constant lr (a cosine over 6
# steps is another training than one over 16).
STEPS = [
    *FAST,
    "trainer.limit_train_batches=4",
    "trainer.max_epochs=-1",
    "optimizer.scheduler=constant",
]


@pytest.fixture(scope="module")
def quick_start(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run with every output the quick start writes (linear probe, export)."""
    runs = tmp_path_factory.mktemp("quick") / "runs"
    train_once([*QUICK, f"output_dir={runs}", "run_name=done", "trainer.max_epochs=2"])
    return runs / "done"


REFUSED = {
    # The command: fewer steps than trained, other subsets, no linear probe.
    "smaller run, other subsets": (
        ["trainer.max_steps=3", "data.train_subset=500", "data.test_subset=200"]
        + ["eval.linear_probe=false"],
        "data.test_subset",
    ),
    "fewer epochs": (["trainer.max_epochs=1"], "nothing to train"),
    "same epochs": (["trainer.max_epochs=2"], "nothing to train"),
    "fewer steps": (["trainer.max_steps=3"], "nothing to train"),
    "other evaluation": (["trainer.max_epochs=3", "eval.knn_k=[3]"], "eval.knn_k"),
    "other SyRe setting": (["trainer.max_epochs=3", "syre.sigma0=0.5"], "syre.sigma0"),
    "other seed": (["trainer.max_epochs=3", "seed=1"], "seed"),
    "other image size": (["trainer.max_epochs=3", "data.image_size=16"], "data.image_size"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(REFUSED))
def test_a_resume_that_changes_the_run_or_has_nothing_to_train_is_refused(
    case: str, quick_start: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused in one line naming the difference and a new-run command; RUN byte-identical."""
    run = tmp_path / "done"
    shutil.copytree(quick_start, run)
    before = snapshot(run)
    assert {"metrics.json", "eval_indices.json", "spectrum.png", "export/model.safetensors"} <= set(
        before
    )
    assert json.loads((run / "metrics.json").read_text())["linear_probe"]
    extra, needle = REFUSED[case]
    code, stderr = cli(capsys, *QUICK, f"output_dir={tmp_path}", *extra, f"resume={run}")
    line = one_error_line(code, stderr, needle)
    assert "python train.py" in line and "config.yaml" in line, line
    assert "exceeds max_steps" not in stderr
    assert snapshot(run) == before
    assert sorted(p.name for p in (run / "logs").iterdir()) == sorted(
        p.name for p in (quick_start / "logs").iterdir()
    )


@pytest.mark.slow
def test_a_resume_may_train_longer_with_another_lr_and_device_settings(
    quick_start: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "done"
    shutil.copytree(quick_start, run)
    allowed = ["trainer.max_epochs=3", "optimizer.lr=0.1", "trainer.enable_progress_bar=true"]
    allowed += ["trainer.enable_model_summary=true", "data.num_workers=1"]
    code, stderr = cli(capsys, *QUICK, f"output_dir={tmp_path}", *allowed, f"resume={run}")
    assert code == 0, stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["run"]["epochs"] == 3


@pytest.mark.slow
def test_resume_alone_takes_the_runs_config_and_records_what_the_run_now_is(
    quick_start: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`resume=RUN trainer.max_epochs=3` is the whole command: no config file, no repeated
    settings; afterwards config.yaml says 3 epochs, so `python train.py RUN/config.yaml`
    reproduces the longer run."""
    run = tmp_path / "done"
    shutil.copytree(quick_start, run)
    assert "max_epochs: 2" in (run / "config.yaml").read_text()
    code, stderr = cli(capsys, f"resume={run}", "trainer.max_epochs=3")
    assert code == 0, stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["run"]["epochs"] == 3
    saved = (run / "config.yaml").read_text()
    assert "max_epochs: 3" in saved and "max_epochs: 2" not in saved
    assert not list(run.glob(".*partial"))


# ---------------------------------------------------------------------------------------------
# Every stop resumes bitwise


def record_steps(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """(epoch, batch index, global step) of every training step from now on."""
    steps: list[tuple[int, int, int]] = []
    original = SSLMethod.training_step

    def training_step(self: SSLMethod, batch: Any, batch_idx: int) -> Any:
        steps.append((self.current_epoch, batch_idx, self.global_step))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(SSLMethod, "training_step", training_step)
    return steps


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[Any]]]:
    """16 steps (4 epochs of 4) without a stop, and the (epoch, batch, step) of each step."""
    runs = tmp_path_factory.mktemp("whole")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    os.environ.pop(RUN_DIR_ENV, None)
    with pytest.MonkeyPatch.context() as patch:
        steps = record_steps(patch)
        try:
            run_cli(main, [*STEPS, f"output_dir={runs}", "run_name=whole", "trainer.max_steps=16"])
        finally:
            os.environ.pop(RUN_DIR_ENV, None)
            torch.set_num_threads(threads)
    yield runs / "whole", list(steps)


def stop_by_max_steps(steps: int) -> Any:
    def stop(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: Any) -> None:
        assert cli(capsys, *args, f"trainer.max_steps={steps}")[0] == 0

    return stop


def stop_by_sigkill(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: Any) -> None:
    """A forked child kills itself (SIGKILL) right after epoch 1's last.ckpt is written."""

    def kill(path: Path, checkpoint: dict[str, Any]) -> None:
        if path.name == "last.ckpt" and checkpoint["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    with monkeypatch.context() as patch:
        save_hooks(patch, kill)
        child = ForkedTrain(Path(args[-1].split("=", 1)[1] + ".log"), *args, "trainer.max_steps=16")
        child.wait()
    assert child.process.exitcode == -signal.SIGKILL


def stop_by_ctrl_c(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: Any) -> None:
    """Ctrl-C (KeyboardInterrupt) in the second step of epoch 2: last.ckpt is epoch 1's."""
    original = SSLMethod.training_step

    def training_step(self: SSLMethod, batch: Any, batch_idx: int) -> Any:
        if self.current_epoch == 2 and batch_idx == 1:
            raise KeyboardInterrupt
        return original(self, batch, batch_idx)

    with monkeypatch.context() as patch:
        patch.setattr(SSLMethod, "training_step", training_step)
        assert cli(capsys, *args, "trainer.max_steps=16")[0] == 130


STOPS = {
    "max_steps inside an epoch": (stop_by_max_steps(6), 6),
    "max_steps at an epoch end": (stop_by_max_steps(8), 8),
    "SIGKILL": (stop_by_sigkill, 8),
    "Ctrl-C": (stop_by_ctrl_c, 8),
}


@pytest.mark.slow
@pytest.mark.parametrize("stop", list(STOPS))
def test_every_stop_resumes_to_the_uninterrupted_weights(
    stop: str,
    whole: tuple[Path, list[Any]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stop, resume to 16 steps: bitwise the weights, step numbering and counts of a 16-step run."""
    whole_run, whole_steps = whole
    make_stop, checkpoint_step = STOPS[stop]
    run = tmp_path / "cut"
    make_stop([*STEPS, f"output_dir={tmp_path}", f"run_name={run.name}"], capsys, monkeypatch)
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"] == (
        checkpoint_step
    )
    with monkeypatch.context() as patch:
        steps = record_steps(patch)
        code, stderr = cli(
            capsys, *STEPS, f"output_dir={tmp_path}", "trainer.max_steps=16", f"resume={run}"
        )
    assert code == 0, stderr[-3000:]
    assert steps == whole_steps[checkpoint_step:]  # same epoch and batch numbers
    assert_same_weights(whole_run / "checkpoints/last.ckpt", run / "checkpoints/last.ckpt")
    metrics = json.loads((run / "metrics.json").read_text())["run"]
    expected = json.loads((whole_run / "metrics.json").read_text())["run"]
    assert (metrics["epochs"], metrics["steps"]) == (expected["epochs"], expected["steps"])
    assert "not resumable" not in stderr


@pytest.mark.slow
def test_a_regenerate_run_checkpoints_seeds_and_resumes_bitwise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """syre.anchor_storage=regenerate: the checkpoint holds per-tensor seeds instead of anchor
    tensors, a resume gives the uninterrupted weights, and a checkpoint whose anchors another
    device drew is refused with one line."""
    regen = [*STEPS, f"output_dir={tmp_path}", "syre.anchor_storage=regenerate"]
    assert cli(capsys, *regen, "run_name=whole", "trainer.max_steps=8")[0] == 0
    assert cli(capsys, *regen, "run_name=cut", "trainer.max_steps=4")[0] == 0
    checkpoint = tmp_path / "cut/checkpoints/last.ckpt"
    syre = torch.load(checkpoint, weights_only=True)["syre"]
    assert syre["config"]["anchor_storage"] == "regenerate"
    assert syre["anchors"] == {} and len(syre["anchor_seeds"]) == len(syre["covered_names"])
    assert syre["anchor_check"]["device"] == "cpu"
    shutil.copytree(tmp_path / "cut", tmp_path / "moved")
    code, stderr = cli(capsys, *regen, "trainer.max_steps=8", f"resume={tmp_path / 'cut'}")
    assert code == 0, stderr[-3000:]
    assert_same_weights(tmp_path / "whole/checkpoints/last.ckpt", checkpoint)

    state = torch.load(tmp_path / "moved/checkpoints/last.ckpt", weights_only=True)
    state["syre"]["anchor_check"] = {"device": "cuda:0", "fingerprint": 0.5}
    torch.save(state, tmp_path / "moved/checkpoints/last.ckpt")
    code, stderr = cli(capsys, *regen, "trainer.max_steps=8", f"resume={tmp_path / 'moved'}")
    one_error_line(code, stderr, "regenerated on cuda:0")
