"""benchmarks/quickstart.py: reading train.py's printed table and metrics, the margins over raw
pixels, and the README block it writes (from records, without training)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import quickstart  # noqa: E402

PRINTED = """Epoch 7: 100%|##########| 78/78
kNN (cosine, weighted)          k      t     top1     top5
  raw_pixels                  200    0.1   75.70%   99.67%
  backbone                    200    0.1   77.96%   99.48%
linear probe                      epochs     top1     top5
  backbone                            30   78.87%   99.47%
kNN top-1 (test split, k=200, t=0.1): learned backbone 77.96% vs raw pixels 75.70%
run directory: runs/x  (metrics.json, ...)"""


def _record(seed: int, backbone: dict[int, float], raw: dict[int, float]) -> dict[str, Any]:
    return {
        "config": "configs/default.yaml",
        "seed": seed,
        "wall_s": 281.4,
        "load_before": 0.1,
        "load_max": 2.3,
        "cpus": 2,
        "table": quickstart.printed_table(PRINTED),
        "knn": {"backbone": backbone, "raw_pixels": raw},
    }


def test_printed_table_is_the_evaluation_block_only() -> None:
    table = quickstart.printed_table(PRINTED)
    assert table[0].startswith("kNN (cosine") and table[-1].startswith("kNN top-1")
    assert len(table) == 6
    assert quickstart.knn_lines(table) == [table[0], table[1], table[2], table[-1]]
    with pytest.raises(ValueError, match="no evaluation table"):
        quickstart.printed_table("Traceback ...\nerror: out of memory")


def test_knn_rows_and_margins_from_metrics() -> None:
    metrics = {
        "knn": [
            {"features": "raw_pixels", "k": 200, "top1": 0.757},
            {"features": "raw_pixels", "k": 20, "top1": 0.8215},
            {"features": "backbone", "k": 200, "top1": 0.80},
            {"features": "backbone", "k": 20, "top1": 0.84},
        ]
    }
    rows = quickstart.knn_rows(metrics)
    assert rows["backbone"][20] == pytest.approx(84.0)
    record = {"knn": rows}
    assert quickstart.margins(record) == {20: pytest.approx(1.85), 200: pytest.approx(4.3)}


def test_saved_records_read_back_with_integer_k(tmp_path: Path) -> None:
    path = tmp_path / "quickstart_record.json"
    path.write_text(json.dumps(_record(0, {200: 80.0}, {200: 75.7})))
    assert quickstart.read_record(path)["knn"]["backbone"] == {200: 80.0}


def test_readme_block_holds_the_printed_table_the_margins_and_the_spread(tmp_path: Path) -> None:
    records = [
        _record(0, {200: 80.0, 20: 84.5}, {200: 75.7, 20: 82.15}),
        _record(1, {200: 81.0, 20: 85.5}, {200: 75.0, 20: 82.0}),
    ]
    block = quickstart.readme_block({"configs/default.yaml": records})
    assert "kNN top-1 (test split, k=200, t=0.1)" in block
    row = "| `configs/default.yaml` | 20 | 84.50% | 82.15% | +2.35 | +2.92 ± 0.81, min +2.35 (n=2) | 4 min 41 s |"
    assert row in block
    assert "--seeds 0 1 --readme" in block
    page = tmp_path / "README.md"
    page.write_text("# x\n<!-- quickstart:begin -->\nold\n<!-- quickstart:end -->\nrest\n")
    quickstart.write_block("quickstart", block, page)
    assert "old" not in page.read_text() and "rest" in page.read_text()


def test_a_long_config_runs_the_first_seed_only_and_the_block_says_so() -> None:
    args = quickstart.build_parser().parse_args(
        [
            "--config",
            "configs/default.yaml",
            "configs/long.yaml",
            "--seeds",
            "0",
            "1",
            "2",
            "--first-seed-only",
            "configs/long.yaml",
        ]
    )
    assert quickstart.seeds_of("configs/default.yaml", args) == [0, 1, 2]
    assert quickstart.seeds_of("configs/long.yaml", args) == [0]
    records = [_record(s, {200: 80.0}, {200: 75.7}) for s in (0, 1, 2)]
    block = quickstart.readme_block(
        {"configs/default.yaml": records, "configs/long.yaml": records[:1]}
    )
    assert "--seeds 0 1 2 --first-seed-only configs/long.yaml --readme" in block
    args.first_seed_only = ["configs/typo.yaml"]
    with pytest.raises(SystemExit, match="typo.yaml is not in --config"):
        quickstart.seeds_of("configs/default.yaml", args)


def test_the_readme_block_is_the_scripts_own() -> None:
    """The README's quick-start numbers come from the script, between its markers."""
    text = (ROOT / "README.md").read_text()
    begin, end = "<!-- quickstart:begin -->", "<!-- quickstart:end -->"
    assert begin in text and end in text
    block = text.split(begin)[1].split(end)[0]
    assert "python benchmarks/quickstart.py" in block and "kNN (cosine" in block
