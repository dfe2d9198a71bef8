"""The clocks: a ManualClock moves only when told and wakes its sleepers without real sleeping."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest

from asyncjobs import ConfigurationError
from asyncjobs_scheduler.clock import Clock, ManualClock, SystemClock

START = datetime(2026, 3, 8, 6, 0, tzinfo=UTC)


def test_both_clocks_are_clocks() -> None:
    assert isinstance(SystemClock(), Clock) and isinstance(ManualClock(START), Clock)


async def test_system_clock() -> None:
    clock = SystemClock()
    now = clock.now()
    assert now.tzinfo is UTC and abs(now - datetime.now(UTC)) < timedelta(seconds=5)
    await clock.sleep_until(now - timedelta(seconds=1))  # in the past: returns at once
    await clock.sleep_until(clock.now() + timedelta(milliseconds=20))
    with pytest.raises(ConfigurationError, match="no timezone"):
        await clock.sleep_until(datetime(2026, 1, 1))


async def test_manual_clock_wakes_sleepers_in_order() -> None:
    clock = ManualClock(START.astimezone(timezone(timedelta(hours=-5))))
    assert clock.now() == START and clock.now().tzinfo is UTC
    woken: list[str] = []

    async def sleeper(name: str, seconds: int) -> None:
        await clock.sleep_until(START + timedelta(seconds=seconds))
        woken.append(name)

    tasks = [asyncio.create_task(sleeper("b", 20)), asyncio.create_task(sleeper("a", 10))]
    await clock.wait_for_sleepers(2)
    assert clock.sleepers == 2
    clock.advance(5)
    await asyncio.sleep(0)
    assert woken == []
    clock.advance(timedelta(seconds=5))
    await asyncio.sleep(0)
    assert woken == ["a"] and clock.sleepers == 1
    clock.set(START + timedelta(hours=1))
    await asyncio.gather(*tasks)
    assert woken == ["a", "b"] and clock.sleepers == 0
    await clock.sleep_until(START)  # already past


async def test_manual_clock_cancelled_sleeper_is_forgotten() -> None:
    clock = ManualClock(START)
    task = asyncio.create_task(clock.sleep_until(START + timedelta(seconds=1)))
    await clock.wait_for_sleepers(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.sleepers == 0
    clock.advance(2)


def test_manual_clock_refuses_naive_times_and_going_back_by_advance() -> None:
    with pytest.raises(ConfigurationError, match="no timezone"):
        ManualClock(datetime(2026, 1, 1))
    clock = ManualClock(START)
    with pytest.raises(ConfigurationError, match="set"):
        clock.advance(-1)
    clock.set(START - timedelta(days=1))  # set() may go back (a stepped wall clock)
    assert clock.now() == START - timedelta(days=1)
