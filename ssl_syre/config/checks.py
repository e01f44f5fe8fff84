"""Config value checks below the schema: `ranged` fields and Lightning Trainer argument types."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import field
from typing import Any

from ssl_syre.errors import UserError


def ranged(default: Any, interval: str) -> Any:
    """A dataclass field whose valid values lie in `interval`, written as in mathematics:
    "[0, 1)", "(0, inf)", "[1, inf)". `check_ranges` refuses values outside it (None passes).

    Example:
        >>> @dataclass
        ... class Kwargs:
        ...     temperature: float = ranged(0.5, "(0, inf)")
    """
    _parse_interval(interval)  # a typo in the interval fails at import, not at a user's run
    return field(default=default, metadata={"range": interval})


def _parse_interval(interval: str) -> tuple[float, float, bool, bool]:
    """(low, high, low is closed, high is closed) of "[0, 1)"-style text."""
    text = interval.strip()
    low, high = (float(part) for part in text[1:-1].split(","))
    if text[0] not in "[(" or text[-1] not in "])" or not low <= high:
        raise ValueError(f"not an interval: {interval!r}")
    return low, high, text[0] == "[", text[-1] == "]"


def check_ranges(values: Any, schema: type, prefix: str, owner: str = "") -> None:
    """Refuse a value outside its field's `ranged` interval: one line naming key and range.

    Args:
        values: The settings (a DictConfig or the dataclass instance).
        schema: Their dataclass, whose fields carry the intervals.
        prefix: The config key above them ("optimizer", "method_kwargs").
        owner: Said after the key ("of simclr"), for settings that belong to one method.

    Raises:
        UserError: ``config key 'optimizer.momentum' must be in [0, 1), got 1.0``.
    """
    for item in dataclasses.fields(schema):
        interval = item.metadata.get("range")
        value = getattr(values, item.name, None)
        if interval is None or value is None:
            continue
        low, high, closed_low, closed_high = _parse_interval(interval)
        above = value >= low if closed_low else value > low
        below = value <= high if closed_high else value < high
        if not (above and below):  # NaN fails both
            where = f" {owner}" if owner else ""
            raise UserError(
                f"config key '{prefix}.{item.name}'{where} must be in {interval}, got {value}"
            )


def _matches(value: Any, annotation: Any) -> bool | None:
    """Whether a config value fits a type annotation; None when the annotation is a class no
    YAML value can be (an Accelerator, a Logger), so that such arms neither accept nor refuse."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        verdicts = [_matches(value, arm) for arm in typing.get_args(annotation)]
        if any(verdicts):
            return True
        return False if any(v is False for v in verdicts) else None
    if origin is typing.Literal:
        # 16 == 16.0 == True in Python: compare types too, so that precision=true is refused.
        return any(type(value) is type(c) and value == c for c in typing.get_args(annotation))
    if origin in (list, dict) or annotation in (list, dict):
        if not isinstance(value, list if (origin or annotation) is list else dict):
            return False
        args = typing.get_args(annotation)
        items = value if isinstance(value, list) else list(value.values())
        return not args or all(_matches(item, args[-1]) is not False for item in items)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    return None


def _type_name(annotation: Any) -> str:
    """A type annotation in words: 'int or null', "one of 'a', 'b'"."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        literals = [
            a for a in typing.get_args(annotation) if typing.get_origin(a) is typing.Literal
        ]
        others = [a for a in typing.get_args(annotation) if a not in literals]
        values = [repr(v) for a in literals for v in typing.get_args(a)]
        names = [f"one of {', '.join(values)}"] if values else []
        return " or ".join(names + [_type_name(a) for a in others])
    if origin is typing.Literal:
        return f"one of {', '.join(repr(v) for v in typing.get_args(annotation))}"
    if origin is not None:
        args = typing.get_args(annotation)
        return f"{origin.__name__} of {_type_name(args[-1])}" if args else origin.__name__
    return "null" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def check_trainer_types(trainer: dict[str, Any], trainer_cls: type) -> None:
    """Check each `trainer.*` value against the type Lightning's Trainer declares for it.

    Lightning checks some values itself (when the Trainer is built) but takes others, such as
    `max_epochs=abc`, and fails with a traceback in the middle of training.

    Raises:
        UserError: naming the key, the value and the expected type.
    """
    hints = typing.get_type_hints(trainer_cls.__init__)
    for key, value in trainer.items():
        annotation = hints.get(key)
        if annotation is not None and _matches(value, annotation) is False:
            raise UserError(
                f"bad value for config key 'trainer.{key}': {value!r}; lightning.pytorch.Trainer "
                f"takes {_type_name(annotation)}"
            )
    if "accumulate_grad_batches" in trainer and not trainer["accumulate_grad_batches"] >= 1:
        raise UserError(
            "config key 'trainer.accumulate_grad_batches' must be >= 1, got "
            f"{trainer['accumulate_grad_batches']}"
        )
