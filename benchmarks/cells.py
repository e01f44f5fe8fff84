"""The one cell runner of the study scripts (ablation, collapse_stress, paper_ssl_table).

A cell is one `train.py` run in its own run directory. A finished cell (its metrics.json
exists) is skipped on a rerun, so an interrupted study resumes; a broken one (a directory
without metrics.json) is cleared and trained again; `force` retrains every cell. Each cell's
output goes to `<run directory>.log` beside it, and a failure is reported in one line: the
run's own `error:` line when it printed one (a missing data set, say), else the log's tail.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def clear_unfinished(run_dir: Path) -> None:
    """Remove an unfinished cell's directory so it trains again, unless a live train.py still
    holds its lock (RUN_DIR/.lock, an flock the OS drops when that process ends): two studies
    started on one folder must not delete each other's running cells.
    """
    if not run_dir.exists():
        return
    lock = run_dir / ".lock"
    if lock.is_file():
        with lock.open("r") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = handle.read().strip() or "?"
                raise SystemExit(
                    f"error: {run_dir} is being trained by another process (pid {pid}); "
                    "wait for it, or give this study another --output-dir"
                ) from None
            fcntl.flock(handle, fcntl.LOCK_UN)
    shutil.rmtree(run_dir)


def run_cell(
    run_dir: Path,
    config: Path | str,
    overrides: list[str],
    *,
    threads: int | None = None,
    force: bool = False,
    dry_run: bool = False,
) -> Path:
    """Train `config` with `overrides` into `run_dir` unless it is finished; return `run_dir`.

    `output_dir` and `run_name` are set from `run_dir`; `threads` sets OMP_NUM_THREADS for the
    cell (on a shared CPU, two OpenMP threads that spin-wait for each other can be slower than
    one: benchmarks/results/conditions.md).
    """
    if (run_dir / "metrics.json").is_file() and not force:
        print(f"skip (done): {run_dir}", flush=True)
        return run_dir
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        str(config),
        *overrides,
        f"output_dir={run_dir.parent}",
        f"run_name={run_dir.name}",
    ]
    print("$ " + " ".join(command), flush=True)
    if dry_run:
        return run_dir
    clear_unfinished(run_dir)  # force, or a run interrupted before its metrics.json
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log = run_dir.parent / f"{run_dir.name}.log"
    started = time.time()
    with log.open("w") as handle:
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        text = log.read_text()
        errors = [line for line in text.splitlines() if line.startswith("error:")]
        if errors:  # a UserError: its one line is the message
            raise SystemExit(f"{errors[-1]} (cell {run_dir.name}, log {log})")
        raise SystemExit(f"cell failed (exit {done.returncode}), log {log}:\n{text[-2000:]}")
    print(f"done in {time.time() - started:.0f} s: {run_dir}", flush=True)
    return run_dir


def run_cells(tasks: list[Callable[[], Path]], jobs: int = 1) -> list[Path]:
    """Run cell tasks (each a `run_cell` call), `jobs` at a time, started in the given order.

    Each cell is its own train.py process, so threads here only wait on them. The first
    failure is raised once the cells already running end; the cells not yet started are not.
    """
    if jobs <= 1:
        return [task() for task in tasks]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(task) for task in tasks]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise
