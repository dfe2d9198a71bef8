"""Shared pieces of the benchmark: settings, results, timing and statistics."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import nats
from nats.aio.client import Client as NATS

from asyncjobs.constants import DEFAULT_CONCURRENCY
from asyncjobs.storage import PIPELINE_CHUNK

QUEUE: Final = "BENCH"
"""The asyncjobs queue every task scenario uses (stream ``CHORIA_AJ_Q_BENCH``)."""
TASK_TYPE: Final = "bench:noop"
"""The task type of every benchmark task; its handler does nothing."""
CONCURRENCY: Final = DEFAULT_CONCURRENCY
"""Handler slots, as the library's default ``concurrency``."""
PIPELINE_WINDOW: Final = PIPELINE_CHUNK
"""Requests in flight when a scenario pipelines (the library's ``enqueue_many`` chunk)."""
REQUEST_TIMEOUT_S: Final = 10.0
POLL_INTERVAL_S: Final = 0.002


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What one benchmark run does."""

    tasks: int
    """Tasks (or messages) per measured run."""
    runs: int
    """Measured runs per scenario; the median is reported."""
    warmup: int
    """Tasks pushed through each scenario before measuring."""
    sequential_tasks: int
    """Tasks enqueued one at a time with ``client.enqueue`` per run."""
    latency_rate: float
    """Tasks per second enqueued in the latency scenario."""
    latency_seconds: float
    """How long the latency scenario enqueues for, per run."""

    @property
    def scenario_timeout_s(self) -> float:
        """A bound on one measured run: generous, but a stall fails the benchmark instead of hanging it."""
        return 60.0 + self.tasks / 100


@dataclass(kw_only=True)
class Figure:
    """One reported number, with the value of every measured run."""

    name: str
    unit: str
    values: list[float] = field(default_factory=list)
    higher_is_better: bool = True

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")


@dataclass
class Results:
    """Every figure of a run, in report order, keyed by a short id."""

    figures: dict[str, Figure] = field(default_factory=dict)

    def add(self, key: str, name: str, unit: str, value: float, *, higher_is_better: bool = True) -> None:
        figure = self.figures.setdefault(key, Figure(name=name, unit=unit, higher_is_better=higher_is_better))
        figure.values.append(value)

    def median(self, key: str) -> float | None:
        figure = self.figures.get(key)
        return None if figure is None or not figure.values else figure.median


def rate(count: int, seconds: float) -> float:
    """Items per second."""
    return count / seconds if seconds > 0 else float("inf")


def percentile(samples: list[float], pct: float) -> float:
    """The ``pct`` percentile (0 to 100) of ``samples`` by the nearest-rank method."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(1, round(pct / 100 * len(ordered) + 0.5))
    return ordered[min(rank, len(ordered)) - 1]


async def timed(action: Awaitable[object]) -> float:
    """Await ``action`` and return the wall time it took in seconds."""
    started = time.perf_counter()
    await action
    return time.perf_counter() - started


async def connect(url: str) -> NATS:
    """A plain nats-py connection for the raw scenarios."""
    return await nats.connect(url, max_reconnect_attempts=0, pending_size=64 * 1024 * 1024)


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float) -> None:
    """Poll ``check`` until it is true.

    Raises:
        TimeoutError: it stayed false for ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark stalled: {what} not reached within {timeout_s:.0f}s")
        await asyncio.sleep(POLL_INTERVAL_S)
