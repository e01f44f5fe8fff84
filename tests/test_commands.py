"""The installed commands of pyproject.toml: each names a function of ssl_syre.commands that
runs its script's job; train.py --help lists the config keys; diagnose fails gracefully."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from ssl_syre import commands
from tests.conftest import ROOT

SCRIPTS = {
    "ssl-syre-train": "train",
    "ssl-syre-knn": "knn",
    "ssl-syre-linear": "linear_probe",
    "ssl-syre-export": "export",
    "ssl-syre-diagnose": "diagnose",
}


def test_pyproject_names_the_command_functions() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == set(SCRIPTS)
    for name, target in scripts.items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), name
        assert function == SCRIPTS[name]


def _run(monkeypatch: pytest.MonkeyPatch, function: str, *argv: str) -> int:
    monkeypatch.setattr(sys, "argv", [function, *argv])
    try:
        getattr(commands, function)()
    except SystemExit as exit:
        return int(exit.code or 0)
    return 0  # a console script's exit status when its function returns None


def test_train_help_exits_zero_with_every_section(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path
) -> None:
    monkeypatch.chdir(tmp_path)
    for flag in ("--help", "-h"):
        assert _run(monkeypatch, "train", flag) == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: python train.py")
        for section in ("backbone.*", "data.*", "syre.*", "eval.*", "export.*"):
            assert f"\n{section}:" in out
    assert not (tmp_path / "runs").exists()  # help trains nothing


@pytest.mark.parametrize("function", ["knn", "linear_probe"])
def test_eval_commands_give_one_line_errors(
    function: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path
) -> None:
    assert _run(monkeypatch, function, str(tmp_path / "no_such_run")) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and "does not exist" in line


def test_export_command_help_lists_the_hub_push(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    assert _run(monkeypatch, "export", "--help") == 0
    assert "--push-to-hub USER/NAME" in capsys.readouterr().out


def test_diagnose_without_the_module_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "ssl_syre.diagnose", None)  # as in a version without it
    assert _run(monkeypatch, "diagnose", "runs/x") == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: this ssl_syre has no diagnostics")


def test_train_py_help_in_a_shell() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "data.batch_size" in done.stdout and "int = 256" in done.stdout
