"""The `--help` of train.py: usage, then every config key with its type, default and comment.

Read from the schema itself (the dataclasses of ssl_syre/config/schema.py and the comments beside
their fields), so the help cannot drift from what load_config accepts.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import textwrap
import typing
from typing import Any

from ssl_syre.config.checks import _type_name
from ssl_syre.config.schema import Config

USAGE = """\
usage: python train.py [CONFIG.yaml ...] [dotted.key=value ...] [--debug]
       ssl-syre-train  [CONFIG.yaml ...] [dotted.key=value ...] [--debug]   (pip install -e .)

Pre-train an encoder with SSL (+ SyRe), evaluate it and export its backbone for timm.
CONFIG.yaml defaults to configs/default.yaml (the quick start) where it exists; several files
merge in order; dotted overrides (data.batch_size=128, "loggers=[csv,wandb]") go on top.
resume=RUN alone continues RUN with its saved config. --debug shows tracebacks.
Evaluate, diagnose or export a run with ssl-syre-knn, ssl-syre-linear, ssl-syre-diagnose,
ssl-syre-export (each --help).

config keys (type = default):"""

_FIELD = re.compile(r"^\s+(\w+):[^=]*(?:=.*?)?(?:#\s*(.*))?$")
_COMMENT = re.compile(r"^\s+#\s?(.*)$")


def field_comments(cls: type) -> dict[str, str]:
    """The comment beside each field of a dataclass, or else the comment block above it."""
    comments: dict[str, str] = {}
    above: list[str] = []
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):  # no source (a frozen build): types and defaults only
        return comments
    for line in lines[1:]:
        comment = _COMMENT.match(line)
        if comment:
            above.append(comment.group(1).strip())
            continue
        match = _FIELD.match(line)
        if match and not line.strip().startswith(('"', "def ", "@")):
            comments[match.group(1)] = (match.group(2) or " ".join(above)).strip()
        above = []
    return comments


def _default(item: dataclasses.Field) -> Any:
    if item.default is not dataclasses.MISSING:
        return item.default
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return "???"


def _rows(cls: type, prefix: str) -> list[tuple[str, str, str]]:
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    rows = []
    for item in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[item.name]):
            continue  # a section: listed on its own
        key = f"{prefix}{item.name}"
        rows.append(
            (
                key,
                f"{_type_name(hints[item.name])} = {_default(item)!r}",
                comments.get(item.name, ""),
            )
        )
    return rows


def config_help(schema: type = Config) -> str:
    """Every key of `schema`, section by section: name, type, default and comment."""
    hints = typing.get_type_hints(schema)
    sections: list[tuple[str, str, list[tuple[str, str, str]]]] = [
        ("top level", "", _rows(schema, ""))
    ]
    for item in dataclasses.fields(schema):
        cls = hints[item.name]
        if dataclasses.is_dataclass(cls):
            doc = (inspect.getdoc(cls) or "").splitlines()[0]
            sections.append((f"{item.name}.*", doc, _rows(cls, f"{item.name}.")))
    width = max(len(key) for _, _, rows in sections for key, _, _ in rows) + 2
    lines = []
    for title, doc, rows in sections:
        lines.append("")
        lines.append(f"{title}: {doc}" if doc else f"{title}:")
        for key, typed, comment in rows:
            lines.append(f"  {key.ljust(width)}{typed}")
            if comment:
                indent = " " * (width + 4)
                lines.append(
                    textwrap.fill(comment, 100, initial_indent=indent, subsequent_indent=indent)
                )
    lines.append("")
    lines.append(
        "trainer.* keys go to lightning.pytorch.Trainer (max_epochs, devices, precision, ...)."
    )
    return "\n".join(lines)


def train_help() -> str:
    """The whole `python train.py --help` text."""
    return USAGE + "\n" + config_help()
