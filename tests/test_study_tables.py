"""The study scripts' shared bookkeeping: where a table is written, raw-pixel rows per image
size, and cells that a second study must not clear while they run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import results_table  # noqa: E402

from tests.test_benchmarks import fake_metrics  # noqa: E402


def test_ablation_keeps_raw_pixels_of_each_image_size_apart(tmp_path: Path) -> None:
    """Raw pixels at 28 px and at 32 px (the ViT cells) are different baselines: one row each."""
    import argparse

    import ablation

    args = argparse.Namespace(
        output_dir=str(tmp_path),
        scale="cpu",
        modes=["coupled"],
        sigma0=[],
        table_seeds=None,
        set=[],
    )
    for method, size, raw in (("simclr", None, 0.70), ("dcl", 32, 0.75)):
        run_dir = tmp_path / "cpu" / ablation.run_name(method, "coupled", 0.0, 0, 300)
        run_dir.mkdir(parents=True)
        metrics = fake_metrics(0.5, "coupled", 0.0)
        metrics["knn"].append({"features": "raw_pixels", "k": 200, "top1": raw})
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        (run_dir / "config.yaml").write_text(
            f"data:\n  image_size: {'null' if size is None else size}\n"
        )
    table = ablation.collect(args, 300)
    assert list(table["raw_pixels"]) == ["native", "32"]
    text = ablation.markdown(table)
    assert "| raw pixels (784-d) | - | - | same splits | 70.0 |" in text
    assert "| raw pixels at 32 px (the cells at 32 px) | - | - | same splits | 75.0 |" in text


def test_a_study_table_stays_beside_cells_in_another_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cells outside the study's default folder keep their table beside them; the checkout's
    results pages change only for the default folder or --checkout-results."""
    pages = tmp_path / "results"
    monkeypatch.setattr(results_table, "RESULTS_PAGES", pages)
    cells = tmp_path / "trial"
    page = results_table.write_study_table(
        "t_steps1", "t", {"rows": []}, "TABLE", cells, tmp_path / "runs" / "t"
    )
    assert page == cells / "t.md" and "TABLE" in page.read_text()
    assert (cells / "t_steps1.json").is_file() and not pages.exists()
    page = results_table.write_study_table(
        "t_steps1", "t", {"rows": []}, "TABLE", cells, tmp_path / "runs" / "t", checkout=True
    )
    assert page == pages / "t.md" and (pages / "t_steps1.json").is_file()
    page = results_table.write_study_table(
        "u_steps1", "u", {}, "U", tmp_path / "runs" / "u", tmp_path / "runs" / "u"
    )
    assert page == pages / "u.md"


def test_a_running_cell_is_never_cleared(tmp_path: Path) -> None:
    """An unfinished cell is cleared to train again, but not while a live process holds its
    lock: two studies on one folder must not delete each other's running cells."""
    import fcntl

    import cells

    run_dir = tmp_path / "cell"
    run_dir.mkdir()
    (run_dir / ".lock").write_text("4242\n")
    with (run_dir / ".lock").open("r") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(SystemExit, match="being trained by another process .pid 4242"):
            cells.clear_unfinished(run_dir)
        assert run_dir.is_dir()
    cells.clear_unfinished(run_dir)  # the lock is free: an interrupted run, cleared
    assert not run_dir.exists()


def test_cells_run_in_order_or_several_at_once_and_a_failure_stops_the_study(
    tmp_path: Path,
) -> None:
    """--jobs N: N cells train at once (a barrier that needs two waiters passes only then);
    one cell at a time keeps the order; a failed cell's error reaches the study."""
    import threading

    import cells

    order: list[int] = []

    def cell(i: int, barrier: threading.Barrier | None = None) -> Path:
        if barrier is not None:
            barrier.wait(timeout=10)  # BrokenBarrierError unless a second cell runs meanwhile
        order.append(i)
        return tmp_path / str(i)

    assert cells.run_cells([lambda i=i: cell(i) for i in range(3)]) == [
        tmp_path / "0",
        tmp_path / "1",
        tmp_path / "2",
    ]
    assert order == [0, 1, 2]
    barrier = threading.Barrier(2)
    assert cells.run_cells([lambda i=i: cell(i, barrier) for i in range(2)], jobs=2) == [
        tmp_path / "0",
        tmp_path / "1",
    ]
    with pytest.raises(threading.BrokenBarrierError):  # one at a time: the barrier never fills
        cells.run_cells([lambda: cell(9, threading.Barrier(2)) for _ in range(2)], jobs=1)

    def broken() -> Path:
        raise SystemExit("error: data set missing (cell x)")

    with pytest.raises(SystemExit, match="data set missing"):
        cells.run_cells([broken, lambda: cell(5)], jobs=2)


def test_the_studies_run_their_cells_through_jobs(tmp_path: Path, monkeypatch) -> None:
    """ablation.py and prototype_study.py hand every planned cell to run_cells with --jobs."""
    import ablation
    import prototype_study

    seen: list[tuple[int, int]] = []
    monkeypatch.setattr(
        ablation.cells, "run_cells", lambda tasks, jobs: seen.append((len(tasks), jobs)) or []
    )
    monkeypatch.setattr(
        prototype_study, "run_cells", lambda tasks, jobs: seen.append((len(tasks), jobs)) or []
    )
    monkeypatch.setattr(ablation, "collect", lambda args, max_steps: {"rows": []})
    monkeypatch.setattr(prototype_study, "collect", lambda args, cells, max_steps: {"rows": []})
    out = ["--output-dir", str(tmp_path)]
    monkeypatch.setattr(
        sys, "argv", ["ablation.py", "--method", "simclr", "--seeds", "0", "1", "--jobs", "2", *out]
    )
    ablation.main()
    prototype_study.main(["--method", "dino", "swav", "--seeds", "0", "--jobs", "3", *out])
    modes = len(ablation.modes_of("simclr", ablation.build_parser().parse_args([]).modes))
    assert seen == [(2 * modes * 2, 2), (2 * 3, 3)]  # seeds x modes x (off, on); methods x arms
