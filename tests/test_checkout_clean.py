"""The suite leaves the checkout as it found it: tests/conftest.py's `checkout_stays_clean`
compares `git status` before and after the session; here it is shown to fail when it should."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

LEAVES_A_FILE = """
from tests.conftest import ROOT


def test_writes_into_the_tree() -> None:
    (ROOT / "results" / "left_behind.txt").parent.mkdir()
    (ROOT / "results" / "left_behind.txt").write_text("a measurement?")
"""


def test_a_session_that_leaves_a_file_in_the_tree_fails_and_names_it(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "checkout"
    (repo / "tests").mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "conftest.py", repo / "tests" / "conftest.py")
    (repo / "tests" / "__init__.py").write_text("")
    (repo / "tests" / "test_leaves.py").write_text(LEAVES_A_FILE)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0, result.stdout[-2000:]
    assert "the tests left files in the checkout" in result.stdout
    assert "results/left_behind.txt" in result.stdout
