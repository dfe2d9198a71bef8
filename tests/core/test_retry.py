"""Retry policies: the upstream interval tables, jitter bounds, rounding and lookup."""

from __future__ import annotations

import itertools
import random

import pytest

from asyncjobs.errors import ConfigurationError
from asyncjobs.retry import (
    RETRY_DEFAULT,
    RETRY_FOR_TESTING,
    RETRY_LINEAR_ONE_HOUR,
    RETRY_LINEAR_ONE_MINUTE,
    RETRY_LINEAR_TEN_MINUTES,
    RETRY_LINEAR_TEN_SECONDS,
    RETRY_POLICIES,
    ExponentialPolicy,
    LinearPolicy,
    RetryPolicy,
    lookup_retry_policy,
    retry_delay_ns,
    retry_policy_names,
)

S = 1_000_000_000
MS = 1_000_000
ALL_LINEAR = [
    RETRY_LINEAR_TEN_MINUTES,
    RETRY_LINEAR_ONE_HOUR,
    RETRY_LINEAR_ONE_MINUTE,
    RETRY_LINEAR_TEN_SECONDS,
    RETRY_FOR_TESTING,
]


class FixedDraw(random.Random):
    """A random source whose ``randrange(d)`` returns a fixed offset (negative: counted from ``d``)."""

    def __init__(self, draw: int) -> None:
        super().__init__(0)
        self.draw = draw

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        assert stop is None
        return self.draw if self.draw >= 0 else start + self.draw


@pytest.mark.parametrize(
    ("policy", "length", "first_ns", "second_ns", "last_ns"),
    [
        (RETRY_LINEAR_TEN_MINUTES, 50, 60 * S, 70_800 * MS, 589_200 * MS),
        (RETRY_LINEAR_ONE_HOUR, 20, 600 * S, 750 * S, 3450 * S),
        (RETRY_LINEAR_ONE_MINUTE, 20, 1 * S, 3950 * MS, 57_050 * MS),
        (RETRY_LINEAR_TEN_SECONDS, 20, 500 * MS, 975 * MS, 9525 * MS),
        (RETRY_FOR_TESTING, 1, 1 * MS, None, 1 * MS),
    ],
)
def test_interval_tables(policy: LinearPolicy, length: int, first_ns: int, second_ns: int | None, last_ns: int) -> None:
    intervals = policy.intervals_ns
    assert len(intervals) == length
    assert intervals[0] == first_ns
    assert intervals[-1] == last_ns
    if second_ns is not None:
        assert intervals[1] == second_ns
        # Equal integer steps all the way.
        assert {b - a for a, b in itertools.pairwise(intervals)} == {second_ns - first_ns}


@pytest.mark.parametrize(
    ("policy", "jitter"),
    [
        (RETRY_LINEAR_TEN_MINUTES, 0.9),
        (RETRY_LINEAR_ONE_HOUR, 0.9),
        (RETRY_LINEAR_ONE_MINUTE, 0.5),
        (RETRY_LINEAR_TEN_SECONDS, 0.1),
        (RETRY_FOR_TESTING, 0.1),
    ],
)
def test_jitter_values(policy: LinearPolicy, jitter: float) -> None:
    assert policy.jitter == jitter


def test_default_is_ten_minutes() -> None:
    assert RETRY_DEFAULT is RETRY_LINEAR_TEN_MINUTES


def _round_ms(ns: float) -> int:
    return int(ns // MS + (1 if ns % MS >= MS / 2 else 0)) * MS


@pytest.mark.parametrize("policy", ALL_LINEAR[:4])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 19, 49])
def test_delays_stay_within_the_jitter_bounds(policy: LinearPolicy, n: int) -> None:
    rng = random.Random(n)
    base = policy.intervals_ns[min(n, len(policy.intervals_ns) - 1)]
    low, high = _round_ms(base * policy.jitter), _round_ms(base * (1 + policy.jitter))
    delays = [policy.delay_ns(n, rng) for _ in range(2000)]
    assert all(low <= delay <= high for delay in delays)
    assert all(delay % MS == 0 for delay in delays)
    # The draws spread over the range rather than sticking to one end.
    assert min(delays) < low + (high - low) // 10
    assert max(delays) > high - (high - low) // 10


def test_first_retry_of_the_default_policy() -> None:
    # The processor passes the delivery count, 1 on the first delivery: 70.8s x [0.9, 1.9).
    rng = random.Random(42)
    delays = [RETRY_DEFAULT.delay(1) for _ in range(200)] + [RETRY_DEFAULT.delay_ns(1, rng) / S for _ in range(200)]
    assert all(63.72 <= delay <= 134.52 for delay in delays)


@pytest.mark.parametrize(
    ("n", "expected_index"),
    [(-5, 0), (-1, 0), (0, 0), (1, 1), (49, 49), (50, 49), (1000, 49)],
)
def test_delivery_count_is_clamped_to_the_table(n: int, expected_index: int) -> None:
    base = RETRY_LINEAR_TEN_MINUTES.intervals_ns[expected_index]
    # With the largest draw the delay identifies the interval it was drawn from.
    assert RETRY_LINEAR_TEN_MINUTES.delay_ns(n, FixedDraw(-1)) == _round_ms(int(base * 0.9 + (base - 1)))


@pytest.mark.parametrize(
    ("policy", "draw", "expected_ns"),
    [
        # jitter 0: the delay is the draw, rounded to the nearest ms with halves going up (Go's Duration.Round).
        (LinearPolicy(steps=1, jitter=0.0, min_s=1, max_s=1), 1_499_999, 1 * MS),
        (LinearPolicy(steps=1, jitter=0.0, min_s=1, max_s=1), 1_500_000, 2 * MS),
        (LinearPolicy(steps=1, jitter=0.0, min_s=1, max_s=1), 2_500_000, 3 * MS),
        (LinearPolicy(steps=1, jitter=0.0, min_s=1, max_s=1), 999_999_999, 1 * S),
        # A delay rounding to 0 falls back to the first interval.
        (LinearPolicy(steps=1, jitter=0.0, min_s=1, max_s=1), 499_999, 1 * S),
        (RETRY_FOR_TESTING, 0, 1 * MS),
        (RETRY_FOR_TESTING, 399_999, 1 * MS),
        (RETRY_FOR_TESTING, 400_000, 1 * MS),
        (RETRY_FOR_TESTING, 999_999, 1 * MS),
        # 60s x 0.9 + draw.
        (RETRY_LINEAR_TEN_MINUTES, 0, 54 * S),
        (RETRY_LINEAR_TEN_MINUTES, 499_999, 54 * S),
        (RETRY_LINEAR_TEN_MINUTES, 500_000, 54 * S + MS),
        (RETRY_LINEAR_TEN_MINUTES, 60 * S - 1, 114 * S),
    ],
)
def test_rounding_to_milliseconds(policy: LinearPolicy, draw: int, expected_ns: int) -> None:
    assert policy.delay_ns(0, FixedDraw(draw)) == expected_ns


def test_delay_is_seconds() -> None:
    assert RETRY_FOR_TESTING.delay(1) == pytest.approx(0.001)
    assert retry_delay_ns(RETRY_FOR_TESTING, 3) == 1 * MS


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"steps": 0, "jitter": 0.1, "min_s": 1, "max_s": 2}, "steps must be an integer of at least 1"),
        ({"steps": True, "jitter": 0.1, "min_s": 1, "max_s": 2}, "steps must be an integer of at least 1"),
        ({"steps": 2.0, "jitter": 0.1, "min_s": 1, "max_s": 2}, "steps must be an integer of at least 1"),
        ({"steps": 2, "jitter": -0.1, "min_s": 1, "max_s": 2}, "jitter must be a finite number >= 0"),
        ({"steps": 2, "jitter": float("nan"), "min_s": 1, "max_s": 2}, "jitter must be a finite number >= 0"),
        ({"steps": 2, "jitter": 0.1, "min_s": 0, "max_s": 2}, "0 < min_s <= max_s"),
        ({"steps": 2, "jitter": 0.1, "min_s": 3, "max_s": 2}, "0 < min_s <= max_s"),
        ({"steps": 2, "jitter": 0.1, "min_s": -1, "max_s": 2}, "min_s must not be negative"),
    ],
)
def test_linear_policy_validation(kwargs: dict[str, float], reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        LinearPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tries", "base_s"),
    [(-3, 1.0), (0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (50, 60.0), (100_000, 60.0)],
)
def test_exponential_policy(tries: int, base_s: float) -> None:
    policy = ExponentialPolicy(initial_s=1, max_s=60)
    rng = random.Random(tries)
    delays = [policy.delay(tries, rng) for _ in range(500)]
    assert all(base_s * 0.9 <= delay <= base_s * 1.1 for delay in delays)
    assert ExponentialPolicy(initial_s=1, max_s=60, jitter=0).delay(tries) == base_s


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"initial_s": 0, "max_s": 1}, "0 < initial_s <= max_s"),
        ({"initial_s": 2, "max_s": 1}, "0 < initial_s <= max_s"),
        ({"initial_s": 1, "max_s": 2, "multiplier": 0.5}, "multiplier must be >= 1"),
        ({"initial_s": 1, "max_s": 2, "jitter": 1.0}, r"jitter must be in \[0, 1\)"),
        ({"initial_s": 1, "max_s": 2, "jitter": -0.1}, r"jitter must be in \[0, 1\)"),
    ],
)
def test_exponential_policy_validation(kwargs: dict[str, float], reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        ExponentialPolicy(**kwargs)


class Fixed:
    """A user-written policy: any object with ``delay(tries)`` will do."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def delay(self, tries: int) -> float:
        return self.seconds * tries


def test_custom_policies_satisfy_the_protocol() -> None:
    policies: list[RetryPolicy] = [Fixed(0.25), ExponentialPolicy(initial_s=1, max_s=2), *ALL_LINEAR]
    assert all(isinstance(policy, RetryPolicy) for policy in policies)
    assert retry_delay_ns(Fixed(0.25), 3) == 750 * MS


@pytest.mark.parametrize("seconds", [-1.0, float("nan"), float("inf")])
def test_bad_custom_delays_are_reported(seconds: float) -> None:
    with pytest.raises(ConfigurationError, match="delays must be finite and >= 0"):
        retry_delay_ns(Fixed(seconds), 1)


@pytest.mark.parametrize(
    ("name", "policy"),
    [
        ("default", RETRY_LINEAR_TEN_MINUTES),
        ("10m", RETRY_LINEAR_TEN_MINUTES),
        ("1h", RETRY_LINEAR_ONE_HOUR),
        ("1m", RETRY_LINEAR_ONE_MINUTE),
    ],
)
def test_lookup(name: str, policy: LinearPolicy) -> None:
    assert lookup_retry_policy(name) is policy
    assert RETRY_POLICIES[name] is policy


def test_names_are_sorted() -> None:
    assert retry_policy_names() == ["10m", "1h", "1m", "default"]


@pytest.mark.parametrize("name", ["", "x", "10M", "Default", "testing"])
def test_unknown_names(name: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        lookup_retry_policy(name)
    assert str(info.value) == f"unknown retry policy {name!r}: use one of 10m, 1h, 1m, default"


def test_policies_are_frozen() -> None:
    with pytest.raises(AttributeError):
        RETRY_DEFAULT.steps = 3  # type: ignore[misc]
