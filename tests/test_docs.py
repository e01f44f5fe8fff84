"""What the README and docs quote is what the program accepts and prints: every `python train.py`
command they show loads as a config, every `$ command` block prints the lines quoted under it,
and every quoted `error: ...` message is one the package can print."""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_syre.config import DEFAULT_CONFIG, load_config

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Words a reader replaces (RUN, PATH, USER/NAME, ...): commands holding one are templates.
PLACEHOLDER = re.compile(r"\.\.\.|…|\b[A-Z][A-Z_]{1,}\b|\bM\b|<[^>]+>")


def _code(text: str) -> list[str]:
    """Lines of fenced code blocks and inline code spans (which may wrap across lines)."""
    lines = []
    for block in re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S):
        lines += block.replace("\\\n", " ").splitlines()
    without_blocks = re.sub(r"```.*?```", "", text, flags=re.S)
    lines += [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", without_blocks)]
    return lines


def _train_commands() -> list[tuple[str, list[str]]]:
    """(page: command, arguments) of every `python train.py ...` the pages show."""
    found = []
    for page in PAGES:
        for line in _code(page.read_text()):
            if "python train.py" not in line or line.lstrip().startswith("$ "):
                continue
            command = line[line.index("python train.py") :]
            command = re.split(r"\s#|\||&&|;|\s2?>|\s\(", command)[0].strip()
            args = shlex.split(command)[2:]
            found.append((f"{page.name}: {command}", args))
    return found


TRAIN_COMMANDS = _train_commands()


def test_the_docs_show_train_commands() -> None:
    assert len(TRAIN_COMMANDS) >= 20
    assert any("configs/data/cifar10.yaml" in name for name, _ in TRAIN_COMMANDS)


@pytest.mark.parametrize(
    ("name", "args"), TRAIN_COMMANDS, ids=[name[:90] for name, _ in TRAIN_COMMANDS]
)
def test_every_documented_train_command_loads(name: str, args: list[str]) -> None:
    if any(a in ("-h", "--help") for a in args):
        return
    templated = [a for a in args if PLACEHOLDER.search(a)]
    args = [a for a in args if a not in templated and not a.startswith("resume=")]
    paths = [str(ROOT / a) for a in args if "=" not in a] or [str(DEFAULT_CONFIG)]
    if any(not Path(p).is_file() for p in paths):
        assert templated, f"{name}: no such config file"
        return  # a template's placeholder path (RUN/config.yaml)
    overrides = [a for a in args if "=" in a]
    load_config(paths, overrides)  # raises UserError on an unknown key or a bad value


def _dollar_blocks() -> list[tuple[str, str, list[str]]]:
    """(page, command, quoted output lines) of every `$ python train.py ...` in a code block."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```[^\n]*\n(.*?)```", page.read_text(), flags=re.S):
            lines = block.splitlines()
            for i, line in enumerate(lines):
                if line.startswith("$ python train.py"):
                    output = []
                    for after in lines[i + 1 :]:
                        if after.startswith("$ ") or not after.strip():
                            break
                        output.append(after)
                    found.append((page.name, line[2:], output))
    return found


DOLLAR_BLOCKS = _dollar_blocks()


def test_the_docs_quote_program_output() -> None:
    assert DOLLAR_BLOCKS, "no `$ python train.py` example left in the README or docs"


def _matches(quoted: str, printed: str) -> bool:
    """A quoted line matches a printed one; '...' in the quote stands for any text."""
    pattern = ".*".join(re.escape(part) for part in re.split(r"\s?\.\.\.", quoted))
    return re.fullmatch(pattern, printed) is not None


@pytest.mark.parametrize(
    ("page", "command", "output"), DOLLAR_BLOCKS, ids=[c for _, c, _ in DOLLAR_BLOCKS]
)
def test_every_quoted_command_prints_what_the_docs_say(
    page: str, command: str, output: list[str]
) -> None:
    args = shlex.split(command)[2:]
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    printed = (done.stdout + done.stderr).splitlines()
    for quoted in output:
        assert any(_matches(quoted, line) for line in printed), (
            f"{page}: `{command}` no longer prints {quoted!r}; it prints:\n" + "\n".join(printed)
        )


def _message_templates() -> list[list[str | None]]:
    """Every string the package can print, as pieces: literal text, or None for an f-string
    field (Python joins adjacent literals into one node, so a message split over lines is one)."""
    templates = []
    for path in (ROOT / "ssl_syre").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.JoinedStr):
                pieces = [v.value if isinstance(v, ast.Constant) else None for v in node.values]
                templates.append(pieces)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                templates.append([node.value])
    return templates


def _starts_an_instance(quote: str, pieces: list[str | None]) -> bool:
    """True when `quote` is the beginning of some text that `pieces` can print."""
    pattern = ""
    for piece in pieces:
        if piece is None:
            pattern += ".*?"
            continue
        for cut in range(len(piece), 0, -1):  # the quote may end inside this piece
            if re.fullmatch(pattern + re.escape(piece[:cut]), quote, flags=re.S):
                return True
        pattern += re.escape(piece)
    return re.fullmatch(pattern, quote, flags=re.S) is not None


def _quoted_errors() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for span in re.findall(r"`(error: [^`]+)`", text):
            found.append((page.name, " ".join(span.split())))
    return found


QUOTED_ERRORS = _quoted_errors()


@pytest.mark.parametrize(("page", "quoted"), QUOTED_ERRORS, ids=[q[:60] for _, q in QUOTED_ERRORS])
def test_every_quoted_error_message_is_one_the_package_prints(page: str, quoted: str) -> None:
    """The quote, up to where it elides ('...'), is how one of the package's messages begins."""
    literal = re.split(r"\s?(?:\.\.\.|…)", quoted.removeprefix("error: "))[0].strip()
    templates = _message_templates()
    assert any(_starts_an_instance(literal, t) for t in templates if t and t[0] is not None), (
        f"{page} quotes {quoted!r}; no message of the package begins so"
    )
