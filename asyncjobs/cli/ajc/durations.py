"""Durations on the command line as upstream's ``ajc`` takes and shows them.

Flags take Go's units (``90s``, ``10m``, ``1h30m``, ``1.5h``, ``500ms``) plus ``d`` (24 hours), ``w`` (7 days),
``M`` (30 days) and ``y`` (365 days), as in ``400d`` or ``1y``; a bare number other than ``0`` is refused, as Go
refuses it. Views print durations as upstream's do: ``2d2h0m0s``, ``10m0s``, ``45.00s``, ``forever``.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any, Final

import click

NS_PER_SECOND: Final = 1_000_000_000

_UNITS_NS: Final = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 MICRO SIGN
    "μs": 1_000,  # U+03BC GREEK SMALL LETTER MU
    "ms": 1_000_000,
    "s": NS_PER_SECOND,
    "m": 60 * NS_PER_SECOND,
    "h": 3600 * NS_PER_SECOND,
    "d": 86400 * NS_PER_SECOND,
    "w": 7 * 86400 * NS_PER_SECOND,
    "M": 30 * 86400 * NS_PER_SECOND,
    "y": 365 * 86400 * NS_PER_SECOND,
}
_PART: Final = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h|d|w|M|y)")
DURATION_HELP: Final = "a duration such as 90s, 10m, 1h30m or 2d (units ns, us, ms, s, m, h, d, w, M, y)"


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``90s``, ``1h30m``, ``1.5h`` or ``2d``; ``0`` is zero.

    Raises:
        ValueError: the text is not such a duration, or it is negative.
    """
    rest = text.strip()
    if rest.startswith("-"):
        raise ValueError(f"duration {text!r} is negative: use a positive duration such as 90s, 10m or 1h")
    rest = rest.removeprefix("+")
    if rest == "0":
        return 0.0
    total = Fraction(0)
    position = 0
    while position < len(rest):
        match = _PART.match(rest, position)
        if match is None:
            break
        number, unit = match.groups()
        total += Fraction(number.rstrip(".") or "0") * _UNITS_NS[unit]
        position = match.end()
    if not rest or position != len(rest):
        raise ValueError(f"invalid duration {text!r}: use {DURATION_HELP}")
    return float(total / NS_PER_SECOND)


class DurationType(click.ParamType):  # type: ignore[type-arg]  # generic in recent click only
    """A click parameter holding :func:`parse_duration`'s seconds; a bad value is a usage error (exit 2)."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION: Final = DurationType()


def humanize_duration(seconds: float | None) -> str:
    """A duration as upstream's ``ajc`` writes one: ``forever`` (none or 0), ``1y35d0h0m0s``, ``2h0m0s``, ``0.31s``."""
    if seconds is None or seconds == 0:
        return "forever"
    whole = int(seconds)  # Go truncates toward zero
    minutes, hours, days = whole // 60, whole // 3600, whole // 86400
    years = days // 365
    if years > 0:
        return f"{years}y{days % 365}d{hours % 24}h{minutes % 60}m{whole % 60}s"
    if days > 0:
        return f"{days}d{hours % 24}h{minutes % 60}m{whole % 60}s"
    if hours > 0:
        return f"{hours}h{minutes % 60}m{whole % 60}s"
    if minutes > 0:
        return f"{minutes}m{whole % 60}s"
    return f"{seconds:.2f}s"
