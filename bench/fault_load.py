"""The load of a fault run: a paced producer that retries every enqueue, and a tracker of every task's fate."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

import asyncjobs

RETRY_FIRST_S: Final = 0.1
RETRY_MAX_S: Final = 1.0
"""The producer waits this long at most between two attempts to enqueue the same task."""
GIVE_UP: Final = (asyncjobs.DuplicateTaskError, asyncjobs.InvalidTaskStateError)
"""Errors after which enqueueing the same Task object again cannot succeed: the producer moves on."""
READ_CONCURRENCY: Final = 32
"""Task loads the tracker keeps in flight at once."""
POLL_S: Final = 0.5


@dataclass(kw_only=True)
class ProducerStats:
    """What the producer did."""

    planned: int
    offered: int = 0
    """Tasks it tried to enqueue at least once."""
    accepted: int = 0
    """Tasks whose enqueue eventually returned without an error."""
    errors: Counter[str] = field(default_factory=Counter)
    """Errors seen, by class name, over every attempt."""
    first_error: dict[str, str] = field(default_factory=dict)
    """The first message seen of each error class."""
    gave_up: dict[str, str] = field(default_factory=dict)
    """Tasks it stopped retrying, with the error that stopped it."""
    offered_at: dict[str, float] = field(default_factory=dict)
    """When each task was first tried, in seconds on the run's clock."""
    finished_at: float | None = None


class Producer:
    """Enqueues ``tasks`` one at a time, spread evenly over ``load_s`` seconds, retrying each on error.

    A failed enqueue is retried with the same :class:`asyncjobs.Task` object, so the library's handling of a
    repeated enqueue is exercised, until it succeeds, raises one of :data:`GIVE_UP`, or ``deadline_s`` passes.
    Tasks not tried by then are not offered at all.

    Args:
        client: the producing client.
        tasks: the tasks, enqueued in order.
        load_s: the seconds over which to spread them.
        deadline_s: when to stop, in seconds on ``clock``.
        clock: the run's clock, in seconds.
        on_offer: called with each task id before its first attempt.
    """

    def __init__(
        self,
        client: asyncjobs.Client,
        tasks: list[asyncjobs.Task],
        *,
        load_s: float,
        deadline_s: float,
        clock: Callable[[], float],
        on_offer: Callable[[str], None],
    ) -> None:
        self.client = client
        self.tasks = tasks
        self.load_s = load_s
        self.deadline_s = deadline_s
        self.clock = clock
        self.on_offer = on_offer
        self.stats = ProducerStats(planned=len(tasks))

    async def run(self) -> ProducerStats:
        started = self.clock()
        step = self.load_s / max(1, len(self.tasks))
        try:
            for i, task in enumerate(self.tasks):
                delay = started + i * step - self.clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self.clock() > self.deadline_s:
                    break
                self.on_offer(task.id)
                self.stats.offered += 1
                self.stats.offered_at[task.id] = self.clock()
                await self._enqueue(task)
        finally:
            self.stats.finished_at = self.clock()
        return self.stats

    async def _enqueue(self, task: asyncjobs.Task) -> None:
        wait = RETRY_FIRST_S
        while True:
            try:
                await self.client.enqueue(task)
            except asyncjobs.AsyncJobsError as exc:
                kind = type(exc).__name__
                self.stats.errors[kind] += 1
                self.stats.first_error.setdefault(kind, str(exc))
                if isinstance(exc, GIVE_UP) or self.clock() > self.deadline_s:
                    self.stats.gave_up[task.id] = f"{kind}: {exc}"
                    return
                await asyncio.sleep(wait)
                wait = min(RETRY_MAX_S, wait * 2)
            else:
                self.stats.accepted += 1
                return


@dataclass(frozen=True, kw_only=True)
class Leftover:
    """A task that did not reach a final state: what the store says about it at the end."""

    id: str
    state: str
    """Its state, or ``missing`` when the store has no such task, or ``unreadable``."""
    tries: int = 0
    last_err: str = ""


class Tracker:
    """Follows the offered tasks until each is in a final state (``asyncjobs.TERMINAL_STATES``).

    Args:
        client: a client to read tasks with.
        clock: the run's clock, in seconds.
    """

    def __init__(self, client: asyncjobs.Client, *, clock: Callable[[], float]) -> None:
        self.client = client
        self.clock = clock
        self.unfinished: set[str] = set()
        self.final: dict[str, asyncjobs.Task] = {}
        self.final_at: dict[str, float] = {}
        """When each task was first seen final, in seconds on the run's clock (up to one poll late)."""
        self.read_errors = 0

    def expect(self, task_id: str) -> None:
        """Follow one more task."""
        self.unfinished.add(task_id)

    async def check(self, ids: Iterable[str]) -> None:
        """Load the given unfinished tasks and record those now final; a failed load counts as "not yet"."""
        limit = asyncio.Semaphore(READ_CONCURRENCY)

        async def one(task_id: str) -> None:
            async with limit:
                try:
                    task = await self.client.get_task(task_id)
                except asyncjobs.AsyncJobsError:
                    self.read_errors += 1
                    return
            if task.state in asyncjobs.TERMINAL_STATES and task_id in self.unfinished:
                self.unfinished.discard(task_id)
                self.final[task_id] = task
                self.final_at[task_id] = self.clock()

        await asyncio.gather(*(one(task_id) for task_id in list(ids)))

    async def follow(self, finished_by_handler: Callable[[], set[str]], everything: asyncio.Event) -> None:
        """Poll until cancelled: tasks some handler finished, and every unfinished task once ``everything`` is set.

        Loading only what a handler finished keeps the polling cheap while the load runs.
        """
        while True:
            ids = self.unfinished if everything.is_set() else self.unfinished & finished_by_handler()
            await self.check(ids)
            await asyncio.sleep(POLL_S)

    async def settle(self, queue: str, deadline_s: float) -> asyncjobs.QueueInfo | None:
        """Poll until every task is final and the queue holds no item, or until ``deadline_s``.

        Returns:
            The last queue information read, or None if none could be read.
        """
        info: asyncjobs.QueueInfo | None = None
        while True:
            await self.check(self.unfinished)
            if not self.unfinished:
                with contextlib.suppress(asyncjobs.AsyncJobsError):
                    info = await self.client.admin.queue_info(queue)
                if info is not None and info.items == 0:
                    return info
            if self.clock() >= deadline_s:
                return info
            await asyncio.sleep(POLL_S)

    async def leftovers(self) -> list[Leftover]:
        """What the store holds for every task that is still not final (one last look at each)."""
        found: list[Leftover] = []
        for task_id in sorted(self.unfinished):
            try:
                task = await self.client.get_task(task_id)
            except asyncjobs.TaskNotFound:
                found.append(Leftover(id=task_id, state="missing"))
            except asyncjobs.AsyncJobsError as exc:
                found.append(Leftover(id=task_id, state="unreadable", last_err=str(exc)))
            else:
                if task.state in asyncjobs.TERMINAL_STATES:  # finished since the last poll
                    self.unfinished.discard(task_id)
                    self.final[task_id] = task
                    self.final_at[task_id] = self.clock()
                    continue
                found.append(Leftover(id=task_id, state=task.state.value, tries=task.tries, last_err=task.last_err))
        return found


def monotonic_clock() -> Callable[[], float]:
    """A clock in seconds that starts at 0 now."""
    started = time.monotonic()
    return lambda: time.monotonic() - started
