"""Firing a schedule's due times: which to fire (misfire, pause, overlap), the task of each, and the record kept.

The task of due time ``D`` has the id ``schedule.task_id(D)`` and is created at ``D``, so every scheduler builds the
same task, byte for byte: enqueueing it again (a second leader, a restarted one, a replayed pass) finds it stored
and at most publishes the work item it may lack. The last due time dealt with is kept per schedule at
``scheduler_fired.<name>`` in ``CHORIA_AJ_CONFIGURATION``, so a leader that takes over knows what was missed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import orjson

import asyncjobs
from asyncjobs.errors import AsyncJobsError, DuplicateTaskError, TaskNotFound
from asyncjobs.kv import KeyValue
from asyncjobs.metrics import METRICS
from asyncjobs.task import FAILED_STATES, TERMINAL_STATES
from asyncjobs.wiretime import WireTime, format_time, parse_time
from asyncjobs_scheduler.clock import Clock
from asyncjobs_scheduler.constants import FIRED_KEY_PREFIX, Misfire, Overlap
from asyncjobs_scheduler.queues import QueueClients
from asyncjobs_scheduler.schedule import Schedule

log = logging.getLogger("asyncjobs.scheduler")

MISFIRE_GRACE_S: Final = 15.0
"""Seconds a due time may be late and still count as on time; later ones were missed (the ``misfire`` policy).

Longer than a crash failover (the election key's 10 s TTL, then a second), so a leader change never loses a due time
whatever the policy; ``misfire`` is for real gaps: every scheduler down, the cluster unreachable."""
RETRY_AFTER_S: Final = 5.0
"""Seconds before a schedule whose task could not be enqueued is tried again."""
MAX_DUE_PER_PASS: Final = 10_000
"""Due times of one schedule considered in one pass at most (an ``@every 1s`` schedule after long downtime)."""
_FINAL_STATES: Final = TERMINAL_STATES | FAILED_STATES


@dataclass(frozen=True, slots=True)
class Fired:
    """What the leaders recorded for a schedule: the last due time dealt with, and the last task fired."""

    due: datetime
    task_id: str

    def encode(self) -> bytes:
        """The record's JSON."""
        return orjson.dumps({"due": format_time(WireTime.from_datetime(self.due)), "task_id": self.task_id})

    @classmethod
    def decode(cls, data: bytes) -> Fired | None:
        """A record from its JSON; ``None`` if it cannot be read (the schedule then counts as never fired)."""
        try:
            obj = orjson.loads(data)
            return cls(parse_time(obj["due"]).to_datetime(), str(obj.get("task_id", "")))
        except (orjson.JSONDecodeError, KeyError, TypeError, AsyncJobsError):
            return None


class Firer:
    """Fires the due times of schedules for a leading scheduler.

    Args:
        configs: the configuration bucket (where the records are kept).
        queues: clients for the schedules' queues.
        clock: scheduling time.
        leading: whether the scheduler still leads (checked before each task).
    """

    def __init__(self, configs: KeyValue, queues: QueueClients, clock: Clock, leading: Callable[[], bool]) -> None:
        self._configs = configs
        self._queues = queues
        self._clock = clock
        self._leading = leading
        self._fired: dict[str, Fired] = {}

    async def load(self) -> None:
        """Read every schedule's record (when the scheduler starts leading)."""
        self._fired.clear()
        for entry in await self._configs.entries(FIRED_KEY_PREFIX + "*"):
            fired = Fired.decode(entry.value)
            if fired is not None:
                self._fired[entry.key.removeprefix(FIRED_KEY_PREFIX)] = fired

    def forget(self, name: str) -> None:
        """Drop a removed schedule's record from memory."""
        self._fired.pop(name, None)

    async def run(self, schedule: Schedule) -> datetime:
        """Fire what is due of ``schedule`` now; returns when it is next due (or when to try again)."""
        now = self._clock.now()
        name = schedule.name
        fired = self._fired.get(name)
        created = schedule.created or now
        # Never before the schedule existed: a record left by an earlier schedule of that name does not count.
        start = max(fired.due, created) if fired is not None else created
        oldest = now - timedelta(seconds=schedule.catchup_window + MISFIRE_GRACE_S)
        dues = schedule.due_between(max(start, oldest), now, limit=MAX_DUE_PER_PASS)
        ready: list[datetime] = []
        for due in dues:  # in order: a later due time never goes before an earlier one whose jitter runs yet
            if schedule.jittered(due) > now:
                break
            ready.append(due)
        if ready:
            last_task = fired.task_id if fired is not None else ""
            for due in self._to_fire(schedule, ready, now):
                task_id = await self._fire(schedule, due, last_task)
                if task_id is None:
                    return now + timedelta(seconds=RETRY_AFTER_S)
                last_task = task_id or last_task
            await self._record(name, Fired(ready[-1], last_task))
        if len(dues) > len(ready):
            return schedule.jittered(dues[len(ready)])  # reached, but its jitter has not run out yet
        return schedule.jittered(schedule.next_after(ready[-1] if ready else max(start, now)))

    def _to_fire(self, schedule: Schedule, ready: list[datetime], now: datetime) -> list[datetime]:
        """The due times to fire among those reached: all on-time ones, and the missed ones the policy keeps."""
        if schedule.paused:
            log.debug("schedule %s is paused: not firing %d due time(s)", schedule.name, len(ready))
            return []
        late = timedelta(seconds=MISFIRE_GRACE_S)
        # A due time can be fired once its jitter has run out and every earlier one's has (they go in order), so its
        # lateness counts from the latest of those instants: waiting behind an earlier due time is not a misfire.
        missed: list[datetime] = []
        timely: list[datetime] = []
        fireable = ready[0]
        for due in ready:
            fireable = max(fireable, schedule.jittered(due))
            (missed if now - fireable > late else timely).append(due)
        if not missed:
            return timely
        window = timedelta(seconds=schedule.catchup_window)
        recent = [due for due in missed if now - due <= window]  # older ones are never fired
        keep = {Misfire.SKIP: [], Misfire.RUN_ONCE: recent[-1:], Misfire.RUN_ALL: recent}[schedule.misfire]
        dropped = len(missed) - len(keep)
        log.info(
            "schedule %s missed %d due time(s) (%s .. %s; no scheduler led, or it fell behind): misfire=%s fires %d%s",
            schedule.name,
            len(missed),
            missed[0].isoformat(),
            missed[-1].isoformat(),
            schedule.misfire.value,
            len(keep),
            f", skips {dropped}" if dropped else "",
        )
        return sorted(keep + timely)

    async def _fire(self, schedule: Schedule, due: datetime, last_task: str) -> str | None:
        """Enqueue the task of one due time; returns its id, ``""`` when skipped, ``None`` when it failed."""
        if not self._leading():
            return None
        queue = schedule.queue or "?"
        if schedule.overlap == Overlap.SKIP and last_task and await self._unfinished(last_task, schedule.queue):
            log.info(
                "schedule %s: not firing for %s: its previous task %s is not final yet (overlap=skip)",
                schedule.name,
                due.isoformat(),
                last_task,
            )
            return ""
        task = asyncjobs.Task(
            schedule.task_type,
            schedule.payload,
            id=schedule.task_id(due),
            deadline=None if schedule.deadline is None else due + timedelta(seconds=schedule.deadline),
            max_tries=schedule.task_max_tries,
        )
        task.created_at = WireTime.from_datetime(due)  # the same task, byte for byte, from every scheduler
        try:
            await self._queues.enqueue(task, schedule.queue)
        except DuplicateTaskError:
            # A task of this due time from an earlier definition of the schedule: the due time is dealt with.
            log.info("schedule %s: the task of %s already exists (%s)", schedule.name, due.isoformat(), task.id)
            return task.id
        except AsyncJobsError as exc:
            METRICS.scheduler_schedule_error_count.labels(schedule.task_type, queue).inc()
            log.warning(
                "schedule %s: could not enqueue the task of %s on queue %s, trying again in %gs: %s",
                schedule.name,
                due.isoformat(),
                queue,
                RETRY_AFTER_S,
                exc,
            )
            return None
        METRICS.scheduler_scheduled_count.labels(schedule.task_type, queue).inc()
        log.info("schedule %s fired for %s: task %s on queue %s", schedule.name, due.isoformat(), task.id, queue)
        return task.id

    async def _unfinished(self, task_id: str, queue: str | None) -> bool:
        try:
            task = await (await self._queues.get(queue)).get_task(task_id)
        except TaskNotFound:
            return False
        except AsyncJobsError as exc:
            log.debug("could not read task %s: %s", task_id, exc)
            return False
        return task.state not in _FINAL_STATES

    async def _record(self, name: str, fired: Fired) -> None:
        self._fired[name] = fired
        try:
            await self._configs.put(FIRED_KEY_PREFIX + name, fired.encode())
        except AsyncJobsError as exc:
            # Kept in memory; a successor without it fires these due times again, finding their tasks stored.
            log.warning("schedule %s: could not record its last due time: %s", name, exc)
