"""Retry policies: how long a failed task waits before JetStream delivers it again.

The linear policies reproduce the Go implementation's named policies to the nanosecond (docs/protocol.md, Retry
policies), so a Python worker and a Go worker configured with the same name back off the same way. Any object with a
``delay(tries)`` method is a policy, so users can bring their own (:class:`ExponentialPolicy` is one).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Protocol, runtime_checkable

from asyncjobs.errors import ConfigurationError
from asyncjobs.wiretime import NS_PER_SECOND, ns_to_seconds, to_ns

__all__ = [
    "RETRY_DEFAULT",
    "RETRY_FOR_TESTING",
    "RETRY_LINEAR_ONE_HOUR",
    "RETRY_LINEAR_ONE_MINUTE",
    "RETRY_LINEAR_TEN_MINUTES",
    "RETRY_LINEAR_TEN_SECONDS",
    "RETRY_POLICIES",
    "ExponentialPolicy",
    "LinearPolicy",
    "RetryPolicy",
    "lookup_retry_policy",
    "retry_delay_ns",
    "retry_policy_names",
]

_NS_PER_MS: Final = 1_000_000
# One generator for every policy; jitter needs spread, not secrecy, so the OS-seeded Mersenne Twister will do.
_RNG: Final = random.Random()


@runtime_checkable
class RetryPolicy(Protocol):
    """Anything that can say how long to wait before the next delivery of a failed task."""

    def delay(self, tries: int) -> float:
        """Return the seconds to wait before the next delivery.

        Args:
            tries: the JetStream delivery count of the failed attempt, 1 on the first delivery.
        """
        ...


def _round_to_ms(ns: int) -> int:
    # Go's Duration.Round(time.Millisecond): to the nearest millisecond, halves away from zero.
    remainder = ns % _NS_PER_MS
    return ns - remainder if remainder + remainder < _NS_PER_MS else ns + _NS_PER_MS - remainder


@dataclass(frozen=True, kw_only=True)
class LinearPolicy:
    """Intervals growing in equal steps from ``min_s`` to just below ``max_s``, with random jitter.

    For ``n`` the delay is drawn uniformly from ``[jitter·d, (1 + jitter)·d)`` where ``d = intervals_ns[n]``
    (``n`` clamped to the table) and rounded to the millisecond, exactly as the Go implementation does.
    """

    steps: int
    """Number of intervals in the table, at least 1."""
    jitter: float
    """Factor of the interval added as the lower bound of the random delay, at least 0."""
    min_s: float
    """The first interval in seconds, greater than 0."""
    max_s: float
    """The upper end of the range in seconds; the last interval is one step below it."""
    _intervals_ns: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # type() rather than isinstance(): True is an int too, and no sensible step count.
        if type(self.steps) is not int or self.steps < 1:
            raise ConfigurationError(f"retry policy steps must be an integer of at least 1, got {self.steps!r}")
        if isinstance(self.jitter, bool) or not math.isfinite(self.jitter) or self.jitter < 0:
            raise ConfigurationError(f"retry policy jitter must be a finite number >= 0, got {self.jitter!r}")
        min_ns = to_ns(self.min_s, name="retry policy min_s")
        max_ns = to_ns(self.max_s, name="retry policy max_s")
        if not 0 < min_ns <= max_ns:
            raise ConfigurationError(
                f"retry policy needs 0 < min_s <= max_s, got min_s={self.min_s!r} max_s={self.max_s!r}"
            )
        # Integer nanosecond steps, as Go divides time.Duration values: 540s / 50 is exactly 10.8s.
        step_ns = (max_ns - min_ns) // self.steps
        object.__setattr__(self, "_intervals_ns", tuple(min_ns + i * step_ns for i in range(self.steps)))

    @property
    def intervals_ns(self) -> tuple[int, ...]:
        """The base intervals in nanoseconds, indexed by delivery count."""
        return self._intervals_ns

    def delay_ns(self, n: int, rng: random.Random | None = None) -> int:
        """Return the jittered delay for delivery count ``n`` in nanoseconds, a whole number of milliseconds.

        Args:
            n: the delivery count; values past the table use its last interval, negative values its first.
            rng: the random source; a shared module generator when omitted (tests pass a seeded one).
        """
        intervals = self._intervals_ns
        base = intervals[min(max(n, 0), len(intervals) - 1)]
        draw = (rng or _RNG).randrange(base)
        # Go computes float64(d)*Jitter + float64(rand) and converts back by truncation; do the same so
        # the rounding edge cases match.
        delay = _round_to_ms(int(base * self.jitter + draw))
        return delay or intervals[0]

    def delay(self, tries: int) -> float:
        """Return the jittered delay for delivery count ``tries`` in seconds."""
        return ns_to_seconds(self.delay_ns(tries))


@dataclass(frozen=True, kw_only=True)
class ExponentialPolicy:
    """Delays doubling (by ``multiplier``) from ``initial_s`` up to ``max_s``, with ± ``jitter`` randomness.

    Not part of the Go implementation: Go workers sharing the queue keep their own policy, which is fine since
    each worker only decides the delay of the deliveries it failed.
    """

    initial_s: float
    """Delay after the first failed delivery, in seconds, greater than 0."""
    max_s: float
    """Largest delay before jitter, in seconds, at least ``initial_s``."""
    multiplier: float = 2.0
    """Growth factor per delivery, at least 1."""
    jitter: float = 0.1
    """Relative randomness: the delay is drawn from ``[(1 - jitter)·d, (1 + jitter)·d]``; 0 <= jitter < 1."""

    def __post_init__(self) -> None:
        initial_ns = to_ns(self.initial_s, name="exponential policy initial_s")
        if initial_ns <= 0 or to_ns(self.max_s, name="exponential policy max_s") < initial_ns:
            raise ConfigurationError(
                f"exponential policy needs 0 < initial_s <= max_s, got initial_s={self.initial_s!r} "
                f"max_s={self.max_s!r}"
            )
        if not math.isfinite(self.multiplier) or self.multiplier < 1:
            raise ConfigurationError(f"exponential policy multiplier must be >= 1, got {self.multiplier!r}")
        if not math.isfinite(self.jitter) or not 0 <= self.jitter < 1:
            raise ConfigurationError(f"exponential policy jitter must be in [0, 1), got {self.jitter!r}")

    def delay(self, tries: int, rng: random.Random | None = None) -> float:
        """Return the jittered delay in seconds after delivery ``tries`` (1 gives ``initial_s``).

        Args:
            tries: the JetStream delivery count of the failed attempt.
            rng: the random source; a shared module generator when omitted.
        """
        try:
            base = min(float(self.max_s), float(self.initial_s) * self.multiplier ** (max(tries, 1) - 1))
        except OverflowError:
            base = float(self.max_s)
        return base * (rng or _RNG).uniform(1 - self.jitter, 1 + self.jitter)


def retry_delay_ns(policy: RetryPolicy, tries: int) -> int:
    """Return a policy's delay for delivery count ``tries`` as whole nanoseconds, the unit NAK delays use.

    :class:`LinearPolicy` is asked for nanoseconds directly, so no float rounding creeps in.

    Raises:
        ConfigurationError: a custom policy returned a negative or non-finite delay.
    """
    if isinstance(policy, LinearPolicy):
        return policy.delay_ns(tries)
    seconds = policy.delay(tries)
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigurationError(f"retry policy {policy!r} returned {seconds!r}: delays must be finite and >= 0")
    return round(seconds * NS_PER_SECOND)


RETRY_LINEAR_TEN_MINUTES: Final = LinearPolicy(steps=50, jitter=0.90, min_s=60, max_s=600)
"""50 steps from 1 to 10 minutes: 60 s, 70.8 s, ... 589.2 s."""
RETRY_LINEAR_ONE_HOUR: Final = LinearPolicy(steps=20, jitter=0.90, min_s=600, max_s=3600)
"""20 steps from 10 minutes to 1 hour: 600 s, 750 s, ... 3450 s."""
RETRY_LINEAR_ONE_MINUTE: Final = LinearPolicy(steps=20, jitter=0.5, min_s=1, max_s=60)
"""20 steps from 1 second to 1 minute: 1 s, 3.95 s, ... 57.05 s."""
RETRY_DEFAULT: Final = RETRY_LINEAR_TEN_MINUTES
"""The policy used when none is configured."""
RETRY_LINEAR_TEN_SECONDS: Final = LinearPolicy(steps=20, jitter=0.1, min_s=0.5, max_s=10)
"""Internal: 20 steps from 0.5 to 10 seconds, for sleeping after a failed poll."""
RETRY_FOR_TESTING: Final = LinearPolicy(steps=1, jitter=0.1, min_s=0.001, max_s=0.01)
"""Internal: a single 1 ms interval, so tests see retries at once."""

RETRY_POLICIES: Final[Mapping[str, LinearPolicy]] = MappingProxyType(
    {
        "default": RETRY_DEFAULT,
        "10m": RETRY_LINEAR_TEN_MINUTES,
        "1h": RETRY_LINEAR_ONE_HOUR,
        "1m": RETRY_LINEAR_ONE_MINUTE,
    }
)
"""The policies selectable by name, with the names the Go implementation and ``ajc`` use."""


def retry_policy_names() -> list[str]:
    """Return the names of :data:`RETRY_POLICIES`, sorted."""
    return sorted(RETRY_POLICIES)


def lookup_retry_policy(name: str) -> LinearPolicy:
    """Return the named retry policy.

    Raises:
        ConfigurationError: no policy has that name.
    """
    try:
        return RETRY_POLICIES[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown retry policy {name!r}: use one of {', '.join(retry_policy_names())}"
        ) from None
