"""The installed commands (`[project.scripts]` in pyproject.toml), which train.py and eval/*.py
also run: each turns a package `main(argv)` into a command with one-line errors (`run_cli`).

Their heavy imports (torch, Lightning) happen when a command runs, not when it is looked up.
"""

from __future__ import annotations

import sys

from ssl_syre.errors import run_cli


def train() -> None:
    """ssl-syre-train, python train.py: pre-train, evaluate and export (`--help`: the keys)."""
    from ssl_syre.training.pipeline import main

    run_cli(main)


def knn() -> None:
    """ssl-syre-knn, python eval/knn.py: weighted kNN on a run, checkpoint or export."""
    from ssl_syre.evaluation.cli import main_knn

    run_cli(main_knn)


def linear_probe() -> None:
    """ssl-syre-linear, python eval/linear_probe.py: linear probe on frozen features."""
    from ssl_syre.evaluation.cli import main_linear_probe

    run_cli(main_linear_probe)


def export() -> None:
    """ssl-syre-export, python -m ssl_syre.export: timm-format export, push to the Hub."""
    from ssl_syre.export.__main__ import main

    run_cli(main)


def diagnose() -> None:
    """ssl-syre-diagnose: the diagnostics of a run (ssl_syre.diagnose), where this version has them."""
    try:
        from ssl_syre.diagnose import main
    except ModuleNotFoundError as error:
        if error.name != "ssl_syre.diagnose":
            raise
        print(
            "error: this ssl_syre has no diagnostics (no module ssl_syre.diagnose); "
            "update ssl_syre (git pull, then pip install -e .)",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    run_cli(main)
