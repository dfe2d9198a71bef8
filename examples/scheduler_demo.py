"""Scheduler demo: two schedulers share the firing of three schedules, and one of them hands over mid-way.

Run it with ``python examples/scheduler_demo.py``. It starts an embedded nats-server unless ``--url`` names one, adds
three schedules on the queue ``SCHED_DEMO`` (``@every 2s``, ``*/1 * * * *`` and a paused ``@every 1s``), runs two
schedulers and a worker, and prints each task as the worker receives it. After 40% of ``--duration`` it stops
whichever scheduler leads, as SIGTERM would: the other takes over and fires the next due time. The summary shows
that no due time of the ``@every 2s`` schedule was skipped or fired twice.

The logic lives in :func:`run_demo`; ``tests/scheduler/test_scheduler_demo.py`` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TextIO

import asyncjobs
from asyncjobs.server import NatsServer
from asyncjobs_scheduler import Schedule, ScheduleNotFound, Scheduler, Schedules

QUEUE = "SCHED_DEMO"
EVERY = Schedule("demo_every_2s", "@every 2s", "demo:tick")
MINUTELY = Schedule("demo_minutely", "*/1 * * * *", "demo:minute")
PAUSED = Schedule("demo_paused", "@every 1s", "demo:tick", paused=True)
SCHEDULES = (EVERY, MINUTELY, PAUSED)
DEFAULT_DURATION_S = 15.0


@dataclass
class Summary:
    """What a demo run saw."""

    fired: dict[str, list[str]] = field(default_factory=dict)
    """Task ids the worker received, per schedule, in due-time order."""
    duplicates: list[str] = field(default_factory=list)
    """Task ids the worker received more than once."""
    gaps: list[str] = field(default_factory=list)
    """Task ids of the ``@every 2s`` schedule missing between its first and last task."""
    leaders: list[str] = field(default_factory=list)
    """The schedulers that led, in order."""

    @property
    def handover(self) -> bool:
        """Whether the leadership passed from one scheduler to the other."""
        return len(self.leaders) >= 2 and self.leaders[0] != self.leaders[-1]

    @property
    def ok(self) -> bool:
        """Tasks fired, none twice, none missing, the paused schedule silent, and a handover."""
        return (
            bool(self.fired.get(EVERY.name))
            and not self.duplicates
            and not self.gaps
            and self.handover
            and (not self.fired.get(PAUSED.name))
        )


@contextlib.asynccontextmanager
async def demo_server(url: str | None) -> AsyncIterator[str]:
    """Yields a server URL: ``url``, or an embedded nats-server's."""
    if url is not None:
        yield url
        return
    async with NatsServer() as server:
        yield server.url


async def run_demo(url: str | None, duration: float = DEFAULT_DURATION_S, *, out: TextIO | None = None) -> Summary:
    """Run two schedulers and a worker for ``duration`` seconds, stopping the leader after 40% of it.

    Args:
        url: a NATS server with JetStream, or ``None`` to start an embedded one.
        duration: seconds to run, at least 6 (three ``@every 2s`` due times).
        out: where to print what happens; ``None`` for silence.
    """
    summary = Summary()
    received: Counter[str] = Counter()
    started = time.monotonic()

    def say(text: str) -> None:
        if out is not None:
            out.write(f"{time.monotonic() - started:5.1f}s  {text}\n")
            out.flush()

    async with contextlib.AsyncExitStack() as stack:
        server_url = await stack.enter_async_context(demo_server(url))
        client = await stack.enter_async_context(await asyncjobs.connect(server_url, queue=QUEUE))
        schedules = Schedules(client)
        for schedule in SCHEDULES:  # left by an earlier run against the same server
            with contextlib.suppress(ScheduleNotFound):
                await schedules.remove(schedule.name)
        for schedule in SCHEDULES:
            stored = await schedules.add(schedule)
            say(f"added {stored.name:<14} {stored.wire_spec!r}{' (paused)' if stored.paused else ''}")

        router = asyncjobs.Router()

        @router.handler("demo:")
        async def record(task: asyncjobs.Task) -> None:
            name, _, _ = task.id.partition(":")
            received[task.id] += 1
            summary.fired.setdefault(name, []).append(task.id)
            due = task.created_at.to_datetime().astimezone(UTC) if task.created_at else None
            say(f"task {task.id:<34} due {due:%H:%M:%S}  leader {summary.leaders[-1] if summary.leaders else '?'}")

        # The worker has a connection of its own, like the schedulers; the first client created the queue.
        own = await stack.enter_async_context(
            await asyncjobs.connect(server_url, queue=asyncjobs.Queue(QUEUE, no_create=True))
        )
        worker = asyncio.create_task(own.run(router))
        schedulers: dict[str, tuple[Scheduler, asyncio.Task[None]]] = {}
        for name in ("demo-a", "demo-b"):
            own = await stack.enter_async_context(await asyncjobs.connect(server_url, queue=QUEUE))
            scheduler = Scheduler(own, name=name)
            schedulers[name] = (scheduler, asyncio.create_task(scheduler.run()))

        stop_at, end_at = started + duration * 0.4, started + duration
        stopped = False
        while time.monotonic() < end_at:
            leader = next((name for name, (s, _) in schedulers.items() if s.is_leader), None)
            if leader is not None and (not summary.leaders or summary.leaders[-1] != leader):
                summary.leaders.append(leader)
                say(f"scheduler {leader} leads")
            if leader is not None and not stopped and time.monotonic() >= stop_at:
                stopped = True
                say(f"stopping scheduler {leader} (as SIGTERM would): it hands the leadership over")
                _, running = schedulers.pop(leader)
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
            await asyncio.sleep(0.05)

        for _, running in schedulers.values():
            running.cancel()
        worker.cancel()
        await asyncio.gather(worker, *(running for _, running in schedulers.values()), return_exceptions=True)
        for schedule in SCHEDULES:
            await schedules.remove(schedule.name)

    summary.duplicates = sorted(task_id for task_id, count in received.items() if count > 1)
    for name, ids in summary.fired.items():
        summary.fired[name] = sorted(set(ids))
    every = summary.fired.get(EVERY.name, [])
    if every:  # the ids between the first and the last, 2 s apart: the ones not received were missed
        due, last = _due(every[0]), _due(every[-1])
        while due < last:
            due += timedelta(seconds=2)
            if EVERY.task_id(due) not in every:
                summary.gaps.append(EVERY.task_id(due))
    return summary


def _due(task_id: str) -> datetime:
    """The due time in a scheduled task's id, ``<name>:<YYYYMMDDTHHMMSSZ>``."""
    return datetime.strptime(task_id.rpartition(":")[2], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def print_summary(summary: Summary, out: TextIO) -> None:
    """Print what the run showed."""
    out.write("\nsummary\n")
    for schedule in SCHEDULES:
        out.write(f"  {schedule.name:<14} {len(summary.fired.get(schedule.name, [])):>3} tasks\n")
    out.write(f"  leaders        {' -> '.join(summary.leaders) or 'none'}\n")
    out.write(f"  duplicates     {summary.duplicates or 'none'}\n")
    out.write(f"  missed         {summary.gaps or 'none'}\n")
    out.write("every due time fired exactly once across the handover\n" if summary.ok else "UNEXPECTED OUTCOME\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", help="use this NATS server (with JetStream) instead of an embedded one")
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION_S, help="seconds (default %(default)s)")
    args = parser.parse_args(argv)
    if args.duration < 6:
        parser.error("--duration must be at least 6 seconds")
    try:
        summary = asyncio.run(run_demo(args.url, args.duration, out=sys.stdout))
    except KeyboardInterrupt:
        return 130
    print_summary(summary, sys.stdout)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
