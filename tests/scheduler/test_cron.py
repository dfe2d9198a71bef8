"""Cron specs as Go's ParseStandard reads them: a table of specs and their next due times, and the refused specs."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from asyncjobs_scheduler.cron import CronSpec, parse_go_duration, parse_spec
from asyncjobs_scheduler.errors import InvalidSchedule

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC) if "+" not in text[10:] else datetime.fromisoformat(text)


def upcoming(spec: CronSpec | str, after: str, count: int, *, anchor: datetime = EPOCH) -> list[str]:
    cron = parse_spec(spec) if isinstance(spec, str) else spec
    zone = ZoneInfo(cron.timezone or "UTC")
    times = cron.iter_after(utc(after), zone=zone, anchor=anchor)
    return [next(times).strftime("%Y-%m-%dT%H:%M:%S") for _ in range(count)]


# 2026-01-01 is a Thursday.
NEXT_TIMES = [
    ("* * * * *", "2026-01-01T00:00:00", ["2026-01-01T00:01:00", "2026-01-01T00:02:00"]),
    ("* * * * *", "2026-01-01T00:00:30", ["2026-01-01T00:01:00", "2026-01-01T00:02:00"]),
    ("0 * * * *", "2026-01-01T00:30:00", ["2026-01-01T01:00:00", "2026-01-01T02:00:00"]),
    ("*/15 * * * *", "2026-01-01T10:07:00", ["2026-01-01T10:15:00", "2026-01-01T10:30:00", "2026-01-01T10:45:00"]),
    ("5-10/2 * * * *", "2026-01-01T10:00:00", ["2026-01-01T10:05:00", "2026-01-01T10:07:00", "2026-01-01T10:09:00"]),
    ("50/5 * * * *", "2026-01-01T10:00:00", ["2026-01-01T10:50:00", "2026-01-01T10:55:00", "2026-01-01T11:50:00"]),
    ("0 9 * * MON-FRI", "2026-01-02T10:00:00", ["2026-01-05T09:00:00", "2026-01-06T09:00:00"]),
    ("0 9 * * mon-fri", "2026-01-02T08:00:00", ["2026-01-02T09:00:00", "2026-01-05T09:00:00"]),
    ("0 0 1 jan,Jul *", "2026-01-01T00:00:00", ["2026-07-01T00:00:00", "2027-01-01T00:00:00"]),
    ("0 0 * * 0", "2026-01-01T00:00:00", ["2026-01-04T00:00:00", "2026-01-11T00:00:00"]),
    ("0 0 ? * SUN", "2026-01-01T00:00:00", ["2026-01-04T00:00:00", "2026-01-11T00:00:00"]),
    ("0 0 * * 1,3,5", "2026-01-01T00:00:00", ["2026-01-02T00:00:00", "2026-01-05T00:00:00", "2026-01-07T00:00:00"]),
    # Both day fields restricted: either one matching fires (the 1st/15th, or a Friday).
    (
        "30 4 1,15 * 5",
        "2026-01-01T05:00:00",
        ["2026-01-02T04:30:00", "2026-01-09T04:30:00", "2026-01-15T04:30:00", "2026-01-16T04:30:00"],
    ),
    # "*/10" restricts the day of month; with a "*" day of week it alone decides.
    ("0 0 */10 * *", "2026-01-01T00:00:00", ["2026-01-11T00:00:00", "2026-01-21T00:00:00", "2026-01-31T00:00:00"]),
    # ... and with a restricted day of week, either matching fires.
    ("0 0 */10 * MON", "2026-01-01T00:00:00", ["2026-01-05T00:00:00", "2026-01-11T00:00:00", "2026-01-12T00:00:00"]),
    # "*/1" still counts as "*": the day of week alone decides.
    ("0 0 */1 * MON", "2026-01-01T00:00:00", ["2026-01-05T00:00:00", "2026-01-12T00:00:00"]),
    ("0 0 5/20 * *", "2026-01-01T00:00:00", ["2026-01-05T00:00:00", "2026-01-25T00:00:00", "2026-02-05T00:00:00"]),
    ("0 12 29 2 *", "2026-01-01T00:00:00", ["2028-02-29T12:00:00", "2032-02-29T12:00:00"]),
    ("59 23 31 12 *", "2026-12-31T23:59:00", ["2027-12-31T23:59:00"]),
    ("0 0 1,,15 * *", "2026-01-01T00:00:00", ["2026-01-15T00:00:00", "2026-02-01T00:00:00"]),
    ("0 0 31 * *", "2026-01-31T00:00:00", ["2026-03-31T00:00:00", "2026-05-31T00:00:00"]),
    ("  0   6  * * *  ", "2026-01-01T00:00:00", ["2026-01-01T06:00:00"]),
    ("@yearly", "2026-01-01T00:00:00", ["2027-01-01T00:00:00", "2028-01-01T00:00:00"]),
    ("@annually", "2025-12-31T23:59:59", ["2026-01-01T00:00:00"]),
    ("@monthly", "2026-01-01T00:00:00", ["2026-02-01T00:00:00", "2026-03-01T00:00:00"]),
    ("@weekly", "2026-01-01T00:00:00", ["2026-01-04T00:00:00", "2026-01-11T00:00:00"]),
    ("@daily", "2026-01-01T00:00:00", ["2026-01-02T00:00:00", "2026-01-03T00:00:00"]),
    ("@midnight", "2026-01-01T12:00:00", ["2026-01-02T00:00:00"]),
    ("@hourly", "2026-01-01T00:00:00", ["2026-01-01T01:00:00", "2026-01-01T02:00:00"]),
    # Prefixed specs are read in their zone; times below are UTC.
    ("CRON_TZ=Europe/London 0 9 * * *", "2026-07-01T00:00:00", ["2026-07-01T08:00:00", "2026-07-02T08:00:00"]),
    ("CRON_TZ=Europe/London 0 9 * * *", "2026-01-01T00:00:00", ["2026-01-01T09:00:00"]),
    ("TZ=Asia/Tokyo 0 9 * * *", "2026-01-01T00:00:00", ["2026-01-02T00:00:00"]),
    ("TZ=America/New_York @daily", "2026-01-01T00:00:00", ["2026-01-01T05:00:00", "2026-01-02T05:00:00"]),
]


@pytest.mark.parametrize(("spec", "after", "expected"), NEXT_TIMES)
def test_next_times(spec: str, after: str, expected: list[str]) -> None:
    assert upcoming(spec, after, len(expected)) == expected


@pytest.mark.parametrize(
    "spec",
    ["*/7 * * * *", "0 9 * * 1-5", "15 3 1 * *", "0 0 1 jan *", "0 12 * * sun", "30 4 1,15 * 5", "0 */5 * * *"],
)
def test_agrees_with_croniter_in_utc(spec: str) -> None:
    start = datetime(2026, 1, 1, 0, 3, tzinfo=UTC)
    oracle = croniter(spec, start)
    expected = [oracle.get_next(datetime).astimezone(UTC) for _ in range(40)]
    times = parse_spec(spec).iter_after(start, zone=ZoneInfo("UTC"), anchor=EPOCH)
    assert [next(times) for _ in range(40)] == expected


def test_results_are_aware_utc() -> None:
    times = parse_spec("0 9 * * *").iter_after(utc("2026-01-01T00:00:00"), zone=ZoneInfo("Asia/Tokyo"), anchor=EPOCH)
    due = next(times)
    assert due.tzinfo is UTC
    assert due == datetime(2026, 1, 2, 0, 0, tzinfo=UTC)  # 09:00 in Tokyo; strictly after 00:00Z


def test_prefix_is_parsed_into_timezone() -> None:
    spec = parse_spec("CRON_TZ=Europe/London 0 9 * * *")
    assert (spec.timezone, spec.expression) == ("Europe/London", "0 9 * * *")
    assert parse_spec("TZ=UTC @hourly").timezone == "UTC"
    assert parse_spec("0 9 * * *").timezone is None


@pytest.mark.parametrize(
    ("spec", "fixed"),
    [
        ("0 9 * * *", True),
        ("0 1-3 * * *", True),
        ("0 2,14 * * *", True),
        ("@daily", True),
        ("0 * * * *", False),
        ("0 */2 * * *", False),
        ("0 ? * * *", False),
        ("0 3/4 * * *", False),
        ("@hourly", False),
        ("0 1,*/6 * * *", False),
    ],
)
def test_fixed_hours(spec: str, fixed: bool) -> None:
    assert parse_spec(spec).fixed_hours is fixed


EVERY = [
    # (spec, anchor, after, expected): due = anchor (whole seconds) + k * interval, k >= 1, strictly after `after`.
    ("@every 90s", "2026-01-01T00:00:00.7", "2026-01-01T00:00:00", ["2026-01-01T00:01:30", "2026-01-01T00:03:00"]),
    ("@every 90s", "2026-01-01T00:00:00", "2026-01-01T00:01:30", ["2026-01-01T00:03:00"]),
    ("@every 90s", "2026-01-01T00:00:00", "2025-12-01T00:00:00", ["2026-01-01T00:01:30"]),
    ("@every 1h30m", "2026-01-01T00:00:00", "2026-01-01T02:00:00", ["2026-01-01T03:00:00", "2026-01-01T04:30:00"]),
    ("@every 1.5h", "2026-01-01T00:00:00", "2026-01-01T00:00:00", ["2026-01-01T01:30:00"]),
    ("@every 300ms", "2026-01-01T00:00:00", "2026-01-01T00:00:00", ["2026-01-01T00:00:01", "2026-01-01T00:00:02"]),
    ("@every 2.5s", "2026-01-01T00:00:00", "2026-01-01T00:00:00", ["2026-01-01T00:00:02", "2026-01-01T00:00:04"]),
    ("@every 24h", "2026-03-07T12:00:00", "2026-03-07T12:00:00", ["2026-03-08T12:00:00"]),
    ("CRON_TZ=America/New_York @every 1h", "2026-03-08T06:00:00", "2026-03-08T06:00:00", ["2026-03-08T07:00:00"]),
]


@pytest.mark.parametrize(("spec", "anchor", "after", "expected"), EVERY)
def test_every_is_anchored(spec: str, anchor: str, after: str, expected: list[str]) -> None:
    assert upcoming(spec, after, len(expected), anchor=utc(anchor)) == expected


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("90s", 90 * 10**9),
        ("1h30m", 5400 * 10**9),
        ("1.5h", 5400 * 10**9),
        ("300ms", 300 * 10**6),
        ("1us", 1000),
        ("1µs", 1000),
        ("1μs", 1000),
        ("15ns", 15),
        ("2h45m30.5s", (2 * 3600 + 45 * 60 + 30) * 10**9 + 5 * 10**8),
        (".5s", 5 * 10**8),
        ("1.s", 10**9),
        ("0", 0),
        ("+5m", 300 * 10**9),
        ("-1s", -(10**9)),
    ],
)
def test_go_durations(text: str, ns: int) -> None:
    assert parse_go_duration(text) == ns


@pytest.mark.parametrize("text", ["", "5", "1x", "1h 30m", "h", "1.5", "s1", "--1s", "3000000h"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(InvalidSchedule, match="duration"):
        parse_go_duration(text)


BAD_SPECS = [
    ("", "is empty"),
    ("   ", "is empty"),
    ("* * * *", "has 4 fields, expected exactly 5"),
    ("0 0 * * * *", "has 6 fields, expected exactly 5.*no seconds field"),
    ("60 * * * *", "minute '60' has 60, outside 0-59"),
    ("0 24 * * *", "hour '24' has 24, outside 0-23"),
    ("0 0 0 * *", "day of month '0' has 0, outside 1-31"),
    ("0 0 * 13 *", "month '13' has 13, outside 1-12"),
    ("0 0 * * 7", "no 7 for Sunday: use 0 or SUN"),
    ("0 0 * * 1-7", "no 7 for Sunday"),
    ("0 0 * * FOO", "'FOO', which is not a number or a name"),
    ("0 0 * JANUARY *", "not a number or a name"),
    ("0 0 * * JAN", "not a number or a name"),
    ("-1 * * * *", "not a number or a name"),
    ("*-5 * * * *", "not a number or a name"),
    ("5-1 * * * *", "range from 5 down to 1: write the lower bound first"),
    ("*/0 * * * *", "positive whole step"),
    ("*/x * * * *", "positive whole step"),
    ("1/2/3 * * * *", "more than one '/'"),
    ("1-2-3 * * * *", "more than one '-'"),
    ("0 0 , * *", "day of month ',' is empty"),
    ("0 0 30 2 *", "never fires"),
    ("0 0 31 4,6,9,11 *", "never fires"),
    ("@fortnightly", "unknown descriptor '@fortnightly'"),
    ("@DAILY", "unknown descriptor"),
    ("@daily extra", "unknown descriptor"),
    ("@every", "unknown descriptor"),
    ("@every 0s", "must be positive"),
    ("@every -5s", "must be positive"),
    ("@every 5", "invalid duration '5'"),
    ("CRON_TZ=Mars/Olympus 0 0 * * *", "unknown time zone 'Mars/Olympus'"),
    ("TZ=../etc/passwd 0 0 * * *", "unknown time zone"),
    ("CRON_TZ=UTC", "no zone or no schedule"),
    ("CRON_TZ= 0 0 * * *", "no zone or no schedule"),
]


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(InvalidSchedule, match=message):
        parse_spec(spec)


def test_bad_spec_type() -> None:
    with pytest.raises(InvalidSchedule, match="must be a string"):
        parse_spec(5)  # type: ignore[arg-type]


def test_every_minute_is_cheap_enough() -> None:
    # Each call builds at most a day of candidates: a scheduler calls this once per firing.
    times = parse_spec("* * * * *").iter_after(utc("2026-01-01T00:00:00"), zone=ZoneInfo("Europe/London"), anchor=EPOCH)
    got = [next(times) for _ in range(3000)]
    assert got[-1] - got[0] == timedelta(minutes=2999)


def test_importing_asyncjobs_imports_neither_croniter_nor_the_scheduler() -> None:
    code = "import sys, asyncjobs; print(sorted(m for m in sys.modules if m.startswith(('croniter', 'asyncjobs_s'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
