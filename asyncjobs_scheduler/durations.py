"""Go duration strings (``time.ParseDuration``): ``90s``, ``1h30m``, ``1.5h``, ``300ms``, exact in nanoseconds."""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Final

from asyncjobs_scheduler.errors import InvalidSchedule

__all__ = ["parse_go_duration"]

_NS_PER_SECOND: Final = 1_000_000_000
_MAX_DURATION_NS: Final = 2**63 - 1
_GO_UNITS_NS: Final = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 MICRO SIGN
    "μs": 1_000,  # U+03BC GREEK SMALL LETTER MU
    "ms": 1_000_000,
    "s": _NS_PER_SECOND,
    "m": 60 * _NS_PER_SECOND,
    "h": 3600 * _NS_PER_SECOND,
}
_DURATION_PART_RE: Final = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)", re.ASCII)


def parse_go_duration(text: str) -> int:
    """Parse a Go ``time.ParseDuration`` string (``90s``, ``1h30m``, ``1.5h``, ``300ms``) into nanoseconds.

    Raises:
        InvalidSchedule: the text is not a Go duration.
    """
    rest = text
    sign = 1
    if rest[:1] in ("+", "-"):
        sign = -1 if rest[0] == "-" else 1
        rest = rest[1:]
    if rest == "0":
        return 0
    total = Fraction(0)
    position = 0
    while position < len(rest):
        match = _DURATION_PART_RE.match(rest, position)
        if match is None:
            raise InvalidSchedule(
                f"invalid duration {text!r}: use a Go duration, numbers with units h, m, s, ms, us or ns, "
                "such as '90s', '1h30m' or '1.5h'"
            )
        number, unit = match.groups()
        total += Fraction(number if not number.endswith(".") else number[:-1]) * _GO_UNITS_NS[unit]
        position = match.end()
    if position == 0:
        raise InvalidSchedule(f"invalid duration {text!r}: it is empty; use a Go duration such as '90s' or '1h30m'")
    ns = int(total)
    if ns > _MAX_DURATION_NS:
        raise InvalidSchedule(f"invalid duration {text!r}: it is over Go's limit of about 292 years")
    return sign * ns
