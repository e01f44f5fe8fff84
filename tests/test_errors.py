"""The CLI wrapper: one-line errors and one-line warnings, library warnings in our words."""

from __future__ import annotations

import sys
import warnings

import pytest

from ssl_syre.config import load_config
from ssl_syre.errors import run_cli, warning_line
from tests.conftest import TINY


def test_known_library_warnings_become_our_message() -> None:
    lightly = warning_line(RuntimeWarning("Current step number 624 exceeds max_steps 3."))
    assert lightly.startswith("warning: step 624 is past the end of the lr schedule (3 steps)")
    assert "trainer.max_epochs" in lightly
    lightning = warning_line(
        "The number of training batches (4) is smaller than the logging interval "
        "Trainer(log_every_n_steps=44). Set a lower value for log_every_n_steps if you want "
        "to see logs for the training epoch."
    )
    assert "set trainer.log_every_n_steps=4 or lower" in lightning
    ours = warning_line(UserWarning("line one\n  line two"))
    assert ours == "warning: line one line two"


def test_warnings_print_as_one_line_without_the_source(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Switching methods on the command line warns about the other method's setting: one
    `warning:` line on stderr, not Python's file:line: UserWarning plus the source line."""

    def main(argv: list[str]) -> None:
        load_config(None, argv)
        warnings.warn("Current step number 7 exceeds max_steps 6.", RuntimeWarning, stacklevel=1)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        # Print as Python does outside pytest, which records warnings instead.
        monkeypatch.setattr(
            warnings,
            "_showwarnmsg_impl",
            lambda msg: sys.stderr.write(warnings._formatwarnmsg(msg)),
        )
        capsys.readouterr()
        run_cli(main, [*TINY, "method=byol", "method_kwargs.temperature=0.5"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 2, lines
    assert lines[0] == (
        "warning: method_kwargs.temperature is not a setting of byol (another method's); ignored"
    )
    assert lines[1].startswith("warning: step 7 is past the end of the lr schedule (6 steps)")


@pytest.mark.slow
def test_output_into_a_closed_pipe_is_no_error() -> None:
    """`python train.py --help | head -1`: the reader leaves early; exit 0, no traceback."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    read_end, write_end = os.pipe()
    os.close(read_end)  # every write of the child now fails with EPIPE
    try:
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve().parent.parent / "train.py"), "--help"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
