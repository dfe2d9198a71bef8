"""``Schedules``: add, read, change and remove the schedules stored in ``CHORIA_AJ_CONFIGURATION``.

Each schedule is the ScheduledTask JSON Go reads, at ``scheduled_tasks.<name>`` (docs/protocol.md, Scheduled
tasks), so Go's ``ajc tasks cron list`` and Go's scheduler see ours and we see theirs. Every running
:class:`~asyncjobs_scheduler.Scheduler` watches the keys, so a change applies without restarts.
"""

from __future__ import annotations

import builtins
import logging
from datetime import datetime, timedelta

import asyncjobs
from asyncjobs.constants import CONFIG_BUCKET
from asyncjobs.errors import AsyncJobsError, ConfigurationError, CorruptDataError, QueueNotFound, TaskConflict
from asyncjobs.kv import KeyValue
from asyncjobs.names import validate_name
from asyncjobs.wiretime import WireTime
from asyncjobs_scheduler.clock import Clock, SystemClock
from asyncjobs_scheduler.codec import decode_schedule, encode_schedule
from asyncjobs_scheduler.constants import FIRED_KEY_PREFIX, SCHEDULE_KEY_PREFIX
from asyncjobs_scheduler.errors import InvalidSchedule, ScheduleExists, ScheduleNotFound, SchedulerError
from asyncjobs_scheduler.firing import Fired
from asyncjobs_scheduler.queues import QueueClients
from asyncjobs_scheduler.schedule import Schedule

log = logging.getLogger("asyncjobs.scheduler")


class Schedules:
    """The schedules of a deployment, over a connected client.

    A schedule without a queue of its own is stored with the client's queue.

    Args:
        client: a connected :class:`asyncjobs.Client`.
        clock: where "now" comes from (when a schedule is added or resumed); the system clock by default.
    """

    def __init__(self, client: asyncjobs.Client, *, clock: Clock | None = None) -> None:
        self._client = client
        self._clock: Clock = clock or SystemClock()
        self._kv: KeyValue = client.key_value(CONFIG_BUCKET)

    async def add(self, schedule: Schedule) -> Schedule:
        """Store a new schedule; returns it as stored (with its queue and ``created_at``).

        Raises:
            ScheduleExists: a schedule with that name exists (use :meth:`update`).
            InvalidSchedule: its queue does not exist.
        """
        stored = await self._stored_form(schedule, created_at=None)
        try:
            await self._kv.create(_key(schedule.name), encode_schedule(stored))
        except TaskConflict:
            raise ScheduleExists(
                f"schedule {schedule.name!r} already exists: change it with update(), or remove() it first"
            ) from None
        log.info("schedule %s added: %r on queue %s", stored.name, stored.wire_spec, stored.queue)
        return stored

    async def get(self, name: str) -> Schedule:
        """Load a schedule by name.

        Raises:
            ScheduleNotFound: there is no such schedule.
            CorruptDataError: the stored value cannot be decoded.
        """
        return (await self._load(name))[0]

    async def update(self, schedule: Schedule) -> Schedule:
        """Replace a schedule's definition in one write; returns it as stored.

        The change is atomic (a write at the revision read, retried if another writer came in between), and a due
        time is never fired for both the old and the new definition: the task of a due time has the same id under
        both. ``created_at`` is kept, so ``@every`` due times stay where they were.

        Raises:
            ScheduleNotFound: there is no such schedule.
            InvalidSchedule: its queue does not exist.
        """
        for _ in range(_UPDATE_ATTEMPTS):
            current, revision = await self._load(schedule.name)
            stored = await self._stored_form(schedule, created_at=current.created_at)
            try:
                await self._kv.update(_key(schedule.name), encode_schedule(stored), revision=revision)
            except TaskConflict:
                continue  # changed meanwhile (a pause, another update): apply ours to the new value
            log.info("schedule %s updated: %r on queue %s", stored.name, stored.wire_spec, stored.queue)
            return stored
        raise SchedulerError(f"schedule {schedule.name!r} kept changing while it was updated: try again")

    async def remove(self, name: str) -> None:
        """Remove a schedule; its tasks already enqueued stay.

        Raises:
            ScheduleNotFound: there is no such schedule.
        """
        _, revision = await self._load(name)
        try:
            await self._kv.delete(_key(name), revision=revision)
        except TaskConflict:
            await self._kv.delete(_key(name))  # changed meanwhile: remove it all the same
        try:
            await self._kv.delete(FIRED_KEY_PREFIX + name)  # the leaders' record of it goes too
        except AsyncJobsError as exc:
            log.debug("could not delete the record of schedule %s: %s", name, exc)
        log.info("schedule %s removed", name)

    async def list(self) -> list[Schedule]:
        """Every stored schedule, by name; one that cannot be decoded is skipped with a WARNING."""
        found: list[Schedule] = []
        for entry in await self._kv.entries(SCHEDULE_KEY_PREFIX + "*"):
            try:
                found.append(decode_schedule(entry.value))
            except (CorruptDataError, InvalidSchedule) as exc:
                log.warning("skipping the stored schedule %s: %s", entry.key, exc)
        return sorted(found, key=lambda schedule: schedule.name)

    async def pause(self, name: str) -> Schedule:
        """Stop firing a schedule until :meth:`resume`; due times passed while paused are not caught up.

        Raises:
            ScheduleNotFound: there is no such schedule.
        """
        return await self._set_paused(name, True)

    async def resume(self, name: str) -> Schedule:
        """Fire a paused schedule again from its next due time.

        The due times passed while it was paused are not caught up, even if no scheduler was leading meanwhile.

        Raises:
            ScheduleNotFound: there is no such schedule.
        """
        resumed = await self._set_paused(name, False)
        key = FIRED_KEY_PREFIX + name
        previous = await self._kv.get(key)
        earlier = Fired.decode(previous.value) if previous is not None else None
        await self._kv.put(key, Fired(self._clock.now(), earlier.task_id if earlier else "").encode())
        return resumed

    async def trigger(self, name: str) -> asyncjobs.Task:
        """Enqueue one task of a schedule now, outside its due times; returns the task.

        The task gets a fresh id, so it never stands in for a due time's task.

        Raises:
            ScheduleNotFound: there is no such schedule.
            EnqueueError: the task could not be enqueued.
        """
        schedule = await self.get(name)
        deadline = None if schedule.deadline is None else timedelta(seconds=schedule.deadline)
        task = asyncjobs.Task(
            schedule.task_type, schedule.payload, deadline=deadline, max_tries=schedule.task_max_tries
        )
        queues = QueueClients(self._client)
        try:
            await queues.enqueue(task, schedule.queue)
        finally:
            await queues.close()
        log.info("schedule %s triggered: task %s", name, task.id)
        return task

    async def next_times(self, name: str, count: int = 1, *, after: datetime | None = None) -> builtins.list[datetime]:
        """The next ``count`` due instants of a schedule after ``after`` (default: now), in UTC.

        Raises:
            ScheduleNotFound: there is no such schedule.
        """
        schedule = await self.get(name)
        return schedule.next_times(after or self._clock.now(), count)

    # ---- helpers --------------------------------------------------------------------------------------------

    async def _load(self, name: str) -> tuple[Schedule, int]:
        entry = await self._kv.get(_key(name))
        if entry is None:
            raise ScheduleNotFound(f"schedule {name!r} does not exist: list them with Schedules.list()")
        return decode_schedule(entry.value), entry.revision

    async def _set_paused(self, name: str, paused: bool) -> Schedule:
        for _ in range(_UPDATE_ATTEMPTS):
            current, revision = await self._load(name)
            if current.paused == paused:
                return current
            changed = current.replace(paused=paused)
            try:
                await self._kv.update(_key(name), encode_schedule(changed), revision=revision)
            except TaskConflict:
                continue
            log.info("schedule %s %s", name, "paused" if paused else "resumed")
            return changed
        raise SchedulerError(
            f"schedule {name!r} kept changing while it was {'paused' if paused else 'resumed'}: try again"
        )

    async def _stored_form(self, schedule: Schedule, *, created_at: WireTime | None) -> Schedule:
        """The schedule as it is stored: with its queue, checked to exist, and ``created_at``."""
        queue = schedule.queue or self._client.queue.name
        try:
            await self._client.admin.queue_info(queue)
        except QueueNotFound:
            raise InvalidSchedule(
                f"schedule {schedule.name!r}: queue {queue!r} does not exist: create it first (connect with "
                f"queue={queue!r}), or name an existing queue"
            ) from None
        except AsyncJobsError as exc:
            log.debug("could not check queue %s of schedule %s: %s", queue, schedule.name, exc)
        return schedule.replace(
            queue=queue, created_at=created_at or schedule.created_at or WireTime.from_datetime(self._clock.now())
        )


_UPDATE_ATTEMPTS = 5


def _key(name: str) -> str:
    try:
        validate_name(name, "schedule name")
    except ConfigurationError as exc:
        raise InvalidSchedule(str(exc)) from None  # never a key pattern: '*' or 'a.b' would name other keys
    return SCHEDULE_KEY_PREFIX + name
