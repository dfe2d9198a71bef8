"""The scheduler: every instance watches the schedules; the elected leader fires them, exactly once per due time.

Any number of :class:`Scheduler` instances may run (Go's among them). They campaign for the key ``task_scheduler`` in
``CHORIA_AJ_ELECTIONS``; only the leader enqueues. The leader keeps every schedule in a heap by
the instant it is next due and runs those that are due together concurrently; what running one means (which due
times to fire, exactly once each) is :mod:`asyncjobs_scheduler.firing`.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import socket
from datetime import UTC, datetime, timedelta
from typing import Final

import asyncjobs
from asyncjobs import codec
from asyncjobs.constants import CONFIG_BUCKET, ELECTIONS_BUCKET, LEADER_EVENT_PREFIX
from asyncjobs.errors import AsyncJobsError, ClientClosedError
from asyncjobs.kv import Deleted, KeyValue
from asyncjobs.metrics import METRICS
from asyncjobs_scheduler.clock import Clock, SystemClock
from asyncjobs_scheduler.codec import decode_schedule
from asyncjobs_scheduler.constants import ELECTION_KEY, SCHEDULE_KEY_PREFIX
from asyncjobs_scheduler.election import Election
from asyncjobs_scheduler.errors import InvalidSchedule
from asyncjobs_scheduler.firing import RETRY_AFTER_S, Firer
from asyncjobs_scheduler.queues import QueueClients
from asyncjobs_scheduler.schedule import Schedule

log = logging.getLogger("asyncjobs.scheduler")

COMPONENT: Final = "task_scheduler"
"""The component named in the leader-elected event, as Go names its scheduler."""
FIRE_CONCURRENCY: Final = 500
"""Schedules fired at once when many are due together."""
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def default_name() -> str:
    """A scheduler name unique on this host: ``<hostname>-<pid>``."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Scheduler:
    """Watches the schedules and, while it leads the election, fires them.

    Args:
        client: a connected client; tasks go to each schedule's queue (its own queue by default).
        name: this scheduler's name in the election (``<hostname>-<pid>`` by default); unique per instance.
        clock: where scheduling time comes from (the system clock by default; a manual clock in tests).
    """

    def __init__(self, client: asyncjobs.Client, *, name: str | None = None, clock: Clock | None = None) -> None:
        self._client = client
        self.name = name or default_name()
        self._clock: Clock = clock or SystemClock()
        self._schedules: dict[str, Schedule] = {}
        self._due: list[tuple[datetime, str]] = []
        """A heap of (when, schedule name): when each schedule is next due; stale entries are skipped."""
        self._wake: dict[str, datetime] = {}
        """The current entry of each schedule in :attr:`_due`."""
        self._firing = asyncio.Semaphore(FIRE_CONCURRENCY)
        self._running: dict[str, asyncio.Task[None]] = {}
        """Schedules being fired now, by name."""
        self._again: set[str] = set()
        """Schedules that came due again while being fired."""
        self._changed = asyncio.Event()
        self._loaded = asyncio.Event()
        self._catch_up = False
        self._election: Election | None = None

    @property
    def is_leader(self) -> bool:
        """Whether this scheduler leads now (and so fires the schedules)."""
        return self._election is not None and self._election.is_leader

    @property
    def schedules(self) -> dict[str, Schedule]:
        """The schedules it knows, by name (a copy)."""
        return dict(self._schedules)

    async def run(self) -> None:
        """Watch, campaign and fire until cancelled or the client closes; a leader gives up the key on the way out.

        Raises:
            ClientClosedError: the client was closed.
            JetStreamError: the buckets cannot be used.
        """
        configs = self._client.key_value(CONFIG_BUCKET)
        election = self._election = Election(
            self._client.key_value(ELECTIONS_BUCKET),
            ELECTION_KEY,
            self.name,
            # Leases follow real time (the server expires the key by its own clock), whatever clock schedules.
            on_won=self._won,
            on_lost=self._lost,
        )
        queues = QueueClients(self._client)
        firer = Firer(configs, queues, self._clock, lambda: self.is_leader)
        METRICS.scheduler_paused.set(1)
        duties = [
            asyncio.create_task(self._watch(configs), name=f"scheduler {self.name} watch"),
            asyncio.create_task(election.run(), name=f"scheduler {self.name} election"),
            asyncio.create_task(self._fire_loop(firer), name=f"scheduler {self.name} fire"),
        ]
        log.info("scheduler %s started", self.name)
        try:
            done, _ = await asyncio.wait(duties, return_when=asyncio.FIRST_COMPLETED)
            for duty in done:
                try:
                    duty.result()
                except ClientClosedError:
                    if not self._client.closed:
                        raise
                    return  # the client was closed: the scheduler ends with it
        finally:
            try:
                await election.resign()  # a successor takes over at once instead of waiting for the key to expire
            finally:  # also when a second cancellation cuts the resign short
                for task in [*duties, *self._running.values()]:
                    task.cancel()
                await asyncio.gather(*duties, *self._running.values(), return_exceptions=True)
                await queues.close()
                METRICS.scheduler_paused.set(1)
                log.info("scheduler %s stopped", self.name)

    # ---- leadership -----------------------------------------------------------------------------------------

    async def _won(self) -> None:
        log.info("scheduler %s leads: it fires the schedules now", self.name)
        METRICS.scheduler_paused.set(0)
        self._catch_up = True
        self._changed.set()
        try:
            event = codec.encode_leader_event(self.name, COMPONENT)
            await self._client.nc.publish(LEADER_EVENT_PREFIX + COMPONENT, event)
        except Exception as exc:  # events are best effort, as in Go
            log.debug("could not publish the leader event: %s", exc)

    async def _lost(self) -> None:
        log.info("scheduler %s no longer leads: it stops firing", self.name)
        METRICS.scheduler_paused.set(1)
        self._changed.set()

    # ---- schedules ------------------------------------------------------------------------------------------

    async def _watch(self, configs: KeyValue) -> None:
        async with configs.watch(SCHEDULE_KEY_PREFIX + "*") as changes:
            async for change in changes:
                if change is None:
                    self._loaded.set()
                    log.info("scheduler %s knows %d schedules", self.name, len(self._schedules))
                elif isinstance(change, Deleted):
                    name = change.key.removeprefix(SCHEDULE_KEY_PREFIX)
                    if self._schedules.pop(name, None) is not None:
                        self._wake.pop(name, None)
                        log.info("schedule %s removed", name)
                else:
                    self._apply(change.key.removeprefix(SCHEDULE_KEY_PREFIX), change.value)
                METRICS.scheduler_schedules_total.set(len(self._schedules))
                self._changed.set()

    def _apply(self, name: str, value: bytes) -> None:
        try:
            schedule = decode_schedule(value)
        except (AsyncJobsError, InvalidSchedule) as exc:
            log.warning("ignoring the stored schedule %s: %s", name, exc)
            self._schedules.pop(name, None)
            return
        if schedule.name != name:
            log.warning(
                "ignoring the schedule stored at %s%s: it is named %r inside; store it under %s%s",
                SCHEDULE_KEY_PREFIX,
                name,
                schedule.name,
                SCHEDULE_KEY_PREFIX,
                schedule.name,
            )
            self._schedules.pop(name, None)
            return
        before = self._schedules.get(name)
        self._schedules[name] = schedule
        self._plan(name, _EPOCH)  # look at it at the next pass
        if before is None:
            if self._loaded.is_set():
                log.info("schedule %s added: %r on queue %s", name, schedule.wire_spec, schedule.queue)
        elif before != schedule:
            log.info("schedule %s changed: %r on queue %s", name, schedule.wire_spec, schedule.queue)

    # ---- firing ---------------------------------------------------------------------------------------------

    async def _fire_loop(self, firer: Firer) -> None:
        """While leading, run each schedule when it is due: the soonest first, many at once."""
        await self._loaded.wait()
        while True:
            self._changed.clear()
            if not self.is_leader:
                await self._wait(None)
                continue
            if self._catch_up:
                self._catch_up = False
                await firer.load()
                self._due = [(_EPOCH, name) for name in self._schedules]  # look at every schedule once
                heapq.heapify(self._due)
                self._wake = dict.fromkeys(self._schedules, _EPOCH)
            now = self._clock.now()
            while self._due and self._due[0][0] <= now:
                when, name = heapq.heappop(self._due)
                schedule = self._schedules.get(name)
                if schedule is None or self._wake.get(name) != when:
                    continue  # removed, or planned again since
                if name in self._running:
                    self._again.add(name)  # still firing: look again once it is done
                    continue
                # Each schedule on its own: one whose queue hangs never holds up the others.
                self._running[name] = asyncio.create_task(self._run_one(firer, schedule), name=f"schedule {name}")
            await self._wait(self._due[0][0] if self._due else None)

    async def _run_one(self, firer: Firer, schedule: Schedule) -> None:
        name = schedule.name
        try:
            async with self._firing:
                try:
                    when = await firer.run(schedule)
                except Exception as exc:  # a bad schedule or a failed read must not stop the scheduler
                    log.warning("schedule %s: %s; trying again in %gs", name, exc, RETRY_AFTER_S, exc_info=exc)
                    when = self._clock.now() + timedelta(seconds=RETRY_AFTER_S)
        finally:
            del self._running[name]
        if name in self._again:
            self._again.discard(name)
            when = _EPOCH
        if self._schedules.get(name) is schedule or when is _EPOCH:  # a change queues its own pass
            self._plan(name, when)
            self._changed.set()

    def _plan(self, name: str, when: datetime) -> None:
        self._wake[name] = when
        heapq.heappush(self._due, (when, name))

    async def _wait(self, until: datetime | None) -> None:
        waits: list[asyncio.Future[object]] = [asyncio.ensure_future(self._changed.wait())]
        if until is not None:
            waits.append(asyncio.ensure_future(self._clock.sleep_until(until)))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
