"""eval/knn.py and eval/linear_probe.py on a run directory, a checkpoint and an export:
metrics.json reproduced exactly, overrides, JSON output, one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_syre.errors import UserError, run_cli
from ssl_syre.evaluation.cli import main_knn, main_linear_probe
from ssl_syre.export import load_model
from tests.conftest import ROOT, train_in_process

pytestmark = pytest.mark.slow

FAST = ["eval.online_every_n_epochs=0", "trainer.enable_progress_bar=false"]


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "eval" / script), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def by_protocol(records: list[dict]) -> dict[tuple, dict]:
    return {(r["features"], r.get("k")): r for r in records}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny digits run with kNN, linear probe, projector and raw-pixel results."""
    return train_in_process(tmp_path_factory.mktemp("cli") / "runs", *FAST)


@pytest.fixture(scope="module")
def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_knn_script_on_the_run_directory_reproduces_metrics_json(
    run_dir: Path, metrics: dict
) -> None:
    """Same weights (last.ckpt is the model after fit), eval transform and batches: the
    same features, so the same numbers, for every feature kind."""
    done = run_script("knn.py", str(run_dir), "--features", "backbone,projector,raw_pixels")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "kNN (cosine, weighted)" in done.stdout and "eval_knn.json" in done.stdout
    written = json.loads((run_dir / "eval_knn.json").read_text())
    assert by_protocol(written["knn"]) == by_protocol(metrics["knn"])
    assert {r["features"] for r in written["knn"]} == {"backbone", "projector", "raw_pixels"}
    evaluated = written["evaluated"]
    assert evaluated["source"] == "checkpoint" and evaluated["steps"] == metrics["run"]["steps"]
    assert evaluated["train_size"] == 1437 and evaluated["test_size"] == 360


def test_knn_on_the_checkpoint_file(run_dir: Path, metrics: dict, tmp_path: Path) -> None:
    out = tmp_path / "ckpt.json"
    written = run_cli(main_knn, [str(run_dir / "checkpoints" / "last.ckpt"), "--out", str(out)])
    expected = [r for r in metrics["knn"] if r["features"] == "backbone"]
    assert written["knn"] == expected
    assert json.loads(out.read_text())["knn"] == expected


def test_knn_on_the_export_directory_backbone_only(
    run_dir: Path, metrics: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    written = run_cli(main_knn, [str(run_dir / "export"), "--out", str(tmp_path)])
    assert written["evaluated"]["source"] == "export"
    assert written["knn"] == [r for r in metrics["knn"] if r["features"] == "backbone"]
    assert (tmp_path / "eval_knn.json").is_file()  # --out DIR writes DIR/eval_knn.json
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main_knn, [str(run_dir / "export"), "--features", "projector"])
    assert exit_info.value.code == 2
    assert "backbone only" in capsys.readouterr().err


def test_overrides_change_the_protocol_and_the_data(run_dir: Path, tmp_path: Path) -> None:
    written = run_cli(
        main_knn,
        [
            str(run_dir),
            "eval.knn_k=[5]",
            "eval.knn_t=0.07",
            "data.test_subset=100",
            "--out",
            str(tmp_path / "k5.json"),
        ],
    )
    (record,) = written["knn"]
    assert (record["features"], record["k"], record["t"]) == ("backbone", 5, 0.07)
    assert 0.0 <= record["top1"] <= record["top5"] <= 1.0
    assert written["evaluated"]["test_size"] == 100
    assert written["evaluated"]["overrides"] == [
        "eval.knn_k=[5]",
        "eval.knn_t=0.07",
        "data.test_subset=100",
    ]


def test_k_above_the_bank_is_clamped_once(run_dir: Path, tmp_path: Path) -> None:
    written = run_cli(
        main_knn,
        [str(run_dir), "eval.knn_k=[5000,9000]", "data.train_subset=50", "--out", str(tmp_path)],
    )
    assert [r["k"] for r in written["knn"]] == [50]


def test_another_data_set_is_seen_at_the_trained_image_size(run_dir: Path) -> None:
    """The digits run trained at 16 px; evaluated on Fashion-MNIST (28 px by default) from
    the checkpoint or the export alike, the images are resized to 16 px unless
    data.image_size says otherwise."""
    for path in (run_dir, run_dir / "export"):
        assert load_model(path, ["data.name=fashion_mnist"]).cfg.data.image_size == 16
        assert load_model(path, ["data.image_size=24"]).cfg.data.image_size == 24


def test_linear_probe_script_writes_json_and_matches_metrics(run_dir: Path, metrics: dict) -> None:
    written = run_cli(main_linear_probe, [str(run_dir), "--features", "backbone,projector"])
    on_disk = json.loads((run_dir / "eval_linear_probe.json").read_text())
    assert on_disk["linear_probe"] == written["linear_probe"]
    # Deterministic probe (seed 0) on the same features: the numbers of metrics.json.
    assert written["linear_probe"] == metrics["linear_probe"]
    assert all("protocol" in r and r["epochs"] == 5 for r in written["linear_probe"])


@pytest.mark.parametrize(
    ("make_args", "needle"),
    [
        (lambda run, tmp: [str(tmp / "nothing")], "does not exist"),
        (lambda run, tmp: [str(tmp)], "no checkpoints/last.ckpt"),
        (lambda run, tmp: [str(run / "config.yaml")], "not a checkpoint"),
        (lambda run, tmp: [str(_garbage(tmp))], "cannot load checkpoint"),
        (lambda run, tmp: [str(run), "backbone.name=resnet18"], "cannot override"),
        (lambda run, tmp: [str(run), "eval.knn_kk=3"], "did you mean 'eval.knn_k'"),
        (lambda run, tmp: [str(run), "--features", "backbon"], "did you mean 'backbone'"),
        (lambda run, tmp: [], "pass PATH"),
        (lambda run, tmp: [str(run), "--device", "foo"], "--device foo is not usable"),
        (lambda run, tmp: [str(run), "--out", str(_garbage(tmp) / "x.json")], "cannot write"),
    ],
)
def test_bad_input_is_one_line(
    make_args, needle: str, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main_knn, make_args(run_dir, tmp_path))
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines


def test_an_unwritable_out_fails_before_the_work_and_leaves_nothing(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--out is checked before any feature is extracted, and the check leaves no empty
    JSON behind when the evaluation then stops on another error."""
    import ssl_syre.evaluation.cli as cli

    def never(*args, **kwargs):
        raise AssertionError("features extracted before --out was checked")

    monkeypatch.setattr(cli, "extract", never)
    with pytest.raises(UserError, match="cannot write"):
        cli.main_knn([str(run_dir), "--out", str(_garbage(tmp_path) / "x.json")])
    monkeypatch.undo()
    out = tmp_path / "new" / "knn.json"
    with pytest.raises(UserError, match="channel"):
        cli.main_knn([str(run_dir), "data.name=cifar10", "--out", str(out)])
    assert not out.exists()


@pytest.mark.parametrize(
    "overrides",
    [["eval.linear_epochs=0"], ["eval.linear_epochs=-1", "eval.linear_probe=false"]],
)
def test_linear_probe_without_epochs_is_one_line(
    overrides: list[str], run_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    # eval.linear_probe=false (the probe at the end of training) does not stop this script.
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main_linear_probe, [str(run_dir), *overrides])
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "'eval.linear_epochs' must be >= 1" in lines[0], lines


def test_a_fixed_size_vit_refuses_another_image_size_before_the_work(tmp_path: Path) -> None:
    """timm's PatchEmbed asserts mid-extraction that a fixed-size ViT gets its own size;
    data.image_size=48 on a 32-px export is refused up front, with the fix that applies
    at evaluation (the model cannot change)."""
    from ssl_syre.config import load_config
    from ssl_syre.data import data_info
    from ssl_syre.export import export_backbone
    from ssl_syre.methods import METHODS
    from tests.conftest import METHOD_TINY

    cfg = load_config(
        None,
        [
            *METHOD_TINY,
            "backbone.name=test_vit",
            "backbone.kwargs={dynamic_img_size: false}",
            "data.image_size=32",
        ],
    )
    export = export_backbone(METHODS[cfg.method](cfg, data_info(cfg.data)), tmp_path / "vit")
    with pytest.raises(UserError, match="drop the data.image_size override") as error:
        main_knn([str(export), "data.image_size=48", "--out", str(tmp_path)])
    assert "32-px images but data.image_size=48" in str(error.value)
    assert "backbone.kwargs" not in str(error.value)  # not a fix at evaluation


def test_bad_path_from_the_shell_is_one_line_exit_2(tmp_path: Path) -> None:
    # eval/knn.py runs from the shell above; the in-process cases cover the messages.
    done = run_script("linear_probe.py", str(tmp_path / "no_such_run"))
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "does not exist" in lines[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def _garbage(folder: Path) -> Path:
    path = folder / "broken.ckpt"
    path.write_bytes(b"\x00not a checkpoint")
    return path


def test_earlier_results_are_kept_and_the_output_says_where(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A second evaluation never replaces the first: a taken name gets -1; another protocol
    gets a name of its own; --out FILE that exists needs --force."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("eval_*.json"))
    run_cli(main_knn, [str(run)])
    first = (run / "eval_knn.json").read_bytes()
    capsys.readouterr()
    run_cli(main_knn, [str(run)])
    assert (run / "eval_knn.json").read_bytes() == first
    said = capsys.readouterr().out
    assert f"wrote {run / 'eval_knn-1.json'}" in said and "earlier evaluation" in said
    run_cli(main_knn, [str(run), "eval.knn_k=[5]"])
    assert (run / "eval_knn_eval.knn_k=5.json").is_file()
    run_cli(main_linear_probe, [str(run), "eval.linear_epochs=2"])
    assert (run / "eval_linear_probe_eval.linear_epochs=2.json").is_file()

    out = run / "mine.json"
    out.write_text("{}")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main_knn, [str(run), "--out", str(out)])
    assert exit_info.value.code == 2 and "--force" in capsys.readouterr().err
    assert out.read_text() == "{}"
    run_cli(main_knn, [str(run), "--out", str(out), "--force"])
    assert json.loads(out.read_text())["knn"]
