"""Pipelined enqueue: a task's save and its work item sent back to back, both acknowledgements awaited together.

Opt-in (``connect(pipeline_enqueue=True)``) because JetStream orders writes within a stream, not across two: the
item can be stored, and delivered, a moment before its task. Python workers hand such a young item back for a
moment (:func:`asyncjobs.delivery.orphan_delay_ns`); Go workers terminate it, and the task then waits for a
reconciler. See docs/protocol.md (Enqueue) and docs/decisions.md (Reliability choices).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Final

from asyncjobs import delivery
from asyncjobs.errors import (
    AsyncJobsError,
    JetStreamError,
    JetStreamUnavailable,
    RequestTimeout,
    TaskConflict,
    TaskNotFound,
)
from asyncjobs.jsapi import PubAck
from asyncjobs.metrics import METRICS
from asyncjobs.storage import adopt_stored, duplicate_task, same_task
from asyncjobs.task import ENQUEUEABLE_STATES, Task, TaskState

if TYPE_CHECKING:
    from asyncjobs.queue import Queue
    from asyncjobs.storage import Storage

log = logging.getLogger("asyncjobs")

PIPELINED_STATES: Final = frozenset({TaskState.NEW, TaskState.BLOCKED})
"""States enqueued pipelined. A task in state ``retry`` takes the sequential path: its item carries no
``Nats-Msg-Id``, so an item sent for a repeated enqueue of a task that has started would not be dropped."""
_LIVE_STATES: Final = ENQUEUEABLE_STATES | {TaskState.ACTIVE}

ItemOutcome = PubAck | Exception


async def enqueue_pipelined(storage: Storage, task: Task, queue: Queue) -> None:
    """Store a task and publish its work item without waiting for the first acknowledgement in between.

    The guarantees and errors are those of :meth:`Storage.enqueue`. A task in state ``retry``, or one this client
    has stored before (``task.seq`` set), is enqueued sequentially. When the id belongs to another task, the item
    sent alongside is dropped by the server as a duplicate within the queue's duplicate window; after it, the item
    is withdrawn again, unless that other task waits in the same queue (a queue holds one item per task, so the new
    item replaced that task's own and now stands for it).

    Raises:
        InvalidTaskStateError: the task is not in state new, retry or blocked.
        ConfigurationError: the task is larger than the server accepts (nothing is sent).
        DuplicateTaskError: another task with that id exists, or its work item is a duplicate.
        EnqueueError: the work item could not be published.
        RequestTimeout: the task store did not answer within the retry window; the message says what was done.
        JetStreamUnavailable: as ``RequestTimeout``, for a task store without a leader.
    """
    if task.state not in PIPELINED_STATES or task.seq or task._generated_id != task.id:
        # A custom id may be another task's (staged, in another queue, started): an item sent for it could run
        # that task before the save's conflict is known, so such tasks keep the sequential order.
        await storage.enqueue(task, queue)
        return
    task.queue = queue.name
    data = storage.encode_for_save(task)  # a task too large to store must not get an item
    # The save runs inline and writes its request to the connection before it first waits; the item's request
    # follows from its own task as soon as it does. One task per enqueue instead of two (asyncio.gather).
    sending = asyncio.ensure_future(storage.send_item(task, queue, pipelined=True))
    failed: Exception | None = None
    started = time.monotonic()
    try:
        await storage.save_task(task, data=data)
    except Exception as exc:
        failed = exc
    except BaseException:
        sending.cancel()
        raise
    saving_s = time.monotonic() - started
    sent: ItemOutcome
    try:
        sent = await sending
    except Exception as exc:
        sent = exc
    if failed is not None and not await _after_failed_save(storage, task, queue, data, failed, sent):
        return
    if isinstance(sent, AsyncJobsError):
        raise await storage.item_error(task, queue, sent) from sent
    if isinstance(sent, Exception):
        raise sent
    if saving_s >= delivery.ORPHAN_GRACE_S / 2:
        await _recheck_item(storage, task, queue)
    await storage.item_sent(task, queue, sent)


async def _recheck_item(storage: Storage, task: Task, queue: Queue) -> None:
    """After a save so slow that a worker may have given up on the item as an orphan: if the task still waits and
    has no item, give it a fresh one (under the reconciler's id for this stored version)."""
    what = f"queue {queue.name}: task {task.id} was stored {delivery.ORPHAN_GRACE_S / 2:g}s or more after its item"
    try:
        if await storage.item_queued(task.id, queue):
            return
        stored = await storage.load_task(task.id, verify=False)
        if stored.seq != task.seq or stored.state not in PIPELINED_STATES:
            return  # a worker took it
        log.warning("%s and the item is gone; publishing a fresh one", what)
        await storage.republish_item(task.id, queue, msg_id=f"{task.id}.{task.seq}")
    except AsyncJobsError as exc:
        log.warning("%s; could not check its item (the reconciler will): %s", what, exc)


async def _after_failed_save(
    storage: Storage, task: Task, queue: Queue, data: bytes, exc: Exception, sent: ItemOutcome
) -> bool:
    """Decide what a failed save means, now that the item was sent too.

    Returns:
        Whether the item's outcome is still to be checked (the task is stored, waiting); ``False`` when nothing more
        is to be done (an earlier enqueue of this very task stored it and it has started, or a fresh item was sent).

    Raises:
        DuplicateTaskError: another task holds the id.
        Exception: ``exc``, or the same class with a message saying what became of the task and its item.
    """
    if not isinstance(exc, TaskConflict | RequestTimeout | JetStreamUnavailable):
        await _withdraw(storage, task, queue, sent)  # the store refused the task: its item must not stay
        raise exc
    try:
        stored: Task | None = await storage.load_task(task.id, verify=False)
    except TaskNotFound:
        stored = None
    except AsyncJobsError:
        if isinstance(exc, TaskConflict):
            raise
        advice = "may be stored and its work item may be queued: enqueue the same task again (it is idempotent)"
        raise _explained(exc, f"task {task.id} {advice}") from exc
    if stored is not None and same_task(stored, task):
        # Enqueued before (or the timed-out save landed): carry on from it. Once it has started, the item we sent
        # must not stay (the sequential path publishes none then).
        waiting = adopt_stored(task, stored)
        if not waiting:
            await _withdraw(storage, task, queue, sent)
        return waiting
    if stored is None and not isinstance(exc, TaskConflict):
        await _save_late(storage, task, queue, data, sent)
        return not isinstance(sent, PubAck)
    # Another task holds the id (or held it: deleted since).
    await _stray_item(storage, task, queue, sent, stored)
    raise duplicate_task(task) from exc


async def _save_late(storage: Storage, task: Task, queue: Queue, data: bytes, sent: ItemOutcome) -> None:
    """The task store answers again and does not hold the task: store it now, and give it a fresh item.

    The item sent with the first save may have been terminated meanwhile as an orphan, and the server still
    remembers its ``Nats-Msg-Id``, so a new one is published under the reconciler's id for this stored version
    (``<id>.<sequence>``); it replaces the first one if that is still queued.
    """
    try:
        await storage.save_task(task, data=data)
    except Exception:
        await _withdraw(storage, task, queue, sent)
        raise
    if not isinstance(sent, PubAck):
        return  # the item failed too: the caller reports that as for a stored task
    try:
        await storage.republish_item(task.id, queue, msg_id=f"{task.id}.{task.seq}")
    except AsyncJobsError as item_exc:
        raise await storage.item_error(task, queue, item_exc) from item_exc
    METRICS.enqueue_count.labels(queue.name).inc()


async def _stray_item(storage: Storage, task: Task, queue: Queue, sent: ItemOutcome, stored: Task | None) -> None:
    """Our item names a task that is not ours: keep it if it now stands for that task's own item, else withdraw it."""
    if stored is not None and stored.queue == queue.name and stored.state in _LIVE_STATES:
        return  # it replaced that task's item (one per task in a queue), or gives a stranded one an item
    await _withdraw(storage, task, queue, sent)


async def _withdraw(storage: Storage, task: Task, queue: Queue, sent: ItemOutcome) -> None:
    """Delete the item we sent, if the server stored it (a duplicate, or a failed publish, stored nothing)."""
    if isinstance(sent, PubAck) and not sent.duplicate:
        await storage.withdraw_item(queue, sent.seq, task.id)


def _explained(exc: JetStreamError, what: str) -> JetStreamError:
    """``exc`` again (same class, so ``except TimeoutError`` still matches), its message saying what to do."""
    explained = type(exc)(f"{exc}; {what}", code=exc.code, err_code=exc.err_code, description=exc.description)
    explained.attempts = exc.attempts
    return explained
