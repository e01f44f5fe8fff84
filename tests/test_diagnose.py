"""python -m ssl_syre.diagnose on a run directory, a checkpoint and an export; the end of
training's symmetry.json/.png and metrics.json summary; one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_syre.diagnose import main
from ssl_syre.errors import run_cli
from tests.conftest import ROOT, train_in_process

pytestmark = pytest.mark.slow

WEIGHT_KEYS = ("name", "shape", "dead", "duplicated", "effective_width", "rank", "low_rank")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny digits run with SyRe anchors (the default) and the online callback on."""
    return train_in_process(
        tmp_path_factory.mktemp("diagnose") / "runs",
        "eval.online_every_n_epochs=1",
        "trainer.enable_progress_bar=false",
    )


def weights(layers: list[dict]) -> list[dict]:
    return [{key: layer[key] for key in WEIGHT_KEYS} for layer in layers]


def test_end_of_training_writes_the_report_and_the_summary(run_dir: Path) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    report = json.loads((run_dir / "symmetry.json").read_text())
    assert (run_dir / "symmetry.png").read_bytes()[:4] == b"\x89PNG"
    assert metrics["symmetry"]["units"] == report["totals"]["units"] > 0
    assert metrics["symmetry"]["dead_units"] == report["totals"]["dead"]
    online = metrics["online"][-1]
    assert online["symmetry_units"] == report["totals"]["units"]
    assert "symmetry_low_rank_0.001" in online
    assert all(layer["distance_to_anchor"] is not None for layer in report["layers"])


def test_cli_on_the_run_directory_matches_the_end_of_training(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "report.json"
    payload = run_cli(main, [str(run_dir), "--json", str(out), "--png", str(tmp_path / "s.png")])
    printed = capsys.readouterr().out
    assert "Totals over" in printed and "backbone.layer4" in printed and "projector" in printed
    written = json.loads(out.read_text())
    assert written["evaluated"]["source"] == "checkpoint" and written["evaluated"]["anchors"]
    at_end = json.loads((run_dir / "symmetry.json").read_text())
    # The same weights: the same weight diagnostics and anchor distances, layer by layer.
    assert weights(written["layers"]) == weights(at_end["layers"])
    assert [r["distance_to_anchor"] for r in written["layers"]] == [
        r["distance_to_anchor"] for r in at_end["layers"]
    ]
    assert payload["totals"] == written["totals"]
    assert (tmp_path / "s.png").is_file()


def test_cli_on_the_checkpoint_and_the_export(run_dir: Path, tmp_path: Path) -> None:
    checkpoint = run_cli(
        main, [str(run_dir / "checkpoints" / "last.ckpt"), "--png", "none", "--samples", "64"]
    )
    export = run_cli(main, [str(run_dir / "export"), "--png", "none", "--samples", "64"])
    assert export["evaluated"]["source"] == "export" and not export["evaluated"]["anchors"]
    backbone = [r for r in checkpoint["layers"] if r["name"].startswith("backbone.")]
    assert weights(export["layers"]) == [
        {**layer, "name": layer["name"].removeprefix("backbone.")} for layer in weights(backbone)
    ]
    assert all(r["distance_to_anchor"] is None for r in export["layers"])
    assert [f["name"] for f in export["features"]][-1] == "output"
    assert checkpoint["settings"]["samples"] == 64


def run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ssl_syre.diagnose", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_python_dash_m_prints_the_table(run_dir: Path) -> None:
    done = run_module(str(run_dir / "export"), "--samples", "0", "--png", "none")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Totals over" in done.stdout and "Features" not in done.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["RUN/missing"], "does not exist"),
        (["RUN", "backbone.name=resnet18"], "cannot override 'backbone.name'"),
        (["RUN", "--samples", "-1"], "--samples must be >= 0"),
        (["RUN", "--json", "/proc/nope/x.json"], "cannot write"),
        (["RUN", "--device", "nonsense"], "--device nonsense is not usable"),
        ([], "pass PATH"),
    ],
)
def test_bad_input_is_one_line(
    run_dir: Path, args: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exited:
        run_cli(main, [arg.replace("RUN", str(run_dir)) for arg in args])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def dino_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny DINO run (16 prototypes) with the online evaluation on."""
    return train_in_process(
        tmp_path_factory.mktemp("prototypes") / "runs",
        "method=dino",
        "method_kwargs.n_local_views=0",
        "eval.online_every_n_epochs=1",
        "eval.linear_probe=false",
        "export=false",
        "trainer.enable_progress_bar=false",
    )


def test_distinct_prototypes_online_in_metrics_and_in_the_cli(
    dino_run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The count is logged online and written to metrics.json; diagnose prints it, and finds
    3 copies planted into the checkpoint's prototypes."""
    import torch

    metrics = json.loads((dino_run_dir / "metrics.json").read_text())
    layer = "projection_head.last_layer"
    assert metrics["prototypes"][layer] == {
        "prototypes": 16,
        "distinct@0.9": 16,
        "distinct@0.95": 16,
        "distinct@0.99": 16,
    }
    assert metrics["online"][-1][f"prototypes/{layer}/distinct@0.99"] == 16
    checkpoint = torch.load(dino_run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    direction = checkpoint["state_dict"][f"{layer}.parametrizations.weight.original1"]
    direction[1:4] = direction[0]
    planted = tmp_path / "planted.ckpt"
    torch.save(checkpoint, planted)
    payload = run_cli(main, [str(planted), "--png", "none", "--samples", "0"])
    printed = capsys.readouterr().out
    assert "Distinct prototypes" in printed and layer in printed
    assert payload["prototypes"][layer]["distinct@0.99"] == 16 - 3
    custom = run_cli(
        main, [str(planted), "--png", "none", "--samples", "0", "--prototype-thresholds", "0.5"]
    )
    assert custom["prototypes"][layer] == {"prototypes": 16, "distinct@0.5": 13}
    with pytest.raises(SystemExit):
        run_cli(main, [str(planted), "--samples", "0", "--prototype-thresholds", "2"])
    assert "--prototype-thresholds are cosines" in capsys.readouterr().err
