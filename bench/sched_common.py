"""Shared pieces of the scheduler benchmark: settings, the report rows, and reading when tasks were stored."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, TypeVar

import orjson

import asyncjobs
from asyncjobs.constants import TASK_SUBJECT_PREFIX, TASKS_STREAM
from asyncjobs.wiretime import WireTime, parse_time
from asyncjobs_scheduler import Schedule, Schedules
from bench.common import percentile

QUEUE: Final = "BENCH_SCHED"
"""The queue of every scheduler scenario."""
TARGETS_MS: Final = {"same_p99": 500.0, "spread_p99": 100.0, "graceful_handover": 1000.0}
"""The targets of issue 7, in milliseconds, by figure key."""
ADD_CONCURRENCY: Final = 100
READ_CONCURRENCY: Final = 256
POLL_S: Final = 0.25
STEP_TIMEOUT_S: Final = 120.0
"""A bound on every wait (set-up, firing, a handover); a stall fails the benchmark instead of hanging it."""
NS_PER_MS: Final = 1_000_000
_T = TypeVar("_T")


@dataclass(kw_only=True)
class Report:
    """Every figure, in report order: name -> (value, unit, detail)."""

    rows: list[tuple[str, str, str]] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, key: str, name: str, value: str, detail: str = "", figure: float | None = None) -> None:
        self.rows.append((name, value, detail))
        if figure is not None:
            self.figures[key] = figure


def lag_summary(lags_ns: list[int]) -> tuple[float, float, float]:
    samples = [ns / NS_PER_MS for ns in lags_ns]
    return percentile(samples, 50), percentile(samples, 99), max(samples)


async def bounded(items: list[_T], limit: int, one: Callable[[_T], Awaitable[Any]]) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def run(item: _T) -> Any:
        async with gate:
            return await one(item)

    return await asyncio.gather(*(run(item) for item in items))


async def poll(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = STEP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"scheduler benchmark stalled: {what} not reached within {timeout_s:.0f}s")
        await asyncio.sleep(POLL_S)


async def stored_ns(client: asyncjobs.Client, task_ids: list[str]) -> dict[str, int]:
    """The JetStream time (unix ns) of each task's last stored message; missing tasks are left out."""
    api = f"$JS.API.STREAM.MSG.GET.{TASKS_STREAM}"

    async def one(task_id: str) -> tuple[str, int | None]:
        body = orjson.dumps({"last_by_subj": TASK_SUBJECT_PREFIX + task_id})
        reply = orjson.loads((await client.nc.request(api, body, timeout=10)).data)
        message = reply.get("message")
        return task_id, None if message is None else parse_time(message["time"]).unix_ns

    found = await bounded(task_ids, READ_CONCURRENCY, one)
    return {task_id: ns for task_id, ns in found if ns is not None}


async def stored_count(client: asyncjobs.Client) -> int:
    return (await client.admin.tasks_info()).tasks


async def add_all(client: asyncjobs.Client, schedules: list[Schedule]) -> tuple[list[Schedule], float]:
    store = Schedules(client)
    started = time.perf_counter()
    stored = await bounded(schedules, ADD_CONCURRENCY, store.add)
    return stored, time.perf_counter() - started


async def count_at_least(client: asyncjobs.Client, count: int) -> bool:
    return await stored_count(client) >= count


def unix_ns(when: datetime) -> int:
    return WireTime.from_datetime(when).unix_ns
