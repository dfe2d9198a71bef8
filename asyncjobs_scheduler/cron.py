"""Cron specs as Go's scheduler reads them (robfig/cron ``ParseStandard``), and their due instants.

A spec is five fields (minute, hour, day of month, month, day of week) with ranges, lists, steps and month and
weekday names; a descriptor (``@yearly``, ``@annually``, ``@monthly``, ``@weekly``, ``@daily``, ``@midnight``,
``@hourly``); or ``@every <Go duration>``. Any of them may follow a ``CRON_TZ=<zone>`` or ``TZ=<zone>`` prefix.

Due instants are computed here rather than by croniter, because the rules go beyond it: Go's day-of-month and
day-of-week rule, ``@every`` anchored on the schedule's creation, and the DST policies:

- A spec whose hour field is ``*`` or a step fires at every real instant whose local time matches: a local time a
  DST change skips never happens, one it repeats happens twice, so an hourly job neither skips nor doubles.
- A spec naming fixed hours applies ``dst_gap`` to a skipped local time (``shift``: the first valid instant after
  the gap; ``skip``: not that day) and ``dst_overlap`` to a repeated one (``once``: the first; ``twice``: both).

Every instant returned is an aware ``datetime`` in UTC.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from asyncjobs_scheduler.constants import CRON_TZ_PREFIX, TZ_PREFIX, DstGap, DstOverlap
from asyncjobs_scheduler.durations import parse_go_duration
from asyncjobs_scheduler.errors import InvalidSchedule

__all__ = ["CronSpec", "load_zone", "parse_go_duration", "parse_spec"]

_NS_PER_SECOND: Final = 1_000_000_000
_NUMBER_RE: Final = re.compile(r"\d+", re.ASCII)

_MONTH_NAMES: Final = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1
    )
}
_WEEKDAY_NAMES: Final = {name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_DAYS_IN_MONTH: Final = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February at its longest


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None
    hint: str


_MINUTE: Final = _Field("minute", 0, 59, None, "0-59")
_HOUR: Final = _Field("hour", 0, 23, None, "0-23")
_DOM: Final = _Field("day of month", 1, 31, None, "1-31")
_MONTH: Final = _Field("month", 1, 12, _MONTH_NAMES, "1-12 or JAN-DEC")
_DOW: Final = _Field("day of week", 0, 6, _WEEKDAY_NAMES, "0-6 or SUN-SAT, 0 being Sunday")
_FIELDS: Final = (_MINUTE, _HOUR, _DOM, _MONTH, _DOW)

# (hour, minute, day of month, month, day of week) of each descriptor; None is "*".
_DESCRIPTORS: Final[dict[str, tuple[int | None, int, int | None, int | None, int | None]]] = {
    "@yearly": (0, 0, 1, 1, None),
    "@annually": (0, 0, 1, 1, None),
    "@monthly": (0, 0, 1, None, None),
    "@weekly": (0, 0, None, None, 0),
    "@daily": (0, 0, None, None, None),
    "@midnight": (0, 0, None, None, None),
    "@hourly": (None, 0, None, None, None),
}
_EVERY: Final = "@every "
_SPEC_HELP: Final = "use five fields 'minute hour day-of-month month day-of-week' (e.g. '0 9 * * MON-FRI')"

# A local time is never more than this far from its UTC instant's local time, across any DST change in tzdata.
_MAX_SHIFT: Final = timedelta(hours=3)
# A valid spec fires at least once in any 8 years (29 February); the search gives up after this many days.
_SEARCH_DAYS: Final = 9 * 366


def load_zone(name: str) -> ZoneInfo:
    """Return the IANA time zone ``name``.

    Raises:
        InvalidSchedule: the zone is unknown.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise InvalidSchedule(
            f"unknown time zone {name!r}: use an IANA zone name such as 'UTC', 'Europe/London' or "
            "'America/New_York' (install the tzdata package where the system has no zone database)"
        ) from exc


@dataclass(frozen=True)
class CronSpec:
    """A parsed spec.

    Attributes:
        expression: the spec without its time zone prefix.
        timezone: the zone named by a ``CRON_TZ=``/``TZ=`` prefix, or ``None``.
        every_s: the interval of an ``@every`` spec in whole seconds, else ``None``.
        minutes: the matching minutes, ascending.
        hours: the matching hours, ascending.
        days: the matching days of the month.
        months: the matching months.
        weekdays: the matching days of the week, 0 being Sunday.
        any_day: the day-of-month field is ``*`` or ``?`` (Go's rule: the day of week alone decides).
        any_weekday: the day-of-week field is ``*`` or ``?`` (the day of month alone decides).
        fixed_hours: the hour field names fixed hours (no ``*``, ``?`` nor step), so the DST policies apply.
    """

    expression: str
    timezone: str | None
    every_s: int | None = None
    minutes: tuple[int, ...] = ()
    hours: tuple[int, ...] = ()
    days: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()
    any_day: bool = True
    any_weekday: bool = True
    fixed_hours: bool = True

    def matches_date(self, day: date) -> bool:
        """Whether the spec fires on the local date ``day`` (Go's day-of-month / day-of-week rule)."""
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.weekday() + 1) % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow

    def iter_after(
        self,
        after: datetime,
        *,
        zone: ZoneInfo,
        anchor: datetime,
        dst_gap: DstGap = DstGap.SHIFT,
        dst_overlap: DstOverlap = DstOverlap.ONCE,
    ) -> Iterator[datetime]:
        """Yield the due instants strictly after ``after``, ascending, without end.

        Args:
            after: an aware datetime.
            zone: the zone the fields are read in (the spec's own prefix is the caller's business).
            anchor: where ``@every`` counts from: due times are ``anchor + k * interval`` for k >= 1.
            dst_gap: the policy for fixed-hour local times a DST change skips.
            dst_overlap: the policy for fixed-hour local times a DST change repeats.

        Yields:
            Aware UTC datetimes.
        """
        after = after.astimezone(UTC)
        if self.every_s is not None:
            yield from self._iter_every(after, anchor.astimezone(UTC))
            return
        last = after
        local_after = after.astimezone(zone).replace(tzinfo=None)
        earliest = local_after - _MAX_SHIFT
        day = local_after.date() - timedelta(days=1)
        idle_days = 0
        hours, minutes = sorted(self.hours), sorted(self.minutes)
        while idle_days < _SEARCH_DAYS:
            idle_days += 1
            if self.matches_date(day):
                walls = (
                    wall
                    for hour in hours
                    if datetime.combine(day, time(hour, 59)) >= earliest  # skips whole hours before the start
                    for minute in minutes
                    if (wall := datetime.combine(day, time(hour, minute))) >= earliest
                )
                offset = _fixed_offset(day, zone)
                if offset is not None:
                    # No DST change that day: local times map to instants one to one, in order. The common case, and
                    # lazy: a `* * * * *` spec costs one subtraction per minute reached, not a day of conversions.
                    instants: Iterator[datetime] = ((wall - offset).replace(tzinfo=UTC) for wall in walls)
                else:
                    found: set[datetime] = set()
                    for wall in walls:
                        found.update(self._instants(wall, zone, dst_gap, dst_overlap))
                    instants = iter(sorted(found))
                for instant in instants:
                    if instant > last:
                        idle_days = 0
                        last = instant
                        yield instant
            day += timedelta(days=1)
        raise InvalidSchedule(f"schedule {self.expression!r} has no due time within {_SEARCH_DAYS // 366} years")

    def _iter_every(self, after: datetime, anchor: datetime) -> Iterator[datetime]:
        assert self.every_s is not None
        # Whole seconds, so every scheduler derives the same instants (and task ids) from the stored created_at.
        anchor = anchor.replace(microsecond=0)
        interval = timedelta(seconds=self.every_s)
        k = max(1, (after - anchor) // interval + 1)
        while True:
            yield anchor + k * interval
            k += 1

    def _instants(self, wall: datetime, zone: ZoneInfo, gap: DstGap, overlap: DstOverlap) -> list[datetime]:
        first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
        if first == second:
            return [first]
        if first < second:  # the local time happens twice (PEP 495: fold=0 is the earlier)
            if self.fixed_hours and overlap is DstOverlap.ONCE:
                return [first]
            return [first, second]
        # The local time does not exist: fold=0 reads it with the offset before the change, so it lands after it.
        if not self.fixed_hours or gap is DstGap.SKIP:
            return []
        return [_transition(second, first, zone)]


def _fixed_offset(day: date, zone: ZoneInfo) -> timedelta | None:
    """The zone's UTC offset on ``day`` if it is the same from its start to its end (no DST change that day)."""
    start = datetime.combine(day, time(0, 0)).replace(tzinfo=zone).utcoffset()
    end = datetime.combine(day + timedelta(days=1), time(0, 0)).replace(tzinfo=zone).utcoffset()
    start_later = datetime.combine(day, time(23, 59)).replace(tzinfo=zone, fold=1).utcoffset()
    return start if start == end == start_later else None


def _transition(before: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    """The first instant in (before, after] that has ``after``'s UTC offset: where a DST gap ends."""
    target = after.astimezone(zone).utcoffset()
    low, high = before, after
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        middle = middle.replace(microsecond=0)
        if middle.astimezone(zone).utcoffset() == target:
            high = middle
        else:
            low = middle
    return high


def parse_spec(spec: str) -> CronSpec:
    """Parse a spec as Go's ``cron.ParseStandard`` does.

    Raises:
        InvalidSchedule: the spec is invalid; the message says what is wrong and how to write it.
    """
    if not isinstance(spec, str):
        raise InvalidSchedule(f"schedule spec must be a string, not {type(spec).__name__}: {_SPEC_HELP}")
    text = spec.strip()
    if not text:
        raise InvalidSchedule(f"schedule spec is empty: {_SPEC_HELP}, or '@daily', or '@every 1h'")
    timezone: str | None = None
    if text.startswith((CRON_TZ_PREFIX, TZ_PREFIX)):
        prefix, _, rest = text.partition(" ")
        timezone = prefix.partition("=")[2]
        text = rest.strip()
        if not timezone or not text:
            raise InvalidSchedule(
                f"schedule spec {spec!r} has a time zone prefix but no zone or no schedule: "
                "write it as 'CRON_TZ=Europe/London 0 9 * * *'"
            )
        load_zone(timezone)
    if text.startswith("@"):
        return _parse_descriptor(text, timezone, spec)
    fields = text.split()
    if len(fields) != len(_FIELDS):
        raise InvalidSchedule(
            f"schedule spec {spec!r} has {len(fields)} fields, expected exactly 5: {_SPEC_HELP} "
            "(there is no seconds field)"
        )
    parsed = [_parse_field(value, field, spec) for value, field in zip(fields, _FIELDS, strict=True)]
    (minutes, _), (hours, _), (days, any_day), (months, _), (weekdays, any_weekday) = parsed
    hour_field = fields[1]
    fixed_hours = not any(part.startswith(("*", "?")) or "/" in part for part in hour_field.split(","))
    result = CronSpec(
        expression=text,
        timezone=timezone,
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days=frozenset(days),
        months=frozenset(months),
        weekdays=frozenset(weekdays),
        any_day=any_day,
        any_weekday=any_weekday,
        fixed_hours=fixed_hours,
    )
    _check_can_fire(result, spec)
    return result


def _parse_descriptor(text: str, timezone: str | None, spec: str) -> CronSpec:
    if text.startswith(_EVERY):
        duration = text[len(_EVERY) :].strip()
        ns = parse_go_duration(duration)
        if ns <= 0:
            raise InvalidSchedule(f"schedule spec {spec!r}: the @every interval must be positive, e.g. '@every 90s'")
        # Go's cron drops the fraction of a second and runs shorter intervals every second.
        return CronSpec(expression=text, timezone=timezone, every_s=max(1, ns // _NS_PER_SECOND))
    shape = _DESCRIPTORS.get(text)
    if shape is None:
        raise InvalidSchedule(
            f"schedule spec {spec!r}: unknown descriptor {text!r}: use one of "
            f"{', '.join(_DESCRIPTORS)} or '@every <duration>' (lower case), or five cron fields"
        )
    hour, minute, dom, month, dow = shape
    return CronSpec(
        expression=text,
        timezone=timezone,
        minutes=(minute,),
        hours=tuple(range(24)) if hour is None else (hour,),
        days=frozenset(range(1, 32)) if dom is None else frozenset({dom}),
        months=frozenset(range(1, 13)) if month is None else frozenset({month}),
        weekdays=frozenset(range(7)) if dow is None else frozenset({dow}),
        any_day=dom is None,
        any_weekday=dow is None,
        fixed_hours=hour is not None,
    )


def _parse_field(text: str, field: _Field, spec: str) -> tuple[set[int], bool]:
    """The values a field matches, and whether it counts as ``*`` for Go's day rule."""
    values: set[int] = set()
    star = False
    # Go skips empty list items ("1,,2"); so do we.
    for part in (item for item in text.split(",") if item):
        range_text, slash, step_text = part.partition("/")
        if "/" in step_text:
            raise InvalidSchedule(_field_error(field, part, spec, "has more than one '/'"))
        part_star = range_text in ("*", "?")
        if part_star:
            start, end = field.low, field.high
        else:
            low_text, dash, high_text = range_text.partition("-")
            if "-" in high_text:
                raise InvalidSchedule(_field_error(field, part, spec, "has more than one '-'"))
            start = _value(low_text, field, part, spec)
            end = _value(high_text, field, part, spec) if dash else start
            if slash and not dash:  # Go: "N/step" means "N-max/step"
                end = field.high
        step = 1
        if slash:
            if not _NUMBER_RE.fullmatch(step_text) or int(step_text) == 0:
                raise InvalidSchedule(_field_error(field, part, spec, "needs a positive whole step after '/'"))
            step = int(step_text)
            if step > 1:  # Go: "*/2" restricts the field, it no longer counts as "*"
                part_star = False
        if start > end:
            raise InvalidSchedule(
                _field_error(field, part, spec, f"is a range from {start} down to {end}: write the lower bound first")
            )
        values.update(range(start, end + 1, step))
        star = star or part_star
    if not values:
        raise InvalidSchedule(_field_error(field, text, spec, "is empty"))
    return values, star


def _value(text: str, field: _Field, part: str, spec: str) -> int:
    if field.names is not None and text.lower() in field.names:
        return field.names[text.lower()]
    if not _NUMBER_RE.fullmatch(text):
        raise InvalidSchedule(_field_error(field, part, spec, f"has {text!r}, which is not a number or a name"))
    value = int(text)
    if value < field.low or value > field.high:
        extra = " (Go's cron has no 7 for Sunday: use 0 or SUN)" if field is _DOW and value == 7 else ""
        raise InvalidSchedule(_field_error(field, part, spec, f"has {value}, outside {field.low}-{field.high}{extra}"))
    return value


def _field_error(field: _Field, part: str, spec: str, problem: str) -> str:
    return f"schedule spec {spec!r}: {field.name} {part!r} {problem}: use {field.hint}, '*', ranges, lists, steps"


def _check_can_fire(result: CronSpec, spec: str) -> None:
    # When the day of month alone decides, some listed day must exist in some listed month (29 February counts).
    day_of_month_decides = not result.any_day and result.any_weekday
    if day_of_month_decides and not any(
        day <= _DAYS_IN_MONTH[month - 1] for month in result.months for day in result.days
    ):
        raise InvalidSchedule(
            f"schedule spec {spec!r} never fires: none of its months has any of its days of the month; "
            "check the day-of-month and month fields"
        )
