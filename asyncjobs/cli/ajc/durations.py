"""Durations on the command line, written as Go writes them (``90s``, ``10m``, ``1h30m``, ``1.5h``, ``500ms``).

Upstream's ``ajc`` parses its duration flags with Go's ``time.ParseDuration``; the same strings work here, and a
plain number is taken as seconds. Days (``d``) and weeks (``w``) are accepted too, for retention periods.
"""

from __future__ import annotations

import re
from typing import Any, Final

import click

UNITS_S: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d|w)")


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration string (or a plain number of seconds).

    Raises:
        ValueError: not a duration, with what is accepted.
    """
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if seconds < 0 or seconds != seconds:
            raise ValueError(f"invalid duration {text!r}: it may not be negative")
        return seconds
    body = value[1:] if value.startswith("+") else value
    if body.startswith("-"):
        raise ValueError(f"invalid duration {text!r}: it may not be negative")
    position, total = 0, 0.0
    while position < len(body):
        match = _PART.match(body, position)
        if match is None:
            break
        total += float(match.group(1)) * UNITS_S[match.group(2)]
        position = match.end()
    if not body or position != len(body):
        raise ValueError(f"invalid duration {text!r}: use a number and a unit, like 90s, 10m, 1h30m or 2d")
    return total


class Duration(click.ParamType):  # type: ignore[type-arg]  # generic only in recent click
    """A click parameter holding a Go-style duration; its value is seconds (``float``)."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION: Final = Duration()
