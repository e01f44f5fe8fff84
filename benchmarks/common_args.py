"""The command-line options that several benchmark scripts share, each defined once.

A script builds its own `argparse.ArgumentParser` and calls these functions for the options it
has in common with others; where scripts differ in a default or a help line, it is a parameter
(the default argument is the most common one). Imports nothing heavy, so a script's `--help`
and the parser tests stay fast. Found beside the scripts, as they run as
`python benchmarks/NAME.py`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

TORCH_THREADS_HELP = "torch.set_num_threads (default: torch's)"
CELL_THREADS_HELP = "OMP_NUM_THREADS for each cell"
OUT_HELP = "write the results as JSON here"
STEPS_HELP = "timed steps per run"
WARMUP_HELP = "untimed steps per run"
SET_HELP = "extra train.py overrides"


def add_threads(
    parser: argparse.ArgumentParser,
    help: str | None = TORCH_THREADS_HELP,
    default: int | None = None,
) -> None:
    """--threads: torch's CPU threads in a timing script, OMP_NUM_THREADS per run in a sweep."""
    parser.add_argument("--threads", type=int, default=default, help=help)


def add_out(parser: argparse.ArgumentParser, help: str | None = OUT_HELP, type: Any = Path) -> None:
    """--out: the JSON file a script writes its results to (none: print only)."""
    parser.add_argument("--out", type=type, default=None, help=help)


def add_steps(parser: argparse.ArgumentParser, default: int, help: str | None = STEPS_HELP) -> None:
    """--steps: how many timed steps a timing run measures."""
    parser.add_argument("--steps", type=int, default=default, help=help)


def add_warmup(
    parser: argparse.ArgumentParser, default: int, help: str | None = WARMUP_HELP
) -> None:
    """--warmup: untimed steps first, so one-off costs (allocation, autotuning) stay out."""
    parser.add_argument("--warmup", type=int, default=default, help=help)


def add_loader(
    parser: argparse.ArgumentParser,
    batch_size: int,
    num_workers: int | None = None,
    batch_help: str | None = None,
) -> None:
    """--batch-size and, given a default, --num-workers (the DataLoader's worker processes)."""
    parser.add_argument("--batch-size", type=int, default=batch_size, help=batch_help)
    if num_workers is not None:
        parser.add_argument("--num-workers", type=int, default=num_workers)


def add_backbone(parser: argparse.ArgumentParser, default: str = "test_resnet") -> None:
    """--backbone: the timm model name of a timed training step."""
    parser.add_argument("--backbone", default=default)


def add_repeats(parser: argparse.ArgumentParser, default: int = 3) -> None:
    """--repeats: rotated repetitions of every variant, so machine drift hits each alike."""
    parser.add_argument("--repeats", type=int, default=default)


def add_seeds(parser: argparse.ArgumentParser, default: list[int] | None = None) -> None:
    """--seed/--seeds: the seeds a sweep runs every cell with."""
    seeds = [0, 1, 2] if default is None else default
    parser.add_argument("--seed", "--seeds", dest="seeds", type=int, nargs="+", default=seeds)


def add_sweep(
    parser: argparse.ArgumentParser,
    name: str,
    set_help: str = SET_HELP,
    threads_help: str = CELL_THREADS_HELP,
) -> None:
    """--set, --output-dir (runs/NAME) and --threads of a sweep of train.py subprocesses."""
    parser.add_argument("--set", nargs="*", default=[], help=set_help)
    parser.add_argument("--output-dir", default=str(ROOT / "runs" / name))
    add_threads(parser, help=threads_help)


def add_jobs(parser: argparse.ArgumentParser) -> None:
    """--jobs: how many cells train at once (with --threads 1, one per core)."""
    parser.add_argument(
        "--jobs", type=int, default=1, help="cells trained at once (e.g. 2 with --threads 1)"
    )


def add_rerun(
    parser: argparse.ArgumentParser,
    force_help: str | None = "rerun finished cells",
    collect_help: str = "only rebuild the table",
    dry_run: bool = True,
) -> None:
    """--force, --dry-run (when dry_run) and --collect-only of a resumable sweep."""
    parser.add_argument("--force", action="store_true", help=force_help)
    if dry_run:
        parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("--collect-only", action="store_true", help=collect_help)


def add_checkout_results(parser: argparse.ArgumentParser) -> None:
    """--checkout-results: put the table in the checkout's results pages even though the cells
    live in another --output-dir (results_table.write_study_table)."""
    parser.add_argument(
        "--checkout-results",
        action="store_true",
        help="write the table into benchmarks/results/ even with another --output-dir",
    )


def add_results(parser: argparse.ArgumentParser, md_help: str | None = None) -> None:
    """--results (the JSON folder) and --results-md (the markdown page the table goes into;
    default: the study's page under benchmarks/results/, results_table.study_page)."""
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--results-md", type=Path, default=None, help=md_help)
