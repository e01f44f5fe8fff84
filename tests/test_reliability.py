"""Reliability: exact resume, kill -9, bad input, full disks, NaN, untrusted checkpoints.

Most runs happen in this process (run_cli(main, argv), as train.py does) because importing
Lightning costs a subprocess 10-20 s here; the kill -9 and --debug tests need real processes.
Every test pins torch to one thread: on a shared 2-core machine two OpenMP threads per
process spin against each other and a tiny step takes seconds instead of 45 ms.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_syre.errors import UserError, run_cli
from ssl_syre.methods.base import SSLMethod
from ssl_syre.training.checkpoint import AtomicCheckpointIO, load_checkpoint
from ssl_syre.training.pipeline import main
from ssl_syre.training.run_dir import RUN_DIR_ENV
from tests.conftest import ROOT, TINY

# TINY, cheaper still: 2 steps of 32 images per epoch, no online or linear evaluation.
FAST = [
    *TINY,
    "data.batch_size=32",
    "trainer.limit_train_batches=2",
    "trainer.enable_progress_bar=false",
    "eval.online_every_n_epochs=0",
    "eval.linear_probe=false",
    "eval.raw_pixel_baseline=false",
    "eval.knn_k=[5]",
    "export=false",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def train_once(argv: list[str]) -> None:
    """Run train.py's entry point in this process on one thread (a module fixture's run, which
    the function-scoped `one_thread` fixture does not cover), leaving no run directory set."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    os.environ.pop(RUN_DIR_ENV, None)
    try:
        run_cli(main, argv)
    finally:
        os.environ.pop(RUN_DIR_ENV, None)
        torch.set_num_threads(threads)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run train.py's entry point in this process; return (exit code, stderr)."""
    os.environ.pop(RUN_DIR_ENV, None)
    capsys.readouterr()
    try:
        run_cli(main, list(argv))
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    finally:
        os.environ.pop(RUN_DIR_ENV, None)
    return code, capsys.readouterr().err


def one_error_line(code: int, stderr: str, needle: str = "") -> str:
    """Assert the bad-input contract: exit 2, one line 'error: ...', no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert code == 2, stderr[-3000:]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert needle.lower() in errors[0].lower(), errors[0]
    return errors[0]


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def save_hooks(monkeypatch: pytest.MonkeyPatch, after_save: Any) -> list[tuple[str, int]]:
    """Call after_save(path, checkpoint) after each successful checkpoint write."""
    saved: list[tuple[str, int]] = []
    original = AtomicCheckpointIO.save_checkpoint

    def save(self: Any, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        original(self, checkpoint, path, storage_options)
        saved.append((Path(path).name, int(checkpoint["epoch"])))
        after_save(Path(path), checkpoint)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", save)
    return saved


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-epoch run (checkpoints, metrics.json, export) that tests must not change."""
    runs = tmp_path_factory.mktemp("finished") / "runs"
    train_once([*FAST, f"output_dir={runs}", "run_name=done", "trainer.max_epochs=2"])
    return runs / "done"


# ---------------------------------------------------------------------------------------------
# 1. Exact resume


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "workers", "augment_on"),
    [("simclr", 0, "device"), ("byol", 0, "device"), ("byol", 2, "workers")],
)
def test_resume_after_ctrl_c_ends_with_the_same_weights(
    method: str,
    workers: int,
    augment_on: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch,
) -> None:
    """Ctrl-C right after epoch 1's checkpoint, resume: bitwise the uninterrupted weights.

    Cosine lr schedule and (BYOL) cosine momentum schedule, SyRe on, same max_epochs; views
    made on the device (seeded per batch) or by lightly in DataLoader workers.
    """
    args = [*FAST, f"output_dir={tmp_path}", f"method={method}", f"data.num_workers={workers}"]
    args += [f"data.augment_on={augment_on}"]
    args += ["trainer.max_epochs=3"]
    assert cli(capsys, *args, "run_name=whole")[0] == 0

    def ctrl_c(path: Path, checkpoint: dict[str, Any]) -> None:
        if path.name == "last.ckpt" and checkpoint["epoch"] == 1:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        save_hooks(patch, ctrl_c)
        code, stderr = cli(capsys, *args, "run_name=cut")
    assert code == 130 and "resume=" in stderr, stderr[-2000:]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert torch.load(tmp_path / "cut/checkpoints/last.ckpt", weights_only=True)["epoch"] == 1

    assert cli(capsys, *args, f"resume={tmp_path / 'cut'}")[0] == 0
    assert_same_weights(
        tmp_path / "whole/checkpoints/last.ckpt", tmp_path / "cut/checkpoints/last.ckpt"
    )
    whole = torch.load(tmp_path / "whole/checkpoints/last.ckpt", weights_only=True)
    cut = torch.load(tmp_path / "cut/checkpoints/last.ckpt", weights_only=True)
    assert whole["global_step"] == cut["global_step"] == 6
    for name, anchor in whole["syre"]["anchors"].items():
        assert torch.equal(anchor, cut["syre"]["anchors"][name])
    assert whole["lr_schedulers"] == cut["lr_schedulers"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "workers", "augment_on"), [("simclr", 2, "workers"), ("byol", 0, "device")]
)
def test_resume_with_a_larger_max_epochs_ends_with_the_same_weights(
    method: str, workers: int, augment_on: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """max_epochs=2, then resume with max_epochs=3: bitwise a 3-epoch run, outputs complete.

    The schedules' length follows max_epochs, so both use constant ones here (a cosine over 2
    epochs is another training than a cosine over 3); see the cosine test below.
    """
    args = [*FAST, f"output_dir={tmp_path}", f"method={method}", f"data.num_workers={workers}"]
    args += ["optimizer.scheduler=constant", "export=true", f"data.augment_on={augment_on}"]
    if method == "byol":
        args += ["method_kwargs.momentum_start=0.99", "method_kwargs.momentum_end=0.99"]
    assert cli(capsys, *args, "run_name=whole", "trainer.max_epochs=3")[0] == 0
    assert cli(capsys, *args, "run_name=part", "trainer.max_epochs=2")[0] == 0
    first_log = (tmp_path / "part/logs/metrics.csv").read_text()
    first_metrics = json.loads((tmp_path / "part/metrics.json").read_text())
    assert first_metrics["run"]["epochs"] == 2

    code, stderr = cli(capsys, *args, "trainer.max_epochs=3", f"resume={tmp_path / 'part'}")
    assert code == 0, stderr[-3000:]
    assert_same_weights(
        tmp_path / "whole/checkpoints/last.ckpt", tmp_path / "part/checkpoints/last.ckpt"
    )
    part = tmp_path / "part"
    metrics = json.loads((part / "metrics.json").read_text())
    assert metrics["run"]["epochs"] == 3 and metrics["run"]["steps"] == 6
    assert (part / "export/model.safetensors").is_file() and (part / "export/config.json").is_file()
    assert (part / "logs/metrics.csv").read_text() == first_log  # the first part's log is kept
    assert (part / "logs/resume-1/metrics.csv").is_file()


@pytest.mark.slow
def test_resumed_cosine_schedule_stretches_to_the_new_max_epochs(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "done"
    shutil.copytree(finished_run, run)
    code, stderr = cli(
        capsys, *FAST, f"output_dir={tmp_path}", "trainer.max_epochs=4", f"resume={run}"
    )
    assert code == 0, stderr[-3000:]
    assert "exceeds max_steps" not in stderr
    # A copied run directory still writes last.ckpt (not last-v1.ckpt beside a stale one).
    assert not list((run / "checkpoints").glob("*-v*.ckpt"))
    checkpoint = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 3
    assert checkpoint["lr_schedulers"][0]["max_epochs"] == 8  # 4 epochs x 2 steps
    assert checkpoint["lr_schedulers"][0]["last_epoch"] == 8


@pytest.mark.slow
def test_resume_at_another_lr_runs_the_new_lr_and_metrics_say_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """1 epoch at lr 0.03, resumed with optimizer.lr=0.6 max_epochs=2: epoch 2 runs the lr of a
    run at 0.6 from the start, and metrics.json records both stretches."""
    args = [
        *FAST,
        f"output_dir={tmp_path}",
        "optimizer.scale_lr=false",
        "optimizer.warmup_epochs=0",
    ]
    assert cli(capsys, *args, "run_name=whole", "optimizer.lr=0.6", "trainer.max_epochs=2")[0] == 0
    assert cli(capsys, *args, "run_name=part", "optimizer.lr=0.03", "trainer.max_epochs=1")[0] == 0
    code, stderr = cli(
        capsys, *args, "optimizer.lr=0.6", "trainer.max_epochs=2", f"resume={tmp_path / 'part'}"
    )
    assert code == 0, stderr[-3000:]

    def lr_by_step(csv: Path) -> dict[int, float]:  # LearningRateMonitor: at each epoch start
        rows = [line.split(",") for line in csv.read_text().splitlines()]
        column, step = rows[0].index("lr-SGD/syre"), rows[0].index("step")
        return {int(r[step]): float(r[column]) for r in rows[1:] if r[column]}

    whole = lr_by_step(tmp_path / "whole/logs/metrics.csv")
    assert whole[0] == 0.6 and 0 < whole[2] < 0.6
    assert lr_by_step(tmp_path / "part/logs/resume-1/metrics.csv") == {2: whole[2]}
    run = json.loads((tmp_path / "part/metrics.json").read_text())["run"]
    assert run["learning_rate"] == 0.6 and run["decay"]["lr"] == 0.6
    assert run["learning_rate_segments"] == [[0, 0.03], [2, 0.6]]


# ---------------------------------------------------------------------------------------------
# 2. kill -9


def train_process(log: Path, *args: str) -> subprocess.Popen:
    """`python train.py ARGS` as a user starts it (10-20 s of imports before it trains)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    env.pop(RUN_DIR_ENV, None)
    with log.open("w") as file:  # a file, not a pipe: a full pipe would block the child
        return subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *args],
            cwd=ROOT,
            env=env,
            stdout=file,
            stderr=subprocess.STDOUT,
        )


class ForkedTrain:
    """train.py's entry point in a forked child: a real process to kill, without the imports."""

    def __init__(self, log: Path, *args: str) -> None:
        self.process = multiprocessing.get_context("fork").Process(
            target=self._run, args=(str(log), list(args))
        )
        self.process.start()

    @staticmethod
    def _run(log: str, args: list[str]) -> None:
        descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(descriptor, 1)
        os.dup2(descriptor, 2)
        os.environ.pop(RUN_DIR_ENV, None)
        try:
            run_cli(main, args)
        except SystemExit as exit_:
            os._exit(int(exit_.code or 0))
        os._exit(0)

    def poll(self) -> int | None:
        return self.process.exitcode

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)

    def wait(self) -> None:
        self.process.join()


def partial_writes(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.ckpt.*")) if folder.is_dir() else []


@pytest.mark.slow
def test_kill_9_at_random_moments_never_loses_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """kill -9 five times (twice the moment a checkpoint write is seen), resume each time.

    After every kill last.ckpt loads with weights_only=True; the final resume completes and
    ends with exactly the weights of an uninterrupted run of the same config. The first
    process is train.py itself; the resumed ones are forked, to spare 4 x 15 s of imports.
    """
    args = [*FAST, f"output_dir={tmp_path}", "trainer.max_epochs=60"]
    assert cli(capsys, *args, "run_name=whole")[0] == 0

    run = tmp_path / "killed"
    checkpoints = run / "checkpoints"
    rng = random.Random(0)
    seen_partial = 0
    for attempt in range(5):
        resuming = (checkpoints / "last.ckpt").exists()
        start = [f"resume={run}"] if resuming else ["run_name=killed"]
        log = tmp_path / f"attempt{attempt}.log"
        process = (
            train_process(log, *args, *start) if attempt == 0 else ForkedTrain(log, *args, *start)
        )
        before = (checkpoints / "last.ckpt").stat().st_mtime_ns if resuming else 0
        deadline = time.time() + 120
        # Wait until this process has written a checkpoint: it is training now.
        while time.time() < deadline and process.poll() is None:
            last = checkpoints / "last.ckpt"
            if last.exists() and last.stat().st_mtime_ns != before:
                break
            time.sleep(0.02)
        assert process.poll() is None, log.read_text()[-3000:]
        if attempt % 2 == 1:  # the moment a checkpoint is being written
            until = time.time() + 10
            while time.time() < until and not partial_writes(checkpoints):
                time.sleep(0.0005)
        else:  # anywhere in training or writing
            time.sleep(rng.uniform(0.0, 1.5))
        process.kill()  # SIGKILL
        process.wait()
        seen_partial += bool(partial_writes(checkpoints))
        state = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
        assert state["epoch"] < 59, "the run ended before the kill"
        assert all(torch.isfinite(t).all() for t in state["state_dict"].values())

    code, stderr = cli(capsys, *args, f"resume={run}")
    assert code == 0, stderr[-3000:]
    assert partial_writes(checkpoints) == []  # leftovers of killed writes are cleaned
    assert (run / "metrics.json").is_file()
    assert_same_weights(tmp_path / "whole/checkpoints/last.ckpt", checkpoints / "last.ckpt")
    print(f"kills that left a partial write behind: {seen_partial} of 5")


@pytest.mark.slow
def test_leftover_partial_writes_do_not_break_resume(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "done"
    shutil.copytree(finished_run, run)
    leftover = run / "checkpoints/.last.ckpt.k1ll3d"
    leftover.write_bytes(b"PK\x03\x04 half a zip")
    code, stderr = cli(
        capsys, *FAST, f"output_dir={tmp_path}", "trainer.max_epochs=3", f"resume={run}"
    )
    assert code == 0, stderr[-3000:]
    assert not leftover.exists()
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["epoch"] == 2


# ---------------------------------------------------------------------------------------------
# 3. Run directories are never overwritten


@pytest.mark.slow
def test_a_new_run_never_overwrites_a_run_directory(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    before = snapshot(finished_run)
    code, stderr = cli(capsys, *FAST, f"output_dir={finished_run.parent}", "run_name=done")
    one_error_line(code, stderr, "already exists")
    assert snapshot(finished_run) == before

    # Auto names are <method>_<data>_<time>: two runs in the same second get a suffix.
    import ssl_syre.training.run_dir as run_dir

    class Frozen(run_dir.datetime):  # type: ignore[misc, name-defined]
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return run_dir.datetime(2025, 1, 2, 3, 4, 5)

    monkeypatch.setattr(run_dir, "datetime", Frozen)
    monkeypatch.delenv(RUN_DIR_ENV, raising=False)
    # Twice in one process, as a notebook or sweep script would: the second run must not
    # take the first one's directory from the variable that DDP children inherit.
    first = run_cli(main, [*FAST, f"output_dir={tmp_path}", "trainer.max_epochs=1"])
    second = run_cli(main, [*FAST, f"output_dir={tmp_path}", "trainer.max_epochs=1"])
    assert first != second
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["simclr_digits_20250102-030405", "simclr_digits_20250102-030405-1"]


# ---------------------------------------------------------------------------------------------
# 4. Bad input: one line, exit 2, no traceback, nothing lost


def write(path: Path, text: str | bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def image_folder(root: Path, per_class: int = 20, modes: tuple[str, ...] = ("RGB",)) -> Path:
    rng = np.random.default_rng(0)
    for label in range(2):
        for i in range(per_class):
            size = 20 + (i * 7) % 23, 24 + (i * 5) % 17  # mixed sizes
            pixels = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            image = Image.fromarray(pixels).convert(modes[i % len(modes)])
            path = root / f"class{label}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)
    return root


def train_on_folder(
    capsys: pytest.CaptureFixture[str], root: Path, output_dir: Path, *extra: str
) -> tuple[int, str]:
    """train.py on an image folder of 16x16 crops, batch 8; returns (exit code, stderr)."""
    return cli(
        capsys,
        *FAST,
        f"output_dir={output_dir}",
        "data.name=imagefolder",
        f"data.root={root}",
        "data.image_size=16",
        "data.batch_size=8",
        *extra,
    )


BAD_INPUTS = {
    "config missing": (lambda tmp: ["nothing/here.yaml"], "does not exist"),
    "config not YAML": (
        lambda tmp: [write(tmp / "bad.yaml", "method: [simclr\n  data: {")],
        "not valid YAML",
    ),
    "config binary": (lambda tmp: [write(tmp / "bin.yaml", b"\xff\xfe\x00\x81")], "yaml"),
    "unknown key": (lambda tmp: ["optimizer.learning_rate=0.1"], "optimizer.learning_rate"),
    "wrong type": (lambda tmp: ["data.batch_size=many"], "data.batch_size"),
    "unknown method": (lambda tmp: ["method=simclrr"], "did you mean 'simclr'"),
    "unknown backbone": (lambda tmp: ["backbone.name=resnet1888"], "backbone.name"),
    "unknown data set": (lambda tmp: ["data.name=digitz"], "data.name"),
    "image root missing": (
        lambda tmp: ["data.name=imagefolder", f"data.root={tmp / 'absent'}"],
        "does not exist",
    ),
    "image root empty": (
        lambda tmp: [
            "data.name=imagefolder",
            f"data.root={(tmp / 'empty').mkdir() or tmp / 'empty'}",
        ],
        "no class sub-folders",
    ),
    "image root without images": (
        lambda tmp: [
            "data.name=imagefolder",
            f"data.root={Path(write(tmp / 'text/cls/readme.txt', 'hi')).parent.parent}",
        ],
        "no image files",
    ),
    "batch larger than data": (
        lambda tmp: ["data.batch_size=5000"],
        "larger than the training set",
    ),
    "resume of a folder without a run": (lambda tmp: [f"resume={tmp}"], "no checkpoints/last.ckpt"),
    # Before: a Lightning traceback, after config.yaml and logs/ were written.
    "trainer value of the wrong type": (
        lambda tmp: ["trainer.max_epochs=abc"],
        "trainer.max_epochs",
    ),
    "trainer value Lightning refuses": (
        lambda tmp: ["trainer.max_epochs=-5"],
        "trainer.max_epochs",
    ),
    "trainer devices": (lambda tmp: ["trainer.devices=abc"], "trainer.devices"),
    "trainer precision unknown": (lambda tmp: ["trainer.precision=banana"], "trainer.precision"),
    # Before: AssertionError from timm's PatchEmbed in the first training step.
    "ViT patches that do not tile the image": (
        lambda tmp: ["backbone.name=test_vit", "data.image_size=28"],
        "do not divide data.image_size=28",
    ),
    # Before: trained, then a traceback in the final step (no metrics.json).
    "momentum of 1": (lambda tmp: ["optimizer.momentum=1.0"], "optimizer.momentum"),
    # Before: a traceback after the run directory existed.
    "negative warm-up": (lambda tmp: ["optimizer.warmup_epochs=-1"], "optimizer.warmup_epochs"),
    # Before: lightly's raw ValueError.
    "temperature 0": (lambda tmp: ["method_kwargs.temperature=0"], "method_kwargs.temperature"),
    # Before: trained with a target network that moves away from the online one.
    "BYOL momentum above 1": (
        lambda tmp: ["method=byol", "method_kwargs.momentum_start=1.5"],
        "method_kwargs.momentum_start",
    ),
    "trainer precision with 16-bit weights": (
        lambda tmp: ["trainer.precision=bf16-true"],
        "trainer.precision=bf16-true",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_loses_nothing(
    case: str, finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_args, needle = BAD_INPUTS[case]
    extra = make_args(tmp_path)
    before = snapshot(finished_run)
    code, stderr = cli(capsys, *FAST, f"output_dir={finished_run.parent}", *extra)
    one_error_line(code, stderr, needle)
    assert snapshot(finished_run) == before
    assert sorted(p.name for p in finished_run.parent.iterdir()) == ["done"]


@pytest.mark.slow
def test_corrupt_and_non_image_files_are_skipped_with_a_counted_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = image_folder(tmp_path / "images")
    write(root / "class0/broken.png", b"\x89PNG\r\n\x1a\n not really")
    write(root / "class1/notes.jpg", "this is text")
    with pytest.warns(UserWarning, match="skipping 2 of 42 image files"):
        code, stderr = train_on_folder(capsys, root, tmp_path / "runs")
    assert code == 0, stderr[-3000:]


@pytest.mark.slow
def test_images_of_mixed_sizes_and_modes_train(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = image_folder(tmp_path / "images", modes=("RGB", "L", "RGBA", "P", "I;16", "LA", "1"))
    code, stderr = train_on_folder(capsys, root, tmp_path / "runs", "method=byol")
    assert code == 0, stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ("backbone.name=resnet18", "backbone.name='test_resnet'"),
        ("method_kwargs.projection_output_dim=8", "method_kwargs.projection_output_dim"),
        ("method=byol", "method='simclr'"),
        ("syre.enabled=false", "syre.enabled"),
    ],
)
def test_resume_with_another_architecture_names_the_difference(
    change: str, needle: str, finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(finished_run)
    code, stderr = cli(capsys, *FAST, change, "trainer.max_epochs=3", f"resume={finished_run}")
    one_error_line(code, stderr, needle)
    assert snapshot(finished_run) == before


@pytest.mark.slow
def test_diverging_loss_stops_before_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    """lr=1e30, one step per epoch: epoch 0 ends finite, epoch 1's loss is NaN."""
    models: list[SSLMethod] = []
    original = SSLMethod.training_step

    def training_step(self: SSLMethod, batch: Any, batch_idx: int) -> Any:
        models[:] = [self]
        return original(self, batch, batch_idx)

    monkeypatch.setattr(SSLMethod, "training_step", training_step)
    hashes: dict[str, str] = {}
    save_hooks(monkeypatch, lambda path, _: hashes.update({path.name: sha(path)}))
    code, stderr = cli(
        capsys,
        *FAST,
        f"output_dir={tmp_path}",
        "run_name=nan",
        "optimizer.lr=1e30",
        "trainer.limit_train_batches=1",
        "trainer.max_epochs=3",
    )
    one_error_line(code, stderr, "training loss became nan")
    last = tmp_path / "nan/checkpoints/last.ckpt"
    assert sha(last) == hashes["last.ckpt"]
    state = load_checkpoint(last)
    assert state["epoch"] == 0
    # No optimizer step ran after the NaN: the parameters are the checkpoint's.
    for name, parameter in models[0].named_parameters():
        assert torch.equal(parameter.detach(), state["state_dict"][name]), name
    assert not (tmp_path / "nan/metrics.json").exists()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_weights_that_overflow_at_epoch_end_are_never_checkpointed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    """The loss is finite, but the last step of epoch 1 leaves inf weights: no checkpoint."""

    def on_train_batch_end(self: SSLMethod, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.current_epoch == 1 and batch_idx == 1:
            with torch.no_grad():
                next(self.backbone.parameters()).fill_(float("inf"))

    monkeypatch.setattr(SSLMethod, "on_train_batch_end", on_train_batch_end, raising=False)
    hashes: dict[str, str] = {}
    save_hooks(monkeypatch, lambda path, _: hashes.update({path.name: sha(path)}))
    code, stderr = cli(
        capsys, *FAST, f"output_dir={tmp_path}", "run_name=inf", "trainer.max_epochs=3"
    )
    one_error_line(code, stderr, "holds NaN or inf at epoch 1")
    checkpoints = tmp_path / "inf/checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch000.ckpt", "last.ckpt"]
    assert sha(checkpoints / "last.ckpt") == hashes["last.ckpt"]
    assert load_checkpoint(checkpoints / "last.ckpt")["epoch"] == 0


@pytest.mark.slow
def test_disk_full_while_writing_a_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    """The 4th write (last.ckpt of epoch 1) goes to /dev/full: the kernel's own ENOSPC."""
    real_save = torch.save
    calls = []

    def save(obj: Any, file: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 4:
            with open("/dev/full", "wb") as full:
                real_save(obj, full, *args, **kwargs)
        real_save(obj, file, *args, **kwargs)

    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    monkeypatch.setattr(torch, "save", save)
    hashes: dict[str, str] = {}
    save_hooks(monkeypatch, lambda path, _: hashes.update({path.name: sha(path)}))
    args = [*FAST, f"output_dir={tmp_path}", "trainer.max_epochs=3"]
    code, stderr = cli(capsys, *args, "run_name=full")
    line = one_error_line(code, stderr, "No space left on device")
    assert "previous checkpoint is intact" in line and "resume=" in line
    checkpoints = tmp_path / "full/checkpoints"
    assert sha(checkpoints / "last.ckpt") == hashes["last.ckpt"]
    assert load_checkpoint(checkpoints / "last.ckpt")["epoch"] == 0
    assert partial_writes(checkpoints) == []

    monkeypatch.setattr(torch, "save", real_save)  # space freed: the run continues
    assert cli(capsys, *args, f"resume={tmp_path / 'full'}")[0] == 0
    assert load_checkpoint(checkpoints / "last.ckpt")["epoch"] == 2


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "absent.yaml", "--debug"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "Traceback" in done.stderr and "UserError" in done.stderr


# ---------------------------------------------------------------------------------------------
# 5. Untrusted checkpoints and exports


class RunsCode:
    """Unpickling this calls os.mkdir(marker): harmless, and visible if it ever runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (self.marker,))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["code", "random bytes", "truncated", "empty", "text", "tensor"])
def test_a_checkpoint_that_is_not_one_is_refused_in_one_line(
    kind: str, finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "done"
    shutil.copytree(finished_run, run)
    last = run / "checkpoints/last.ckpt"
    marker = tmp_path / "code-ran"
    if kind == "code":
        good = torch.load(last, weights_only=True)
        buffer = io.BytesIO()
        torch.save({**good, "callbacks": RunsCode(marker)}, buffer)
        last.write_bytes(buffer.getvalue())
    elif kind == "random bytes":
        last.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "truncated":
        last.write_bytes(last.read_bytes()[:5000])
    elif kind == "empty":
        last.write_bytes(b"")
    elif kind == "text":
        last.write_text("hello\n")
    else:
        torch.save(torch.zeros(3), last)
    before = snapshot(run)
    with pytest.raises(UserError) as refused:
        load_checkpoint(last)
    assert "\n" not in str(refused.value)
    code, stderr = cli(capsys, *FAST, f"output_dir={tmp_path}", f"resume={run}")
    one_error_line(code, stderr, "cannot load checkpoint")
    if kind == "tensor":
        assert "no model weights" in stderr
    assert not marker.exists(), "code in a checkpoint ran"
    assert snapshot(run) == before
    if kind == "code":
        assert "could run code" in stderr and "mkdir" in stderr


def test_no_unsafe_loading_anywhere_in_the_package() -> None:
    """Every torch.load passes weights_only=True; nothing calls pickle.load(s)."""
    for path in sorted((ROOT / "ssl_syre").rglob("*.py")):
        text = path.read_text()
        assert "pickle.load" not in text, path
        start = 0
        while (start := text.find("torch.load(", start)) != -1:
            call = text[start : text.find(")", start) + 1]
            assert "weights_only=True" in call, f"{path}: {call}"
            start += 1


@pytest.mark.slow
def test_exports_are_safetensors_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, *FAST, f"output_dir={tmp_path}", "run_name=e", "export=true")[0] == 0
    files = sorted(p.name for p in (tmp_path / "e/export").iterdir())
    assert "model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl"))]
