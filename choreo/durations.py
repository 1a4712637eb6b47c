"""Durations written as strings in the config: "500ms", "30s", "5m", "2h", "7d"."""

from __future__ import annotations

import re
from collections.abc import Callable

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration(text: object) -> float:
    """Return the duration in seconds; raise ValueError with the accepted forms."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise ValueError(f"expected a duration string like \"30s\" or \"5m\", got {text!r}")
    found = _DURATION.match(text)
    if not found:
        raise ValueError(
            f"{text!r} is not a duration: write a number and a unit, one of ms, s, m, h, d"
        )
    return float(found.group(1)) * _UNITS[found.group(2)]


def positive_duration(value: object, field: str, fail: Callable[[str, str, str], None]
                      ) -> float | None:
    """A config field's duration in seconds, or None after reporting why it is not one."""
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        fail("-", field, str(exc))
        return None
    if seconds <= 0:
        fail("-", field, "must be longer than zero")
        return None
    return seconds


def format_duration(seconds: float) -> str:
    """Render seconds in the largest unit that divides them exactly."""
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"
