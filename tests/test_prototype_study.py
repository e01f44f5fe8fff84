"""benchmarks/prototype_study.py: the cells it lists, finished cells skipped, the GPU scale's
one-line stop without data, and its table from metrics.json files (no training here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_syre.config import load_config
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import prototype_study  # noqa: E402


def commands(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("$ ")]


def test_dry_run_lists_every_cell_of_every_method(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    prototype_study.main(["--dry-run", "--seeds", "0", "1", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    cells = commands(out)
    # Every study method has the KoLeo-on-prototypes knob: all three arms each.
    assert len(cells) == 2 * 4 * 3  # two seeds
    assert "left out" not in out
    koleo = [c for c in cells if "/koleo/" in c]
    methods = ("dino", "ibot", "dinov2", "swav")
    assert {m for m in methods if any(f"/{m}.yaml " in c for c in koleo)} == set(methods)
    assert len(koleo) == 2 * 4 and all(
        "method_kwargs.prototype_koleo_weight=0.1" in c for c in koleo
    )
    assert all("syre.enabled=false" in c for c in koleo)
    anchor = [c for c in cells if "/anchor/" in c]
    assert anchor and all("syre.sigma0=1" in c and "syre.mode=decoupled" in c for c in anchor)
    assert all("trainer.max_steps=300" in c for c in cells)
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


def test_a_method_without_the_knob_has_its_koleo_cell_left_out() -> None:
    cells, skipped = prototype_study.plan(["simclr"], ["decay0", "koleo"], 0.1)
    assert [(method, arm) for method, arm, *_ in cells] == [("simclr", "decay0")]
    assert skipped == ["simclr x koleo: no method_kwargs.prototype_koleo_weight; left out"]


def test_a_rerun_skips_finished_cells(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    name = "ibot_decoupled_sigma1_seed0_steps300"
    done = tmp_path / "anchor" / "cpu" / name
    done.mkdir(parents=True)
    (done / "metrics.json").write_text("{}")
    args = ["--dry-run", "--seeds", "0", "--method", "ibot", "--output-dir", str(tmp_path)]
    prototype_study.main(args)
    out = capsys.readouterr().out
    assert f"skip (done): {done}" in out and len(commands(out)) == 2


def test_study_configs_validate_and_share_the_setting() -> None:
    methods = ("dino", "ibot", "dinov2", "swav")
    configs = [load_config(str(prototype_study.config_of(m))) for m in methods]
    assert [c.method for c in configs] == list(methods)
    for key in ("backbone", "data", "optimizer"):
        assert all(c[key] == configs[0][key] for c in configs), key
    prototypes = [
        c.method_kwargs.get("n_prototypes", c.method_kwargs.projection_output_dim) for c in configs
    ]
    assert set(prototypes) == {4096}


def test_gpu_scale_stops_in_one_line_without_data(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "prototype_study.py"),
            "--scale",
            "gpu",
            "--method",
            "ibot",
            "--output-dir",
            str(tmp_path),
            "--set",
            f"data.root={tmp_path / 'nothing'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "CIFAR-100" in lines[0]
    assert not commands(done.stdout)


def fake_metrics(distinct: int, knn: float, sigma0: float) -> dict:
    layer = "projection_head.last_layer"
    counts = {f"distinct@{t}": distinct for t in prototype_study.THRESHOLDS}
    return {
        "knn": [{"features": "backbone", "k": 200, "top1": knn}],
        "linear_probe": [],
        "collapse": [],
        "run": {
            "wall_time_s": 1.0,
            "steps": 300,
            "decay": {
                "toward": "anchor" if sigma0 else "zero",
                "sigma0": sigma0,
                "mode": "decoupled",
                "pull_per_step": 1e-4,
            },
        },
        "prototypes": {layer: {"prototypes": 4096, **counts}},
        "online": [{"epoch": 0, **{f"prototypes/{layer}/{k}": v for k, v in counts.items()}}],
    }


def test_table_pairs_each_arm_with_decay_toward_zero(tmp_path: Path) -> None:
    import argparse

    for seed, (off, on) in enumerate([(1000, 3000), (1200, 3100)]):
        for arm, distinct, sigma0 in (("decay0", off, 0.0), ("anchor", on, 1.0)):
            name = f"ibot_decoupled_{'sigma1' if sigma0 else 'off'}_seed{seed}_steps300"
            run = tmp_path / arm / "cpu" / name
            run.mkdir(parents=True)
            metrics = fake_metrics(distinct, 0.5 + 0.01 * sigma0, sigma0)
            (run / "metrics.json").write_text(json.dumps(metrics))
    cells, _ = prototype_study.plan(["ibot"], ["decay0", "anchor"], 0.1)
    args = argparse.Namespace(output_dir=str(tmp_path), scale="cpu")
    table = prototype_study.collect(args, cells, 300)
    assert [(r["arm"], r["seeds"]) for r in table["rows"]] == [
        ("decay0", [0, 1]),
        ("anchor", [0, 1]),
    ]
    assert table["rows"][1]["curves"][0][0]["0.95"] == 3000
    text = prototype_study.markdown(table)
    anchor_row = next(line for line in text.splitlines() if "| anchor |" in line)
    assert "3050 ± 71" in anchor_row  # mean ± std of the final counts
    assert "1950.0 ± 70.7" in anchor_row and "1.0 ± 0.0" in anchor_row  # paired Δ


def test_cell_record_reads_swavs_prototype_layer_as_well_as_the_dino_head() -> None:
    """SwAV's prototypes are the layer `prototypes`, DINO's the head's `last_layer`: both count."""
    counts = {"prototypes": 64, "distinct@0.9": 60, "distinct@0.95": 62, "distinct@0.99": 64}
    base = {
        "knn": [{"features": "backbone", "k": 200, "top1": 0.5}],
        "linear_probe": [],
        "collapse": [],
        "run": {"wall_time_s": 1.0, "steps": 3},
        "online": [],
    }
    for layer in ("prototypes", "projection_head.last_layer"):
        numbers, _ = prototype_study.cell_record({**base, "prototypes": {layer: counts}})
        assert numbers["distinct@0.9"] == 60 and numbers["prototypes"] == 64
