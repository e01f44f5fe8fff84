"""What the throughput benchmarks share: a step timer, rotated repeats, a timed train.py run
and the result file.

Used by throughput.py, augment_throughput.py, gpu_throughput.py and profile_step.py; each is
run as `python benchmarks/NAME.py`, so this module is found beside them.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import lightning.pytorch as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ssl_syre.training import pipeline  # noqa: E402
from ssl_syre.training.callbacks import ReseedEachEpoch  # noqa: E402
from ssl_syre.training.run_dir import RUN_DIR_ENV  # noqa: E402


class StepTimer:
    """Wall-clock time from the start of step `warmup` to the end of the last step.

    `synchronize` (e.g. torch.cuda.synchronize) runs before each reading, so that queued
    GPU work counts in the step that queued it.
    """

    def __init__(self, warmup: int, synchronize: Callable[[], None] | None = None) -> None:
        self.warmup = warmup
        self.synchronize = synchronize or (lambda: None)
        self.start: float | None = None
        self.end: float | None = None
        self.steps = 0

    def batch_start(self, index: int) -> None:
        if index == self.warmup:
            self.synchronize()
            self.start = time.perf_counter()

    def batch_end(self, index: int) -> None:
        if index >= self.warmup:
            self.synchronize()
            self.end = time.perf_counter()
            self.steps = index - self.warmup + 1

    @property
    def seconds(self) -> float:
        assert self.start is not None and self.end is not None, "no timed step ran"
        return self.end - self.start

    def images_per_second(self, batch_size: int) -> float:
        return self.steps * batch_size / self.seconds


def rotated_repeats(
    runners: dict[str, Callable[[], float]], variants: list[str], repeats: int
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Run every variant `repeats` times and return (samples, medians) in images/s.

    The order rotates each round, so that drift on a shared machine hits every variant alike.
    """
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(repeats):
        order = variants[repeat % len(variants) :] + variants[: repeat % len(variants)]
        for name in order:
            value = runners[name]()
            samples[name].append(value)
            print(f"repeat {repeat} {name:<14} {value:8.1f} images/s", flush=True)
    return samples, {name: statistics.median(values) for name, values in samples.items()}


@contextlib.contextmanager
def train_py_run(timer: StepTimer | None = None, **patches: Any) -> Iterator[str]:
    """A temporary output_dir in which `pipeline.train` runs as train.py does, with the final
    evaluation skipped, `timer` riding along in its callbacks and `patches` replacing other
    names of `ssl_syre.training.pipeline` (data set builders, trainer_kwargs).
    """
    if timer is not None:

        class TimedReseedEachEpoch(ReseedEachEpoch):
            """ReseedEachEpoch plus step timing: rides along in pipeline.train's callbacks."""

            def on_train_batch_start(
                self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int
            ) -> None:
                timer.batch_start(batch_idx)

            def on_train_batch_end(
                self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
            ) -> None:
                timer.batch_end(batch_idx)

        patches["ReseedEachEpoch"] = TimedReseedEachEpoch
    # pipeline.train leaves its run directory in the environment for DDP children; a second
    # call in the same process would otherwise reuse the first (deleted) directory.
    os.environ.pop(RUN_DIR_ENV, None)
    with tempfile.TemporaryDirectory() as output_dir, contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(pipeline, "finish", lambda *a, **k: None))
        for name, value in patches.items():
            stack.enter_context(mock.patch.object(pipeline, name, value))
        yield output_dir


def write_result(result: dict[str, Any], out: Path | None) -> None:
    """Write `result` as indented JSON to `out` (when given) and say where."""
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


def args_record(args: Any) -> dict[str, Any]:
    """The command line's arguments as JSON values (paths as strings)."""
    return {
        key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
    }
