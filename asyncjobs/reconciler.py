"""The reconciler: finds tasks that wait without a live work item and repairs them.

Every path in the worker and in enqueue is built to leave a task either final or with an item JetStream will
deliver. The reconciler makes "no task stuck forever" hold by construction rather than by the absence of known
bugs: whatever left a task ``new``, ``blocked``, ``retry`` or ``active`` without a deliverable item (a process
killed between two writes, an outage that outlasted every retry, a worker lost on an item's last permitted
delivery), it is found and repaired within a pass or two.

A pass reads the task store from where the previous one stopped, at most 2,000 stored tasks at a time; a sweep that
reaches the end restarts at the oldest task of the queue it saw still waiting (a task moves to a higher stream
sequence on every save, so everything below that mark is final), so a healthy queue's passes read only recent tasks.
For each waiting task of the queue without progress for the grace period, it looks up the task's work item, reads
the task again (to act only on what is still true), and:

* no work item in the queue: a fresh item is published (under a ``Nats-Msg-Id`` derived from the stored task
  version, so concurrent reconcilers in several workers publish one item between them); the worker's gates then
  run it, or expire it when its tries are used up. Unless the item was removed on purpose: a task older than the
  queue's last purge (``admin.purge_queue``/``delete_queue`` record it), older than the queue's ``max_age``, or in
  a full queue that drops its oldest items (``discard_old``) ends ``expired`` with the reason instead;
* a ``new`` task whose item was delivered but that no worker set ``active`` within 10 s: the delivery was lost on
  its way (a node died, a connection dropped, during a leader change); a fresh item replaces it. This is also looked
  at right after a worker's consumer recovers from a disturbance, so the task does not wait out its ack wait. A
  second delivery cannot start a second run: setting a task active is a write guarded by its stored sequence.

Items the consumer gives up on (a worker lost while it held an item on its last permitted delivery) are repaired as
the server announces them, by :meth:`Reconciler.watch_dead_items`: an ``active`` task ends ``expired``, a waiting one
gets a fresh item.

Each action is logged at WARNING and counted in ``choria_asyncjobs_reconciler_repaired_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import orjson

from asyncjobs import codec
from asyncjobs.constants import CONFIG_BUCKET, MAX_DELIVERIES_ADVISORY, QUEUE_CONSUMER, QUEUE_PURGED_KEY_PREFIX
from asyncjobs.errors import AsyncJobsError, CorruptDataError, TaskConflict, TaskNotFound
from asyncjobs.jsapi import TASK_ERRORS
from asyncjobs.kv import KeyValue
from asyncjobs.listing import scan_tasks
from asyncjobs.metrics import METRICS
from asyncjobs.settle import with_last_error
from asyncjobs.stored import decode_stored
from asyncjobs.task import Task, TaskState
from asyncjobs.wiretime import NS_PER_SECOND, WireTime

if TYPE_CHECKING:
    from asyncjobs.queue import Queue
    from asyncjobs.storage import Storage

log = logging.getLogger("asyncjobs")

WAITING_STATES: Final = frozenset({TaskState.NEW, TaskState.BLOCKED, TaskState.RETRY, TaskState.ACTIVE})
"""States in which a task needs a deliverable work item."""
MAX_CHECKS_PER_PASS: Final = 1000
# Stored tasks read per pass: a sweep over a large store spreads over several passes instead of blocking a worker.
MAX_SCAN_PER_PASS: Final = 2000
# A new task whose item was delivered but which no worker set active within this time lost its delivery.
LOST_DELIVERY_GRACE_S: Final = 10.0
LOST_DELIVERY_GRACE_NS: Final = int(LOST_DELIVERY_GRACE_S * NS_PER_SECOND)
CHECK_CHUNK: Final = 100
LOST_ON_LAST_DELIVERY: Final = (
    "its worker was lost on the queue's last permitted delivery and no outcome was recorded (found by the reconciler)"
)


@dataclass(slots=True)
class PassReport:
    """What one reconciler pass found and did."""

    scanned: int = 0
    """Waiting tasks of the queue read from the store."""
    republished: list[str] = field(default_factory=list)
    """Tasks that got a fresh work item."""
    expired: list[str] = field(default_factory=list)
    """Tasks ended ``expired``: active with a dead item, or waiting for an item removed on purpose."""
    dead_items: int = 0
    """Items the consumer gave up on that were repaired."""


class Reconciler:
    """Repairs a queue's stuck tasks, one pass every ``interval`` seconds.

    Args:
        storage: task storage.
        queue: the bound queue, with the server's settings.
        interval: seconds between passes (with jitter, so the reconcilers of many workers spread out).
        grace: seconds a task must have made no progress before it is repaired.
        clock: the wall clock in Unix nanoseconds (tests move it forward instead of waiting).
    """

    def __init__(
        self,
        storage: Storage,
        queue: Queue,
        *,
        interval: float,
        grace: float,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.storage = storage
        self.queue = queue
        self.interval = interval
        self.grace_ns = int(grace * NS_PER_SECOND)
        self.clock = clock
        self.cursor = 0
        """Where the next pass reads the task store from (after this stream sequence)."""
        self._sweep_lowest = 0
        self._woken = asyncio.Event()

    def wake(self) -> None:
        """Ask for a pass soon: the queue's consumer answers again after a disturbance, in which deliveries can be
        lost (a message on its way to a worker when a node died)."""
        self._woken.set()

    async def run(self) -> None:
        """Run passes until cancelled; a failed pass is logged and the next one tries again."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval * random.uniform(0.75, 1.25)):
                    await self._woken.wait()
            if self._woken.is_set():
                self._woken.clear()
                # Let deliveries lost in the disturbance age past their grace, then look at once.
                await asyncio.sleep(LOST_DELIVERY_GRACE_S + 1)
            try:
                await self.reconcile()
            except AsyncJobsError as exc:
                log.warning("queue %s: reconciler pass failed, trying again later: %s", self.queue.name, exc)
            except Exception:  # a repair pass must never stop the worker that hosts it
                log.exception("queue %s: reconciler pass failed, trying again later", self.queue.name)

    async def reconcile(self) -> PassReport:
        """One pass over the queue's waiting tasks.

        Raises:
            JetStreamError: the store or the queue could not be read.
        """
        report = PassReport()
        queue = self.queue
        METRICS.reconciler_pass_total.labels(queue.name).inc()
        delivered_seq = await self._delivered_seq()
        purged_ns = await self._purged_at()
        scan = await scan_tasks(self.storage.js, after_seq=self.cursor, max_messages=MAX_SCAN_PER_PASS)
        now = self.clock()
        stale: list[Task] = []
        for task in scan.tasks:
            if task.queue != queue.name or task.state not in WAITING_STATES:
                continue
            report.scanned += 1
            self._sweep_lowest = task.seq if not self._sweep_lowest else min(self._sweep_lowest, task.seq)
            if now - _last_change_ns(task) > self._first_look(task) and len(stale) < MAX_CHECKS_PER_PASS:
                stale.append(task)
        if scan.complete:
            # A sweep ends: the next one starts at the oldest task it saw waiting (all below it were final).
            self.cursor = self._sweep_lowest - 1 if self._sweep_lowest else scan.last_seq
            self._sweep_lowest = 0
        else:
            self.cursor = scan.last_seq  # the sweep goes on from here next pass
        for start in range(0, len(stale), CHECK_CHUNK):
            chunk = stale[start : start + CHECK_CHUNK]
            items = await asyncio.gather(*(self._item_seq(task) for task in chunk))
            for task, item_seq in zip(chunk, items, strict=True):
                if item_seq is None:
                    if now - _last_change_ns(task) <= self._grace_for(task):
                        continue  # its enqueue may still be publishing the item
                    if not await self._unchanged(task):
                        continue
                    dropped = self._dropped_on_purpose(task, purged_ns)
                    if dropped:
                        await self._expire(task, report, dropped)
                    else:
                        await self._republish(task, report, "no work item")
                elif task.state == TaskState.NEW and item_seq <= delivered_seq and await self._unchanged(task):
                    # Delivered, yet no worker ever set it active: the delivery was lost on its way (a node died, a
                    # connection dropped). A fresh item cannot start a second run: activation is a guarded write.
                    await self._republish(task, report, "a delivery that never reached a worker")
        if report.republished or report.expired:
            log.info(
                "queue %s: reconciler pass: %d waiting tasks read, %d republished, %d expired",
                queue.name,
                report.scanned,
                len(report.republished),
                len(report.expired),
            )
        return report

    async def _purged_at(self) -> int:
        """When the queue was last purged or deleted (Unix ns), 0 if never recorded."""
        entry = await KeyValue(self.storage.js, CONFIG_BUCKET).get(QUEUE_PURGED_KEY_PREFIX + self.queue.name)
        if entry is None:
            return 0
        try:
            return int(entry.value)
        except ValueError:
            return 0

    def _dropped_on_purpose(self, task: Task, purged_ns: int) -> str:
        """Why the task's missing item was removed on purpose, or ``""`` when it was lost."""
        queue = self.queue
        changed = _last_change_ns(task)
        if changed < purged_ns:
            when = WireTime(purged_ns).to_datetime().isoformat()
            return f"its work item was removed when queue {queue.name} was purged at {when}"
        if queue.max_age_ns and self.clock() - changed > queue.max_age_ns:
            return f"its work item was dropped after the queue's max_age of {queue.max_age_ns / NS_PER_SECOND:g}s"
        if queue.discard_old and queue.max_entries:
            return f"its work item was dropped from the full queue (max_entries {queue.max_entries}, discard_old)"
        return ""

    def _first_look(self, task: Task) -> int:
        """How long a task goes without progress before its item is looked up."""
        if task.state == TaskState.NEW:
            return min(self.grace_ns, LOST_DELIVERY_GRACE_NS)
        return self._grace_for(task)

    def _grace_for(self, task: Task) -> int:
        # An active task is legitimately without news for as long as its handler may run.
        return self.grace_ns + (self.queue.max_run_time_ns if task.state == TaskState.ACTIVE else 0)

    async def watch_dead_items(self) -> None:
        """Repair each item the moment the consumer gives up on it (the server's max-deliveries advisory).

        An item reaches the consumer's ``max_deliver`` only when a worker was lost while it held the item on its last
        permitted delivery (every other hand-back is settled before that). Its task then ends ``expired`` if it was
        ``active``, or gets a fresh item if it was waiting; the dead item is deleted. Every worker hears the
        advisory; the repairs are guarded writes, so one of them applies.
        """
        subject = f"{MAX_DELIVERIES_ADVISORY}.{self.queue.stream}.{QUEUE_CONSUMER}"
        sub = await self.storage.nc.subscribe(subject)
        try:
            async for msg in sub.messages:
                try:
                    await self.repair_dead_item(msg.data)
                except Exception:  # a repair must never stop the worker that hosts it
                    log.exception("queue %s: could not repair a dead work item", self.queue.name)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def repair_dead_item(self, advisory: bytes) -> PassReport:
        """Repair the item a max-deliveries advisory names (see :meth:`watch_dead_items`)."""
        report = PassReport()
        stream, what = self.queue.stream, f"repairing a dead item of queue {self.queue.name!r}"
        try:
            seq = int(orjson.loads(advisory)["stream_seq"])
            reply = await self.storage.js.api(f"STREAM.MSG.GET.{stream}", {"seq": seq}, what, errors=TASK_ERRORS)
            task_id = codec.decode_item(decode_stored(reply, what).data)
            task = await self.storage.load_task(task_id, verify=False)
        except TaskNotFound:
            return report  # already repaired by another worker, or its task is gone
        except (KeyError, TypeError, ValueError, CorruptDataError) as exc:
            log.warning("queue %s: ignoring a max-deliveries advisory: %s", self.queue.name, exc)
            return report
        report.dead_items = 1
        if task.state == TaskState.ACTIVE:
            await self._expire(task, report, LOST_ON_LAST_DELIVERY)
        elif task.state in WAITING_STATES:
            await self._republish(task, report, "a work item the queue no longer delivers")
            return report  # the fresh item replaced the dead one
        with contextlib.suppress(AsyncJobsError):
            await self.storage.js.api(f"STREAM.MSG.DELETE.{stream}", {"seq": seq}, what, errors=TASK_ERRORS)
        return report

    async def _delivered_seq(self) -> int:
        """The stream sequence up to which the queue's consumer has delivered every item at least once."""
        what = f"reconciling queue {self.queue.name!r}"
        consumer = await self.storage.js.api(f"CONSUMER.INFO.{self.queue.stream}.{QUEUE_CONSUMER}", None, what)
        return int((consumer.get("delivered") or {}).get("stream_seq", 0))

    async def _unchanged(self, task: Task) -> bool:
        """Whether the task is still stored as this pass read it (a worker may have moved it on meanwhile)."""
        try:
            current = await self.storage.load_task(task.id, verify=False)
        except AsyncJobsError:
            return False
        return current.seq == task.seq

    async def _item_seq(self, task: Task) -> int | None:
        """The stream sequence of the task's work item, or ``None`` when it has none."""
        queue = self.queue
        try:
            stored = await self.storage.js.get_last(
                queue.stream, queue.subject_prefix + task.id, f"looking up the item of task {task.id}"
            )
        except TaskNotFound:
            return None
        return stored.seq

    async def _republish(self, task: Task, report: PassReport, why: str) -> None:
        try:
            stored = await self.storage.republish_item(task.id, self.queue, msg_id=f"{task.id}.{task.seq}")
        except AsyncJobsError as exc:
            log.warning("queue %s: could not republish task %s: %s", self.queue.name, task.id, exc)
            return
        if not stored:
            return  # another worker's reconciler repaired this very version of the task first
        log.warning(
            "queue %s: task %s was %s with %s, unchanged for %.0fs: published a fresh work item for it",
            self.queue.name,
            task.id,
            task.state.value,
            why,
            (self.clock() - _last_change_ns(task)) / NS_PER_SECOND,
        )
        METRICS.reconciler_repaired_total.labels(self.queue.name, "republish", task.state.value).inc()
        report.republished.append(task.id)

    async def _expire(self, task: Task, report: PassReport, why: str) -> None:
        was = task.state.value
        reason = with_last_error(why, task.last_err)
        log.warning("queue %s: expiring task %s (%s), it was %s: %s", self.queue.name, task.id, task.type, was, reason)
        task.state = TaskState.EXPIRED
        task.last_err = reason
        task.tried_at = WireTime.now()
        try:
            await self.storage.save_or_discard(task)
        except TaskConflict:
            return  # it moved on since this pass read it
        except AsyncJobsError as exc:
            log.warning("queue %s: could not expire task %s: %s", self.queue.name, task.id, exc)
            return
        METRICS.reconciler_repaired_total.labels(self.queue.name, "expire", was).inc()
        report.expired.append(task.id)


def _last_change_ns(task: Task) -> int:
    created = task.created_at.unix_ns
    return created if task.tried_at is None else max(created, task.tried_at.unix_ns)
