"""The benchmark scripts' own logic: RESULTS.md blocks, collapse-study variants, one tiny sweep."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY

sys.path.insert(0, str(ROOT / "benchmarks"))
import collapse_stress  # noqa: E402
import results_table  # noqa: E402


def test_write_block_replaces_only_its_own_block(tmp_path: Path) -> None:
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\nhand-written text\n")
    results_table.write_block("a", "first", md)
    results_table.write_block("b", "other", md)
    results_table.write_block("a", "second", md)
    text = md.read_text()
    assert "hand-written text" in text
    assert "second" in text and "first" not in text
    assert text.count("<!-- a:begin -->") == 1 and "other" in text


def test_summarize_rows_mean_and_std_over_seeds() -> None:
    stats = results_table.summarize_rows({0: {"x": 1.0, "y": 5.0}, 1: {"x": 3.0}})
    assert stats["x"] == {"mean": 2.0, "std": pytest.approx(2**0.5), "n": 2}
    assert stats["y"]["n"] == 1
    assert results_table.fmt(stats["x"]) == "2.0 ± 1.4"
    assert results_table.fmt(stats["y"]) == "5.0"


def test_collapse_variants_parse_sigma0_and_d_eps() -> None:
    assert collapse_stress.variant_overrides("off") == ["syre.enabled=false"]
    assert collapse_stress.variant_overrides("0.01:0.1") == [
        "syre.enabled=true",
        "syre.sigma0=0.01",
        "syre.d_eps=0.1",
    ]
    assert collapse_stress.variant_label("0.1:0.5") == "SyRe sigma0=0.1, D eps=0.5"
    assert collapse_stress.variant_label("off") == "decay toward 0"
    with pytest.raises(SystemExit, match="SIGMA0"):
        collapse_stress.variant_overrides("0.01:big")


@pytest.mark.slow
def test_collapse_study_runs_and_writes_table_plots_and_json(tmp_path: Path) -> None:
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n")
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "collapse_stress.py"),
        "--variants",
        "off,0.01:0.1",
        "--modes",
        "coupled",
        "--seeds",
        "0",
        "--tag",
        "tiny",
        "--output-dir",
        str(tmp_path / "runs"),
        "--results",
        str(tmp_path / "results"),
        "--results-md",
        str(md),
        "--threads",
        "1",
        "--set",
        *TINY,
        "trainer.max_steps=3",
        "data.test_subset=null",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = json.loads((tmp_path / "results" / "tiny.json").read_text())["rows"]
    assert set(rows) == {"coupled/off", "coupled/0.01:0.1"}
    assert rows["coupled/off"]["seeds"] == [0]
    assert (tmp_path / "runs" / "tiny_coupled_0.01-d0.1_seed0" / "config.yaml").is_file()
    table = md.read_text()
    # Each row names its decay: target, mode and pull per step (lr 0.06·64/128 · γ 0.2 / 0.1).
    assert "| coupled | decay toward 0 | coupled toward 0, 0.06/step | 0 |" in table
    assert (
        "| coupled | SyRe sigma0=0.01, D eps=0.1 | coupled toward θ0 (σ0=0.01), D eps=0.1" in table
    )
    assert "| coupled | SyRe sigma0=0.01, D eps=0.1 | 0 |" in table  # the paired difference
    for kind in ("projector", "backbone"):
        assert (tmp_path / "results" / f"tiny_{kind}_spectra.png").stat().st_size > 0
    # A rerun skips the finished runs instead of training again.
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("skip (done)") == 2
