"""Go duration strings in the core (the scheduler's and ajc's flags read them), with ajc's calendar units."""

from __future__ import annotations

import pytest

import asyncjobs
from asyncjobs.durations import parse_go_duration

S = 10**9


@pytest.mark.parametrize(
    ("text", "calendar", "ns"),
    [
        ("90s", False, 90 * S),
        ("1h30m", False, 5400 * S),
        ("-1.5h", False, -5400 * S),
        ("0", False, 0),
        ("2d", True, 2 * 86400 * S),
        ("1w1d", True, 8 * 86400 * S),
        ("1M", True, 30 * 86400 * S),
        ("1y2d3h", True, (367 * 86400 + 3 * 3600) * S),
        ("292y", True, 292 * 365 * 86400 * S),
    ],
)
def test_durations(text: str, calendar: bool, ns: int) -> None:
    assert parse_go_duration(text, calendar_units=calendar) == ns


@pytest.mark.parametrize(
    ("text", "calendar", "message"),
    [
        ("2d", False, "units h, m, s, ms, us or ns,"),
        ("30", True, "use numbers with units"),
        ("", False, "it is empty"),
        ("1h 30m", False, "use numbers with units"),
        ("300y", True, "over Go's limit"),
        ("1D", True, "use numbers with units"),
    ],
)
def test_bad_durations_say_what_is_accepted(text: str, calendar: bool, message: str) -> None:
    with pytest.raises(asyncjobs.ConfigurationError, match=message):
        parse_go_duration(text, calendar_units=calendar)
