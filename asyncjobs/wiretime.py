"""Times and durations exactly as the Go implementation puts them on the wire.

Go's ``time.Time`` carries nanoseconds and marshals to RFC 3339 with up to nine fraction digits; Python's
``datetime`` stops at microseconds. Task signatures cover the creation time in Unix nanoseconds, so a task read
from the wire must keep every digit: wire times are therefore :class:`WireTime` values (integer Unix
nanoseconds plus the UTC offset they were written with), and converted to ``datetime`` only for display.

Go ``time.Duration`` values travel as integer nanoseconds; the public API takes seconds (``float`` or
``timedelta``) and :func:`to_ns` converts them.
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Final, NamedTuple

from asyncjobs.errors import ConfigurationError

__all__ = ["GO_ZERO_TIME", "NS_PER_SECOND", "WireTime", "format_time", "ns_to_seconds", "parse_time", "to_ns"]

NS_PER_SECOND: Final = 1_000_000_000
_SECONDS_PER_DAY: Final = 86_400
_NS_PER_MICROSECOND: Final = 1_000
_FRACTION_DIGITS: Final = 9
_UNIX_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_UNIX_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_MAX_OFFSET_S: Final = _SECONDS_PER_DAY - 1

# RFC 3339 as Go's time.Parse reads it: any number of fraction digits, a mandatory zone. re.ASCII keeps \d from
# matching non-ASCII digits that Go would refuse. Lower-case "t" and "z" are allowed by RFC 3339; reading them
# is harmless since we always write upper case.
_TIME_RE: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:[Zz]|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


class WireTime(NamedTuple):
    """A point in time with nanosecond precision and the UTC offset it is displayed in.

    Attributes:
        unix_ns: nanoseconds since 1970-01-01T00:00:00Z.
        offset_s: the UTC offset in seconds (east positive) used when formatting; 0 formats as ``Z``.
    """

    unix_ns: int
    offset_s: int = 0

    @classmethod
    def now(cls) -> WireTime:
        """Return the current time in UTC."""
        return cls(time.time_ns())

    @classmethod
    def from_datetime(cls, dt: datetime) -> WireTime:
        """Convert an aware ``datetime`` exactly, keeping its UTC offset.

        Raises:
            ConfigurationError: ``dt`` is naive.
        """
        offset = dt.utcoffset()
        if offset is None:
            raise ConfigurationError(
                f"the time {dt.isoformat()} has no timezone: pass an aware datetime, e.g. datetime.now(UTC)"
            )
        delta = dt - _UNIX_EPOCH
        unix_ns = (delta.days * _SECONDS_PER_DAY + delta.seconds) * NS_PER_SECOND + delta.microseconds * 1000
        return cls(unix_ns, offset.days * _SECONDS_PER_DAY + offset.seconds)

    def to_datetime(self) -> datetime:
        """Return an aware ``datetime`` in this time's offset (UTC when 0), truncated to microseconds.

        Raises:
            ConfigurationError: the time or offset is outside what ``datetime`` can represent.
        """
        seconds, rest_ns = divmod(self.unix_ns, NS_PER_SECOND)
        try:
            utc = _UNIX_EPOCH + timedelta(seconds=seconds, microseconds=rest_ns // _NS_PER_MICROSECOND)
            return utc if self.offset_s == 0 else utc.astimezone(_zone(self.offset_s))
        except (OverflowError, ValueError) as exc:
            raise ConfigurationError(f"{self!r} cannot be represented as a datetime: {exc}") from exc


GO_ZERO_TIME: Final = WireTime((date(1, 1, 1).toordinal() - _UNIX_EPOCH_ORDINAL) * _SECONDS_PER_DAY * NS_PER_SECOND)
"""Go's zero ``time.Time``, 0001-01-01T00:00:00Z."""


@lru_cache(maxsize=64)
def _zone(offset_s: int) -> timezone:
    return UTC if offset_s == 0 else timezone(timedelta(seconds=offset_s))


@lru_cache(maxsize=4096)
def _format_second(local_s: int) -> str:
    # Several times per task share the same second (created, tried, result), so the date arithmetic is cached.
    days, second_of_day = divmod(local_s, _SECONDS_PER_DAY)
    ordinal = days + _UNIX_EPOCH_ORDINAL
    if not 1 <= ordinal <= date.max.toordinal():
        raise ConfigurationError(f"cannot format Unix second {local_s}: the year is outside 0001 to 9999")
    day = date.fromordinal(ordinal)
    hours, rest = divmod(second_of_day, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{day.year:04d}-{day.month:02d}-{day.day:02d}T{hours:02d}:{minutes:02d}:{seconds:02d}"


@lru_cache(maxsize=64)
def _format_offset(offset_s: int) -> str:
    if offset_s == 0:
        return "Z"
    if abs(offset_s) > _MAX_OFFSET_S:
        raise ConfigurationError(f"invalid UTC offset {offset_s}s: it must be less than a day")
    # Go prints the zone as ±hh:mm and drops any seconds of the offset.
    sign = "-" if offset_s < 0 else "+"
    hours, minutes = divmod(abs(offset_s) // 60, 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


def format_time(t: WireTime) -> str:
    """Format a time as Go's ``time.RFC3339Nano``, the way Go's JSON encoder writes it.

    The nine-digit fraction loses its trailing zeros (and the dot when nothing is left); the zone is ``Z`` for
    a zero offset and ``±hh:mm`` otherwise.

    Raises:
        ConfigurationError: the year is outside 0001 to 9999 or the offset is a day or more.
    """
    unix_ns, offset_s = t
    local_s, fraction = divmod(unix_ns + offset_s * NS_PER_SECOND, NS_PER_SECOND)
    if fraction:
        return f"{_format_second(local_s)}.{fraction:09d}".rstrip("0") + _format_offset(offset_s)
    return _format_second(local_s) + _format_offset(offset_s)


def parse_time(s: str) -> WireTime:
    """Parse an RFC 3339 time as Go's JSON decoder does, keeping every nanosecond digit.

    Fractions of any length are accepted; digits past the ninth are dropped, as Go does. A zone (``Z`` or
    ``±hh:mm``) is required.

    Raises:
        ConfigurationError: ``s`` is not an RFC 3339 time with a zone, or a field is out of range.
    """
    # Fast path for the UTC times we and Go write, whose date and time to the second were seen valid before (tasks
    # created in the same second share them): only the fraction is left to read.
    local_s = _SECONDS_SEEN.get(s[:19])
    if local_s is not None:
        tail = s[19:]
        if tail == "Z":
            return WireTime(local_s * NS_PER_SECOND, 0)
        fraction = tail[1:-1]
        if tail[:1] == "." and tail[-1:] == "Z" and fraction.isascii() and fraction.isdigit():
            return WireTime(local_s * NS_PER_SECOND + int(fraction[:_FRACTION_DIGITS].ljust(_FRACTION_DIGITS, "0")), 0)
    parsed = _parse_time(s)
    if parsed.offset_s == 0 and s[19:20] in (".", "Z") and s[10:11] == "T":
        if len(_SECONDS_SEEN) >= _SECONDS_SEEN_MAX:
            _SECONDS_SEEN.clear()
        _SECONDS_SEEN[s[:19]] = parsed.unix_ns // NS_PER_SECOND
    return parsed


_SECONDS_SEEN: dict[str, int] = {}
"""``YYYY-MM-DDTHH:MM:SS`` prefixes of valid UTC times parsed before, with their Unix seconds."""
_SECONDS_SEEN_MAX: Final = 4096


def _parse_time(s: str) -> WireTime:
    match = _TIME_RE.fullmatch(s)
    if match is None:
        raise ConfigurationError(f"invalid time {s!r}: expected RFC 3339 like 2026-07-22T09:00:00.5Z")
    year, month, day, hour, minute, second, fraction, sign, zone_h, zone_m = match.groups()
    hours, minutes, seconds = int(hour), int(minute), int(second)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise ConfigurationError(f"invalid time {s!r}: the time of day is out of range")
    try:
        ordinal = date(int(year), int(month), int(day)).toordinal()
    except ValueError as exc:
        raise ConfigurationError(f"invalid time {s!r}: {exc}") from exc
    offset_s = 0
    if sign is not None:
        offset_h, offset_m = int(zone_h), int(zone_m)
        if offset_h > 23 or offset_m > 59:
            raise ConfigurationError(f"invalid time {s!r}: the UTC offset is out of range")
        offset_s = offset_h * 3600 + offset_m * 60
        if sign == "-":
            offset_s = -offset_s
    local_s = (ordinal - _UNIX_EPOCH_ORDINAL) * _SECONDS_PER_DAY + hours * 3600 + minutes * 60 + seconds
    nanos = int(fraction[:_FRACTION_DIGITS].ljust(_FRACTION_DIGITS, "0")) if fraction else 0
    return WireTime((local_s - offset_s) * NS_PER_SECOND + nanos, offset_s)


def to_ns(value: float | timedelta | None, *, name: str) -> int:
    """Convert a public-API duration (seconds, or a ``timedelta``) to integer nanoseconds.

    Args:
        value: seconds as ``int``/``float``, a ``timedelta``, or ``None`` for "not set".
        name: the option's name, used in error messages.

    Returns:
        The duration in nanoseconds; 0 for ``None``.

    Raises:
        ConfigurationError: the value is negative, not finite, or of another type.
    """
    if value is None:
        return 0
    if isinstance(value, timedelta):
        # Integer arithmetic: a float of total_seconds() would lose nanoseconds on long durations.
        ns = (value.days * _SECONDS_PER_DAY + value.seconds) * NS_PER_SECOND + value.microseconds * 1000
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be seconds as a float or a timedelta, not {type(value).__name__}")
    elif isinstance(value, int):
        ns = value * NS_PER_SECOND
    elif math.isfinite(value):
        ns = round(value * NS_PER_SECOND)
    else:
        raise ConfigurationError(f"{name} must be a finite number of seconds, got {value!r}")
    if ns < 0:
        raise ConfigurationError(f"{name} must not be negative, got {value!r}")
    return ns


def ns_to_seconds(ns: int) -> float:
    """Convert integer nanoseconds to seconds."""
    return ns / NS_PER_SECOND
