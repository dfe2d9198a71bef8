"""Go-compatible wire times and durations, exact to the nanosecond."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from asyncjobs.errors import ConfigurationError
from asyncjobs.wiretime import GO_ZERO_TIME, WireTime, format_time, ns_to_seconds, parse_time, to_ns

_BASE_NS = 1_784_710_800_000_000_000  # 2026-07-22T09:00:00Z
_HOUR = 3600

# Strings as Go's encoding/json writes them, with the value they stand for.
GO_FORMATTED = [
    ("2026-07-22T09:00:00.123456789Z", WireTime(1_784_710_800_123_456_789)),
    ("2026-07-22T09:00:01.2Z", WireTime(_BASE_NS + 1_200_000_000)),
    ("2026-07-22T09:00:00Z", WireTime(_BASE_NS)),
    ("2026-07-22T09:00:00.5Z", WireTime(_BASE_NS + 500_000_000)),
    ("2026-07-22T09:00:01.305Z", WireTime(_BASE_NS + 1_305_000_000)),
    ("2026-07-22T09:02:40.88Z", WireTime(_BASE_NS + 160_880_000_000)),
    ("2026-07-22T09:00:00.000000001Z", WireTime(_BASE_NS + 1)),
    ("2026-07-22T11:00:00+02:00", WireTime(_BASE_NS, 2 * _HOUR)),
    ("2026-07-22T03:30:00.25-05:30", WireTime(_BASE_NS + 250_000_000, -(5 * _HOUR + 30 * 60))),
    ("2026-07-23T08:59:00+23:59", WireTime(_BASE_NS, 23 * _HOUR + 59 * 60)),
    ("0001-01-01T00:00:00Z", GO_ZERO_TIME),
    ("1970-01-01T00:00:00Z", WireTime(0)),
    ("1969-12-31T23:59:59.999999999Z", WireTime(-1)),
    ("9999-12-31T23:59:59.999999999Z", WireTime(253_402_300_799_999_999_999)),
    ("2024-02-29T12:00:00Z", WireTime(1_709_208_000_000_000_000)),
]


@pytest.mark.parametrize(("text", "value"), GO_FORMATTED)
def test_format(text: str, value: WireTime) -> None:
    assert format_time(value) == text


@pytest.mark.parametrize(("text", "value"), GO_FORMATTED)
def test_parse_then_format_returns_the_same_string(text: str, value: WireTime) -> None:
    assert parse_time(text) == value
    assert format_time(parse_time(text)) == text


def test_go_zero_time() -> None:
    assert WireTime(-62_135_596_800_000_000_000, 0) == GO_ZERO_TIME
    assert GO_ZERO_TIME.to_datetime() == datetime(1, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        # Go reads any fraction length; digits past the ninth are dropped, not rounded.
        ("2026-07-22T09:00:00.1234567891Z", WireTime(1_784_710_800_123_456_789)),
        ("2026-07-22T09:00:00.999999999999Z", WireTime(_BASE_NS + 999_999_999)),
        ("2026-07-22T09:00:00.000Z", WireTime(_BASE_NS)),
        ("2026-07-22T09:00:00.10Z", WireTime(_BASE_NS + 100_000_000)),
        ("2026-07-22t09:00:00z", WireTime(_BASE_NS)),
        ("2026-07-22T09:00:00+00:00", WireTime(_BASE_NS)),
        ("2026-07-22T09:00:00-00:00", WireTime(_BASE_NS)),
    ],
)
def test_parse_variants(text: str, value: WireTime) -> None:
    assert parse_time(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2026-07-22",
        "2026-07-22T09:00:00",  # no zone: Go refuses it
        "2026-07-22 09:00:00Z",
        "2026-07-22T09:00:00.Z",
        "2026-07-22T09:00Z",
        "2026-7-22T09:00:00Z",
        "2026-07-22T09:00:00+0200",
        "2026-07-22T09:00:00+02",
        "2026-07-22T09:00:00 Z",
        " 2026-07-22T09:00:00Z",
        "2026-07-22T09:00:00Z ",
        "2026-13-01T00:00:00Z",
        "2026-02-29T00:00:00Z",
        "2026-00-10T00:00:00Z",
        "2026-07-00T00:00:00Z",
        "2026-07-22T24:00:00Z",
        "2026-07-22T09:60:00Z",
        "2026-07-22T09:00:60Z",
        "2026-07-22T09:00:00+24:00",
        "2026-07-22T09:00:00+02:60",
        "0000-01-01T00:00:00Z",
        "2026-07-22T09:00:00.\u0661Z",  # an Arabic-Indic digit: \d must mean ASCII
    ],
)
def test_malformed_strings_are_rejected(text: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid time") as info:
        parse_time(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("dt", "value"),
    [
        (datetime(2026, 7, 22, 9, 0, 0, 123456, tzinfo=UTC), WireTime(_BASE_NS + 123_456_000)),
        (
            datetime(2026, 7, 22, 11, 0, tzinfo=timezone(timedelta(hours=2))),
            WireTime(_BASE_NS, 2 * _HOUR),
        ),
        (
            datetime(2026, 7, 22, 3, 30, tzinfo=timezone(-timedelta(hours=5, minutes=30))),
            WireTime(_BASE_NS, -(5 * _HOUR + 30 * 60)),
        ),
        (datetime(1, 1, 1, tzinfo=UTC), GO_ZERO_TIME),
        (datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), WireTime(-1000)),
    ],
)
def test_datetime_conversions(dt: datetime, value: WireTime) -> None:
    assert WireTime.from_datetime(dt) == value
    assert value.to_datetime() == dt
    assert value.to_datetime().utcoffset() == dt.utcoffset()


def test_to_datetime_truncates_nanoseconds_and_uses_utc() -> None:
    converted = parse_time("2026-07-22T09:00:00.123456789Z").to_datetime()
    assert converted == datetime(2026, 7, 22, 9, 0, 0, 123456, tzinfo=UTC)
    assert converted.tzinfo is UTC
    assert WireTime(-1).to_datetime() == datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ConfigurationError, match=r"aware datetime, e\.g\. datetime\.now\(UTC\)"):
        WireTime.from_datetime(datetime(2026, 7, 22, 9, 0))  # naive on purpose


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (WireTime(GO_ZERO_TIME.unix_ns - 1), "outside 0001 to 9999"),
        (WireTime(253_402_300_800_000_000_000), "outside 0001 to 9999"),
        (WireTime(_BASE_NS, 86_400), "less than a day"),
    ],
)
def test_unformattable_times_are_rejected(value: WireTime, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        format_time(value)


def test_unrepresentable_datetime_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="cannot be represented"):
        WireTime(GO_ZERO_TIME.unix_ns, -_HOUR).to_datetime()


def test_offset_seconds_are_dropped_when_formatting() -> None:
    # Go's "Z07:00" layout prints hours and minutes only.
    assert format_time(WireTime(_BASE_NS, 2 * _HOUR + 30)) == "2026-07-22T11:00:30+02:00"


def test_now_is_utc_and_current() -> None:
    before = datetime.now(UTC)
    now = WireTime.now()
    after = datetime.now(UTC)
    assert now.offset_s == 0
    assert before - timedelta(microseconds=1) <= now.to_datetime() <= after


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, 0),
        (0, 0),
        (0.0, 0),
        (1, 1_000_000_000),
        (0.5, 500_000_000),
        (0.1, 100_000_000),
        (1e-9, 1),
        (60.0, 60_000_000_000),
        (10.8, 10_800_000_000),
        (timedelta(minutes=1), 60_000_000_000),
        (timedelta(microseconds=1), 1000),
        (timedelta(days=365_000, microseconds=7), 31_536_000_000_000_007_000),
    ],
)
def test_to_ns(value: float | timedelta | None, expected: int) -> None:
    assert to_ns(value, name="ack_wait") == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (-1, "ack_wait must not be negative"),
        (-0.001, "ack_wait must not be negative"),
        (timedelta(seconds=-1), "ack_wait must not be negative"),
        (float("nan"), "ack_wait must be a finite number"),
        (float("inf"), "ack_wait must be a finite number"),
        (True, "ack_wait must be seconds as a float or a timedelta, not bool"),
        ("1", "ack_wait must be seconds as a float or a timedelta, not str"),
    ],
)
def test_to_ns_rejects(value: object, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        to_ns(value, name="ack_wait")  # type: ignore[arg-type]


@pytest.mark.parametrize(("ns", "seconds"), [(0, 0.0), (1_500_000_000, 1.5), (1, 1e-9), (-2_000_000_000, -2.0)])
def test_ns_to_seconds(ns: int, seconds: float) -> None:
    assert ns_to_seconds(ns) == seconds


@pytest.mark.parametrize(
    ("text", "unix_ns"),
    [
        ("2026-07-22T09:00:00Z", 1_784_710_800_000_000_000),
        ("2026-07-22T09:00:00.5Z", 1_784_710_800_500_000_000),
        ("2026-07-22T09:00:00.123456789Z", 1_784_710_800_123_456_789),
        ("2026-07-22T09:00:00.1234567891234Z", 1_784_710_800_123_456_789),
        ("2026-07-22T09:00:00.000000001Z", 1_784_710_800_000_000_001),
    ],
)
def test_times_of_a_second_seen_before_parse_the_same(text: str, unix_ns: int) -> None:
    # The second parse of a second takes the fast path: same result as the first.
    parse_time("2026-07-22T09:00:00.7Z")
    assert parse_time(text) == WireTime(unix_ns, 0)
    assert parse_time(text) == WireTime(unix_ns, 0)


@pytest.mark.parametrize(
    "text",
    [
        "2026-07-22T09:00:00.Z",
        "2026-07-22T09:00:00.12a3Z",
        "2026-07-22T09:00:00.\uff11\uff12Z",  # non-ASCII (fullwidth) digits
        "2026-07-22T09:00:00",
        "2026-07-22T09:00:00.5",
        "2026-07-22T09:00:00Zjunk",
        "2026-07-22T09:00:00.5Zjunk",
    ],
)
def test_a_bad_tail_after_a_second_seen_before_is_refused(text: str) -> None:
    parse_time("2026-07-22T09:00:00.7Z")
    with pytest.raises(ConfigurationError, match="invalid time"):
        parse_time(text)


def test_an_offset_after_a_second_seen_before_keeps_its_offset() -> None:
    parse_time("2026-07-22T09:00:00.7Z")
    assert parse_time("2026-07-22T09:00:00.5+02:00") == WireTime(1_784_710_800_500_000_000 - 7_200_000_000_000, 7200)
