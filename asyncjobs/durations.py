"""Go duration strings (``time.ParseDuration``): ``90s``, ``1h30m``, ``1.5h``, ``300ms``, exact in nanoseconds.

The scheduler reads them in schedules (``@every 10m``, deadlines) and ``ajc`` in its flags, which also take the
calendar units of upstream's ``ajc``: ``d`` (24 hours), ``w`` (7 days), ``M`` (30 days) and ``y`` (365 days).
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Final

from asyncjobs.errors import ConfigurationError

NS_PER_SECOND: Final = 1_000_000_000
MAX_DURATION_NS: Final = 2**63 - 1
"""Go's ``time.Duration`` limit (about 292 years)."""
GO_UNITS_NS: Final = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 MICRO SIGN
    "μs": 1_000,  # U+03BC GREEK SMALL LETTER MU
    "ms": 1_000_000,
    "s": NS_PER_SECOND,
    "m": 60 * NS_PER_SECOND,
    "h": 3600 * NS_PER_SECOND,
}
CALENDAR_UNITS_NS: Final = {
    "d": 86400 * NS_PER_SECOND,
    "w": 7 * 86400 * NS_PER_SECOND,
    "M": 30 * 86400 * NS_PER_SECOND,
    "y": 365 * 86400 * NS_PER_SECOND,
}
_GO_PART: Final = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_CALENDAR_PART: Final = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h|d|w|M|y)")


def parse_go_duration(text: str, *, calendar_units: bool = False) -> int:
    """Nanoseconds in a Go duration string; a leading ``-`` makes it negative, as in Go.

    Args:
        text: ``90s``, ``1h30m``, ``1.5h``, ``300ms``, ``0``; a bare number other than ``0`` is refused, as Go
            refuses it.
        calendar_units: also take ``d``, ``w``, ``M`` and ``y``.

    Raises:
        ConfigurationError: not a duration (the message shows what is), or beyond Go's limit of about 292 years.
    """
    units = "h, m, s, ms, us or ns" + (", or d, w, M (30 days), y (365 days)" if calendar_units else "")
    rest = text
    sign = 1
    if rest[:1] in ("+", "-"):
        sign = -1 if rest[0] == "-" else 1
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ConfigurationError(f"invalid duration {text!r}: it is empty; use a duration such as '90s' or '1h30m'")
    part = _CALENDAR_PART if calendar_units else _GO_PART
    table = {**GO_UNITS_NS, **CALENDAR_UNITS_NS} if calendar_units else GO_UNITS_NS
    total = Fraction(0)
    position = 0
    while position < len(rest):
        match = part.match(rest, position)
        if match is None:
            raise ConfigurationError(
                f"invalid duration {text!r}: use numbers with units {units}, such as '90s', '1h30m' or '1.5h'"
            )
        number, unit = match.groups()
        total += Fraction(number.removesuffix(".")) * table[unit]
        position = match.end()
    ns = int(total)
    if ns > MAX_DURATION_NS:
        raise ConfigurationError(f"invalid duration {text!r}: it is over Go's limit of about 292 years")
    return sign * ns
