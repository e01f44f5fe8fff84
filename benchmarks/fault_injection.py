"""Kill -9 tiny training runs at random points of their checkpoint and end-of-run writes,
resume them, and count what was lost.

    OMP_NUM_THREADS=1 python benchmarks/fault_injection.py --runs 4 [--data digits] [--out DIR]

One uninterrupted run is the reference. Each of the N runs is then started and killed
(SIGKILL, `--kills` times) at a random one of two points: the moment a checkpoint is being
written (its temporary `.last.ckpt.*` / `.epochNNN.ckpt.*` file is seen), or a random moment
of the end-of-run writes (evaluation, pictures, export, metrics.json: while the staging
folder exists). After each kill every file of the run is read back whole (checkpoints with
weights_only, JSON, safetensors, PNG); then the run is resumed with the same command, and
the last resume runs to the end (a kill after the last rename leaves a finished run, which
needs none). A run "resumed exactly" when its final weights equal the
reference's bit for bit and its metrics.json reports the same steps. Files lost: a file
that cannot be read whole after a kill, or one missing at the end.

Each attempt is a forked child of this script (a real process to kill, without paying the
imports again). Everything is written under --out (default: a new temporary folder).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from ssl_syre.errors import UserError, run_cli  # noqa: E402
from ssl_syre.training.checkpoint import load_checkpoint  # noqa: E402
from ssl_syre.training.pipeline import main as train_main  # noqa: E402
from ssl_syre.training.resume import results_match  # noqa: E402
from ssl_syre.training.run_dir import RUN_DIR_ENV  # noqa: E402

TINY = [
    "backbone.name=test_resnet",
    "data.batch_size=32",
    "data.num_workers=0",
    "method_kwargs.projection_hidden_dim=32",
    "method_kwargs.projection_output_dim=16",
    "trainer.limit_train_batches=2",
    "trainer.accelerator=cpu",
    "trainer.enable_model_summary=false",
    "trainer.enable_progress_bar=false",
    "eval.online_every_n_epochs=0",
    "eval.linear_probe=false",
    "eval.raw_pixel_baseline=false",
    "eval.knn_k=[5]",
    "export=true",
]
DATA = {
    "digits": ["data.name=digits"],
    "fashion_mnist": ["data.name=fashion_mnist", "data.train_subset=512", "data.test_subset=256"],
}
POINTS = ("checkpoint write", "end-of-run writes", "renames of the results")


def _child(log: str, args: list[str]) -> None:
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    os.environ.pop(RUN_DIR_ENV, None)
    torch.set_num_threads(1)
    try:
        run_cli(train_main, args)
    except SystemExit as exit_:
        os._exit(int(exit_.code or 0))
    os._exit(0)


def start(log: Path, args: list[str]) -> multiprocessing.Process:
    process = multiprocessing.get_context("fork").Process(target=_child, args=(str(log), args))
    process.start()
    return process


def in_checkpoint_write(run: Path) -> bool:
    return any((run / "checkpoints").glob(".*.ckpt.*"))


def in_end_of_run_writes(run: Path) -> bool:
    return any(run.glob(".results.staging-*"))


def in_renames(run: Path) -> bool:
    """metrics.json is staged last, just before the staged files are renamed into place."""
    return any(run.glob(".results.staging-*/metrics.json"))


def kill_at(process: multiprocessing.Process, run: Path, point: str, delay: float) -> bool:
    """SIGKILL `process` at `point` (`delay` s after the end-of-run writes began); False when
    it ended before getting there."""
    seen = {POINTS[0]: in_checkpoint_write, POINTS[1]: in_end_of_run_writes}.get(point, in_renames)
    deadline = time.time() + 600
    while not seen(run):
        if process.exitcode is not None or time.time() > deadline:
            return False
        time.sleep(0.0005)
    if point == POINTS[1]:  # somewhere in the evaluation, the pictures, the export, the renames
        time.sleep(delay)
    elif point == POINTS[2]:  # within the renames (each one fsyncs: milliseconds)
        time.sleep(delay / 100)
    if process.exitcode is not None:
        return False
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    return True


def end_of_run_seconds(process: multiprocessing.Process, run: Path) -> float:
    """How long the end-of-run writes of `process` last (staging folder seen to exit)."""
    while not in_end_of_run_writes(run) and process.exitcode is None:
        time.sleep(0.001)
    began = time.time()
    process.join()
    return time.time() - began


def unreadable(run: Path) -> list[str]:
    """Every file of the run that cannot be read whole (temporary and staging files aside)."""
    broken = []
    for path in sorted(run.rglob("*")):
        relative = path.relative_to(run)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        if "logs" in relative.parts:
            continue  # the loggers' own files: appended, not ours to make atomic
        try:
            if path.suffix == ".ckpt":
                load_checkpoint(path)
            elif path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".safetensors":
                load_file(str(path))
            elif path.suffix == ".png":
                with Image.open(path) as image:
                    image.verify()
        except (UserError, ValueError, OSError, SyntaxError, RuntimeError):
            broken.append(str(relative))
    return broken


def files_of(run: Path) -> list[str]:
    """The run's own files (not logs, temporary files or staging folders)."""
    if not run.is_dir():
        return []
    return [
        str(path.relative_to(run))
        for path in run.rglob("*")
        if path.is_file()
        and "logs" not in path.relative_to(run).parts
        and not any(part.startswith(".") for part in path.relative_to(run).parts)
    ]


EXPECTED = ("checkpoints/last.ckpt", "metrics.json", "export/model.safetensors", "config.yaml")


def finished(run: Path) -> bool:
    last = run / "checkpoints/last.ckpt"
    return last.is_file() and results_match(run / "metrics.json", load_checkpoint(last))


def same_weights(a: Path, b: Path) -> bool:
    first, second = (torch.load(p, weights_only=True)["state_dict"] for p in (a, b))
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4, help="runs to kill and resume")
    parser.add_argument("--kills", type=int, default=2, help="kills per run")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--data", choices=sorted(DATA), default="digits")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill points")
    parser.add_argument("--out", default=None, help="folder for the runs (default: a temp dir)")
    return parser


def main(argv: list[str]) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="fault_injection-"))
    out.mkdir(parents=True, exist_ok=True)
    base = [*TINY, *DATA[args.data], f"trainer.max_epochs={args.epochs}", f"output_dir={out}"]
    rng = random.Random(args.seed)
    started = time.time()

    reference = start(out / "reference.log", [*base, "run_name=reference"])
    finish_s = end_of_run_seconds(reference, out / "reference")
    assert reference.exitcode == 0, (out / "reference.log").read_text()[-3000:]
    reference_steps = json.loads((out / "reference/metrics.json").read_text())["run"]["steps"]

    summary: dict[str, Any] = {"kills": 0, "kills_mid_write": 0, "kills_by_point": {}}
    summary["end_of_run_s"] = round(finish_s, 2)
    summary["runs"] = []
    for index in range(args.runs):
        name = f"run{index}"
        run, log = out / name, out / f"{name}.log"
        record: dict[str, Any] = {"name": name, "kills": [], "broken_after_kill": []}
        command = [*base, f"run_name={name}"]
        final = None
        for attempt in range(args.kills):
            # The first kill cycles through the points; after a kill in the end-of-run writes
            # there is nothing left to train, so the next one is one of those writes again.
            point = POINTS[index % len(POINTS)] if attempt == 0 else rng.choice(POINTS)
            before = files_of(run)
            process = start(log, command)
            killed = kill_at(process, run, point, rng.uniform(0.0, finish_s))
            process.join()
            record["kills"].append({"point": point, "killed": killed})
            if not killed:  # it ended by itself: the run is complete
                final = process
                break
            summary["kills"] += 1
            # A temporary checkpoint file or a staging folder: the kill cut a write short.
            summary["kills_mid_write"] = summary.get("kills_mid_write", 0) + bool(
                in_checkpoint_write(run) or in_end_of_run_writes(run)
            )
            summary["kills_by_point"][point] = summary["kills_by_point"].get(point, 0) + 1
            record["broken_after_kill"] += unreadable(run)
            record["broken_after_kill"] += [f for f in before if not (run / f).is_file()]
            last = run / "checkpoints/last.ckpt"
            if finished(run):
                break  # killed after its last rename: finished, a resume would be refused
            if last.exists():
                command = [*base, f"resume={run}"]
            else:  # killed before its first checkpoint: nothing to resume, start again
                name = f"{name}-again"
                run, command = out / name, [*base, f"run_name={name}"]
        if final is None and not finished(run):
            final = start(log, command)
            final.join()
        record["exit_code"] = final.exitcode if final is not None else 0
        record["missing"] = [f for f in EXPECTED if not (run / f).is_file()]
        record["broken_at_end"] = unreadable(run)
        # Temporary files and staging folders of killed writes that no later write removed.
        record["leftovers"] = sorted(
            str(p.relative_to(run)) for p in run.rglob(".*") if p.name != ".lock"
        )
        steps = None
        if (run / "metrics.json").is_file():
            steps = json.loads((run / "metrics.json").read_text())["run"]["steps"]
        record["exact"] = (
            record["exit_code"] == 0
            and steps == reference_steps
            and same_weights(out / "reference/checkpoints/last.ckpt", run / "checkpoints/last.ckpt")
        )
        summary["runs"].append(record)
        print(json.dumps(record), flush=True)

    runs = summary["runs"]
    summary.update(
        {
            "data": args.data,
            "epochs": args.epochs,
            "runs_resumed_exactly": sum(r["exact"] for r in runs),
            "files_lost": sum(
                len(r["broken_after_kill"]) + len(r["missing"]) + len(r["broken_at_end"])
                for r in runs
            ),
            "runs_with_leftovers": sum(bool(r["leftovers"]) for r in runs),
            "wall_time_s": round(time.time() - started, 1),
            "out": str(out),
        }
    )
    print(
        f"runs {len(runs)}, kills {summary['kills']} ({summary['kills_by_point']}; "
        f"{summary['kills_mid_write']} cut a write short), "
        f"resumed exactly {summary['runs_resumed_exactly']}/{len(runs)}, "
        f"files lost {summary['files_lost']}, runs with leftover temporary files "
        f"{summary['runs_with_leftovers']}, {summary['wall_time_s']} s; runs in {out}"
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
