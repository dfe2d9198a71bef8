"""Where the scheduler gets its time from.

All scheduling time comes from a :class:`Clock`, so tests drive a :class:`ManualClock` across DST days, downtime and
failovers without sleeping, and production uses the :class:`SystemClock`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol, runtime_checkable

from asyncjobs import ConfigurationError

__all__ = ["Clock", "ManualClock", "SystemClock"]

# The longest single real sleep: a wall clock stepped by NTP or an operator is noticed within this many seconds.
_MAX_SLEEP_S: Final = 30.0


def _aware_utc(when: datetime, what: str) -> datetime:
    if when.utcoffset() is None:
        raise ConfigurationError(f"{what} {when.isoformat()} has no timezone: pass an aware datetime, e.g. in UTC")
    return when.astimezone(UTC)


@runtime_checkable
class Clock(Protocol):
    """The source of scheduling time."""

    def now(self) -> datetime:
        """Return the current time as an aware UTC ``datetime``."""
        ...

    async def sleep_until(self, when: datetime) -> None:
        """Return once :meth:`now` has reached ``when`` (at once if it already has).

        Raises:
            asyncjobs.ConfigurationError: ``when`` is naive.
        """
        ...


class SystemClock:
    """The real wall clock (UTC), sleeping with the event loop."""

    def now(self) -> datetime:
        """Return the current wall-clock time in UTC."""
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime) -> None:
        """Sleep until the wall clock reaches ``when``.

        Sleeps in slices of at most 30 seconds and re-reads the clock after each, so a stepped wall clock delays
        or hastens the wake-up by at most one slice.

        Raises:
            asyncjobs.ConfigurationError: ``when`` is naive.
        """
        target = _aware_utc(when, "sleep_until time")
        # Polling is the point: nothing signals a change of the wall clock, so it is re-read after every slice.
        while (remaining := (target - self.now()).total_seconds()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(min(remaining, _MAX_SLEEP_S))


class ManualClock:
    """A clock for tests: time moves only when the test moves it, and sleepers wake without real sleeping.

    Args:
        start: the initial time, an aware ``datetime`` (kept in UTC).

    Raises:
        asyncjobs.ConfigurationError: ``start`` is naive.
    """

    def __init__(self, start: datetime) -> None:
        self._now = _aware_utc(start, "ManualClock start")
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._changed: asyncio.Event | None = None

    def now(self) -> datetime:
        """Return the clock's current time (UTC)."""
        return self._now

    @property
    def sleepers(self) -> int:
        """How many coroutines are waiting in :meth:`sleep_until`."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    async def sleep_until(self, when: datetime) -> None:
        """Wait until the clock is moved to ``when`` or later; yield once to the loop if it already is.

        Raises:
            asyncjobs.ConfigurationError: ``when`` is naive.
        """
        target = _aware_utc(when, "sleep_until time")
        if target <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (target, next(self._order), future))
        self._notify()
        try:
            await future
        finally:
            if not future.done():  # cancelled: forget it
                future.cancel()

    def set(self, when: datetime) -> None:
        """Move the clock to ``when`` (forwards or backwards) and wake the sleepers whose time has come.

        The woken coroutines resume when the caller next yields to the event loop.

        Raises:
            asyncjobs.ConfigurationError: ``when`` is naive.
        """
        self._now = _aware_utc(when, "ManualClock time")
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
        self._notify()

    def advance(self, seconds: float | timedelta) -> None:
        """Move the clock forward by ``seconds`` and wake the sleepers whose time has come.

        Raises:
            asyncjobs.ConfigurationError: ``seconds`` is negative.
        """
        step = seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)
        if step < timedelta(0):
            raise ConfigurationError(f"ManualClock.advance({seconds!r}): use set() to move the clock backwards")
        self.set(self._now + step)

    async def wait_for_sleepers(self, count: int = 1) -> None:
        """Wait until at least ``count`` coroutines sleep on this clock (e.g. the scheduler is idle)."""
        while self.sleepers < count:
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None
