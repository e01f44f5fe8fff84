"""User-facing errors: one clear line, a non-zero exit, no traceback unless asked for."""

from __future__ import annotations

import difflib
import os
import re
import sys
import warnings
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


# Names other libraries and papers use for our config keys' last parts; spelling distance
# cannot find these (learning_rate is far from lr).
KEY_ALIASES = {
    "learning_rate": "lr",
    "learningrate": "lr",
    "base_lr": "lr",
    "wd": "weight_decay",
    "decay": "weight_decay",
    "bs": "batch_size",
    "batchsize": "batch_size",
    "workers": "num_workers",
    "epochs": "max_epochs",
    "num_epochs": "max_epochs",
    "steps": "max_steps",
    "max_iters": "max_steps",
    "gpus": "devices",
    "sigma": "sigma0",
    "anchor_std": "sigma0",
    "arch": "name",
    "model": "name",
    "optim": "name",
    "dataset": "name",
    "img_size": "image_size",
    "input_size": "image_size",
    "k": "knn_k",
    "temperature": "knn_t",
}


def suggest_key(key: str, valid: Iterable[str]) -> str:
    """' (did you mean 'optimizer.lr'?)' for a wrong dotted config key, or ''.

    Tried in turn: a known synonym of the last part (learning_rate -> lr) in the same
    section, then anywhere; the same last part in another section (data.lr ->
    optimizer.lr); a close spelling in the same section; a close spelling of the whole key.
    The suggestion is always the whole dotted key.
    """
    keys = [str(k) for k in valid]
    parent, _, leaf = key.rpartition(".")
    prefix = f"{parent}." if parent else ""
    lowered = leaf.lower()
    for name in (KEY_ALIASES.get(lowered), lowered):
        if name is None:
            continue
        if name != leaf and f"{prefix}{name}" in keys:
            return f" (did you mean '{prefix}{name}'?)"
        elsewhere = [k for k in keys if k.rpartition(".")[2] == name and k != key]
        if len(elsewhere) == 1:
            return f" (did you mean '{elsewhere[0]}'?)"
    siblings = [k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == parent]
    match = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.6)
    if match:
        return f" (did you mean '{prefix}{match[0]}'?)"
    return suggest(key, keys)


# Library warnings that mean a setting of the user's is off, in our words: (pattern, message).
KNOWN_WARNINGS: list[tuple[re.Pattern[str], str]] = [
    (  # lightly's CosineWarmupScheduler, stepped past the length it was built with
        re.compile(r"Current step number (?P<step>\d+) exceeds max_steps (?P<end>\d+)"),
        "step {step} is past the end of the lr schedule ({end} steps), so the lr stays at its "
        "final value: the run trains longer than trainer.max_epochs/max_steps planned; resume "
        "with the run's own trainer.max_epochs, or start a new run",
    ),
    (  # Lightning, when trainer.limit_train_batches makes an epoch shorter than the log interval
        re.compile(
            r"number of training batches \((?P<batches>\d+)\) is smaller than the logging "
            r"interval Trainer\(log_every_n_steps=(?P<every>\d+)\)"
        ),
        "an epoch has {batches} training batches, fewer than trainer.log_every_n_steps={every}, "
        "so no step of it is logged; set trainer.log_every_n_steps={batches} or lower",
    ),
]


def warning_line(message: Warning | str) -> str:
    """One line 'warning: ...' for a warning: a known library one in our words, ours as is."""
    text = " ".join(str(message).split())
    for pattern, ours in KNOWN_WARNINGS:
        found = pattern.search(text)
        if found:
            text = ours.format(**found.groupdict())
            break
    return f"warning: {text}"


def _format_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    # Python's format names the file, line number and category and repeats the source line,
    # which reads like a crash; a user needs the message. --debug keeps Python's format.
    return warning_line(message) + "\n"


def run_cli(main: Callable[[list[str]], T], argv: list[str] | None = None) -> T:
    """Run a CLI entry point, turning known errors into one line on stderr and exit code 2.

    Warnings print as one line `warning: ...` (see KNOWN_WARNINGS). Set SSL_SYRE_DEBUG=1 or
    pass --debug to see the full traceback and Python's warning format instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("SSL_SYRE_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if debug:
        return main(argv)
    # formatwarning, not showwarning: recorders (pytest.warns, catch_warnings(record=True))
    # keep receiving the warnings themselves.
    original_format = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        return _run(main, argv)
    finally:
        warnings.formatwarning = original_format


def _run(main: Callable[[list[str]], T], argv: list[str]) -> T:
    try:
        return main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except BrokenPipeError:
        # Whoever read the output left (python train.py --help | head): nothing went wrong here.
        # Point stdout at /dev/null so that Python's exit flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None
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
