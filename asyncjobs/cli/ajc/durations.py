"""Durations on the command line as upstream's ``ajc`` takes and shows them.

Flags take Go's units (``90s``, ``10m``, ``1h30m``, ``1.5h``, ``500ms``) plus ``d`` (24 hours), ``w`` (7 days),
``M`` (30 days) and ``y`` (365 days), as in ``400d`` or ``1y``; a bare number other than ``0`` is refused, as Go
refuses it. Views print durations as upstream's do: ``2d2h0m0s``, ``10m0s``, ``45.00s``, ``forever``.
"""

from __future__ import annotations

from typing import Any, Final

import click

from asyncjobs.durations import NS_PER_SECOND, parse_go_duration
from asyncjobs.errors import ConfigurationError

DURATION_HELP: Final = "a duration such as 90s, 10m, 1h30m or 2d (units ns, us, ms, s, m, h, d, w, M, y)"


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``90s``, ``1h30m``, ``1.5h`` or ``2d``; ``0`` is zero.

    Raises:
        ValueError: the text is not such a duration, or it is negative.
    """
    rest = text.strip()
    if rest.startswith("-"):
        raise ValueError(f"duration {text!r} is negative: use a positive duration such as 90s, 10m or 1h")
    try:
        return parse_go_duration(rest, calendar_units=True) / NS_PER_SECOND
    except ConfigurationError:
        raise ValueError(f"invalid duration {text!r}: use {DURATION_HELP}") from None


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
