"""DST policies across the real 2026 transitions of America/New_York, Europe/London and Australia/Sydney.

Expected times are written as local times with their UTC offset, so each line reads as a wall clock would show it.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from asyncjobs_scheduler.schedule import Schedule

NEW_YORK = "America/New_York"
LONDON = "Europe/London"
SYDNEY = "Australia/Sydney"

# zone, transition day, local time just before the change, kind
TRANSITIONS = [
    (NEW_YORK, "2026-03-08", "gap"),  # 02:00 EST -> 03:00 EDT
    (NEW_YORK, "2026-11-01", "overlap"),  # 02:00 EDT -> 01:00 EST
    (LONDON, "2026-03-29", "gap"),  # 01:00 GMT -> 02:00 BST
    (LONDON, "2026-10-25", "overlap"),  # 02:00 BST -> 01:00 GMT
    (SYDNEY, "2026-04-05", "overlap"),  # 03:00 AEDT -> 02:00 AEST
    (SYDNEY, "2026-10-04", "gap"),  # 02:00 AEST -> 03:00 AEDT
]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def due(spec: str, zone: str, after: str, count: int, **options: str) -> list[datetime]:
    return Schedule("dst", spec, "t", timezone=zone, **options).next_times(at(after), count)


@pytest.mark.parametrize(("zone", "day", "kind"), TRANSITIONS)
def test_the_zone_database_has_the_2026_transitions(zone: str, day: str, kind: str) -> None:
    tz = ZoneInfo(zone)
    start = datetime.fromisoformat(day).replace(tzinfo=tz)
    before = start.utcoffset()
    after = (start + timedelta(days=1)).utcoffset()
    assert before is not None and after is not None
    assert (after > before) == (kind == "gap")


GAP = [
    # (zone, spec, after, dst_gap, expected)
    (NEW_YORK, "30 2 * * *", "2026-03-07T12:00-05:00", "shift", ["2026-03-08T03:00-04:00", "2026-03-09T02:30-04:00"]),
    (NEW_YORK, "30 2 * * *", "2026-03-07T12:00-05:00", "skip", ["2026-03-09T02:30-04:00", "2026-03-10T02:30-04:00"]),
    # Several due times inside the gap shift to the same instant: one task, not two.
    (
        NEW_YORK,
        "0,30 2 * * *",
        "2026-03-07T12:00-05:00",
        "shift",
        ["2026-03-08T03:00-04:00", "2026-03-09T02:00-04:00", "2026-03-09T02:30-04:00"],
    ),
    # A shifted time that meets a real one is still one due time.
    (NEW_YORK, "0 2,3 * * *", "2026-03-07T12:00-05:00", "shift", ["2026-03-08T03:00-04:00", "2026-03-09T02:00-04:00"]),
    (NEW_YORK, "0 2,3 * * *", "2026-03-07T12:00-05:00", "skip", ["2026-03-08T03:00-04:00", "2026-03-09T02:00-04:00"]),
    (LONDON, "30 1 * * *", "2026-03-28T12:00+00:00", "shift", ["2026-03-29T02:00+01:00", "2026-03-30T01:30+01:00"]),
    (LONDON, "30 1 * * *", "2026-03-28T12:00+00:00", "skip", ["2026-03-30T01:30+01:00"]),
    (LONDON, "0 1 * * SUN", "2026-03-28T12:00+00:00", "shift", ["2026-03-29T02:00+01:00", "2026-04-05T01:00+01:00"]),
    (SYDNEY, "30 2 * * *", "2026-10-03T12:00+10:00", "shift", ["2026-10-04T03:00+11:00", "2026-10-05T02:30+11:00"]),
    (SYDNEY, "30 2 * * *", "2026-10-03T12:00+10:00", "skip", ["2026-10-05T02:30+11:00"]),
    # After the shifted instant the next one is the following day.
    (NEW_YORK, "30 2 * * *", "2026-03-08T03:00-04:00", "shift", ["2026-03-09T02:30-04:00"]),
]


@pytest.mark.parametrize(("zone", "spec", "after", "policy", "expected"), GAP)
def test_fixed_hours_in_a_gap(zone: str, spec: str, after: str, policy: str, expected: list[str]) -> None:
    assert due(spec, zone, after, len(expected), dst_gap=policy) == [at(text) for text in expected]


OVERLAP = [
    # (zone, spec, after, dst_overlap, expected)
    (NEW_YORK, "30 1 * * *", "2026-10-31T12:00-04:00", "once", ["2026-11-01T01:30-04:00", "2026-11-02T01:30-05:00"]),
    (
        NEW_YORK,
        "30 1 * * *",
        "2026-10-31T12:00-04:00",
        "twice",
        ["2026-11-01T01:30-04:00", "2026-11-01T01:30-05:00", "2026-11-02T01:30-05:00"],
    ),
    # Between the two occurrences: "once" already fired, "twice" has the second still to come.
    (NEW_YORK, "30 1 * * *", "2026-11-01T01:45-04:00", "once", ["2026-11-02T01:30-05:00"]),
    (NEW_YORK, "30 1 * * *", "2026-11-01T01:45-04:00", "twice", ["2026-11-01T01:30-05:00"]),
    (LONDON, "30 1 * * *", "2026-10-24T12:00+01:00", "once", ["2026-10-25T01:30+01:00", "2026-10-26T01:30+00:00"]),
    (
        LONDON,
        "30 1 * * *",
        "2026-10-24T12:00+01:00",
        "twice",
        ["2026-10-25T01:30+01:00", "2026-10-25T01:30+00:00", "2026-10-26T01:30+00:00"],
    ),
    (SYDNEY, "30 2 * * *", "2026-04-04T12:00+11:00", "once", ["2026-04-05T02:30+11:00", "2026-04-06T02:30+10:00"]),
    (
        SYDNEY,
        "30 2 * * *",
        "2026-04-04T12:00+11:00",
        "twice",
        ["2026-04-05T02:30+11:00", "2026-04-05T02:30+10:00", "2026-04-06T02:30+10:00"],
    ),
    (SYDNEY, "0 2 5 4 *", "2026-04-04T12:00+11:00", "twice", ["2026-04-05T02:00+11:00", "2026-04-05T02:00+10:00"]),
]


@pytest.mark.parametrize(("zone", "spec", "after", "policy", "expected"), OVERLAP)
def test_fixed_hours_in_an_overlap(zone: str, spec: str, after: str, policy: str, expected: list[str]) -> None:
    assert due(spec, zone, after, len(expected), dst_overlap=policy) == [at(text) for text in expected]


EVERY_INSTANT_SPECS = ["0 * * * *", "@hourly", "*/15 * * * *", "30 * * * *", "*/20 */2 * * *", "5 ? * * *"]


def brute_force(minutes: set[int], hour_step: int, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Every real minute in (start, end] whose local time matches: what a '*' or step hour field must fire at."""
    found = []
    # In UTC: arithmetic on datetimes in a ZoneInfo zone is wall-clock arithmetic.
    instant = start.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    while instant <= end:
        local = instant.astimezone(zone)
        if local.minute in minutes and local.hour % hour_step == 0:
            found.append(instant)
        instant += timedelta(minutes=1)
    return found


SHAPES = {
    "0 * * * *": ({0}, 1),
    "@hourly": ({0}, 1),
    "*/15 * * * *": ({0, 15, 30, 45}, 1),
    "30 * * * *": ({30}, 1),
    "*/20 */2 * * *": ({0, 20, 40}, 2),
    "5 ? * * *": ({5}, 1),
}


@pytest.mark.parametrize("spec", EVERY_INSTANT_SPECS)
@pytest.mark.parametrize(("zone", "day", "kind"), TRANSITIONS)
@pytest.mark.parametrize("policies", [{}, {"dst_gap": "skip", "dst_overlap": "twice"}])
def test_star_and_step_hours_fire_at_every_real_instant(
    spec: str, zone: str, day: str, kind: str, policies: dict[str, str]
) -> None:
    tz = ZoneInfo(zone)
    start = datetime.fromisoformat(day).replace(tzinfo=tz) - timedelta(hours=2)
    end = start + timedelta(hours=30)
    minutes, hour_step = SHAPES[spec]
    expected = brute_force(minutes, hour_step, tz, start, end)
    got = Schedule("dst", spec, "t", timezone=zone, **policies).due_between(start, end)
    assert got == expected
    assert len(set(got)) == len(got)  # never doubles


@pytest.mark.parametrize(("zone", "day", "kind"), TRANSITIONS)
def test_hourly_neither_skips_nor_doubles(zone: str, day: str, kind: str) -> None:
    tz = ZoneInfo(zone)
    midnight = datetime.fromisoformat(day).replace(tzinfo=tz)
    next_midnight = (midnight + timedelta(days=1)).replace(tzinfo=tz)
    got = Schedule("h", "0 * * * *", "t", timezone=zone).due_between(midnight - timedelta(seconds=1), next_midnight)
    gaps = {b - a for a, b in itertools.pairwise(got)}
    assert gaps == {timedelta(hours=1)}
    # 23 on a gap day, 25 on an overlap day.
    real_hours = (next_midnight.astimezone(UTC) - midnight.astimezone(UTC)) // timedelta(hours=1)
    assert real_hours == (23 if kind == "gap" else 25)
    assert len(got) == real_hours + 1


@pytest.mark.parametrize(("zone", "day", "kind"), TRANSITIONS)
@pytest.mark.parametrize("spec", ["0 0 * * *", "0 12 * * *", "45 23 * * *", "0 9 * * *"])
def test_daily_times_outside_the_change_are_unaffected(spec: str, zone: str, day: str, kind: str) -> None:
    tz = ZoneInfo(zone)
    start = datetime.fromisoformat(day).replace(tzinfo=tz) - timedelta(days=3)
    hour, minute = int(spec.split()[1]), int(spec.split()[0])
    walls = [(start + timedelta(days=n)).replace(hour=hour, minute=minute) for n in range(8)]
    expected = [wall for wall in walls if wall > start][:7]
    for policies in ({}, {"dst_gap": "skip", "dst_overlap": "twice"}):
        got = Schedule("d", spec, "t", timezone=zone, **policies).next_times(start, 7)
        assert got == [wall.astimezone(UTC) for wall in expected]
        assert [g.astimezone(tz).strftime("%H:%M") for g in got] == [f"{hour:02d}:{minute:02d}"] * 7


def test_every_ignores_dst() -> None:
    s = Schedule("e", "@every 1h", "t", timezone=NEW_YORK, created_at=at("2026-03-08T00:00-05:00"))
    got = s.next_times(at("2026-03-08T00:00-05:00"), 4)
    assert [b - a for a, b in itertools.pairwise(got)] == [timedelta(hours=1)] * 3
