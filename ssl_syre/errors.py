"""User-facing errors: one clear line, a non-zero exit, no traceback unless asked for."""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A problem with the user's input (config, data, checkpoint) that they can fix.

    The message names the problem and the fix in one line; the CLIs print it without a
    traceback and exit with status 2.
    """


def suggest(word: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice, or '' when none is close."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def check_choice(key: str, value: str, choices: Iterable[str]) -> None:
    """Raise a UserError naming `key`, the closest choice and all choices if `value` is not one."""
    choices = list(choices)
    if value not in choices:
        raise UserError(
            f"unknown {key} '{value}'{suggest(value, choices)}; choose one of: {', '.join(sorted(choices))}"
        )


def run_cli(main: Callable[[list[str]], T], argv: list[str] | None = None) -> T:
    """Run a CLI entry point, turning known errors into one line on stderr and exit code 2.

    Set SSL_SYRE_DEBUG=1 or pass --debug to see the full traceback instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("SSL_SYRE_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if debug:
        return main(argv)
    try:
        return main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(
            "interrupted: the last checkpoint is kept; resume with resume=<run dir>",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    except OSError as error:
        if error.errno == 28:  # ENOSPC
            print(
                f"error: no space left on device ({error.filename or 'disk'}); free space and "
                "resume with resume=<run dir>: the previous checkpoint is intact",
                file=sys.stderr,
            )
            raise SystemExit(2) from None
        raise
