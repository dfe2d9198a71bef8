"""Task storage in JetStream: streams, buckets and queues, and every task read and write.

See docs/protocol.md, sections Connecting and provisioning, Enqueue, and Discarding final states.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Final

from nats.aio.client import Client as NATS

from asyncjobs import codec
from asyncjobs.constants import (
    ERR_DUPLICATE_ITEM,
    HDR_AJ_PIPELINED,
    HDR_EXPECTED_LAST_SUBJECT_SEQ,
    HDR_MSG_ID,
    JS_ERR_MSG_DELETE_FAILED,
    JS_ERR_WRONG_LAST_SEQUENCE_CONSTANT,
    TASK_EVENT_PREFIX,
    TASK_SUBJECT_PREFIX,
    TASKS_STREAM,
)
from asyncjobs.errors import (
    AsyncJobsError,
    ConfigurationError,
    DuplicateTaskError,
    EnqueueError,
    InvalidTaskStateError,
    JetStreamError,
    JetStreamUnavailable,
    QueueNotFound,
    RequestTimeout,
    TaskConflict,
    TaskNotFound,
)
from asyncjobs.jsapi import TASK_ERRORS, JetStream, PubAck
from asyncjobs.metrics import METRICS
from asyncjobs.queue import Queue
from asyncjobs.signing import TaskVerifier
from asyncjobs.task import ENQUEUEABLE_STATES, Task, TaskState, validate_name

log = logging.getLogger("asyncjobs")

NO_RESPONDERS_TEXT: Final = "nats: no responders available for request"
PIPELINE_CHUNK: Final = 512
# Room left in a message for the subject, headers and protocol line of a task save.
TASK_ENVELOPE_BYTES: Final = 512
IN_FLIGHT_CONFLICT: Final = JS_ERR_WRONG_LAST_SEQUENCE_CONSTANT
LANDED_CHECKS: Final = 5
LANDED_CHECK_INTERVAL_S: Final = 0.2


class Storage:
    """Reads and writes tasks, work items and events for one client.

    Args:
        nc: the NATS connection.
        js: the JetStream API wrapper.
        discard: end states in which tasks are deleted instead of saved.
        verifier: verifies task signatures on load, when set.
    """

    def __init__(
        self,
        nc: NATS,
        js: JetStream,
        *,
        discard: frozenset[TaskState] = frozenset(),
        verifier: TaskVerifier | None = None,
    ) -> None:
        self.nc = nc
        self.js = js
        self.discard = discard
        self.verifier = verifier

    # ---- tasks ----------------------------------------------------------------------------------------------

    async def load_task(self, task_id: str, *, verify: bool = True) -> Task:
        """Load the latest stored copy of a task.

        Raises:
            TaskNotFound: no task has that id.
            SignatureError: a verification key is set and the signature is missing or wrong.
            CorruptDataError: the stored task cannot be decoded.
        """
        validate_name(task_id, "task id")
        stored = await self.js.get_last(TASKS_STREAM, TASK_SUBJECT_PREFIX + task_id, f"loading task {task_id}")
        task = codec.decode_task(stored.data, seq=stored.seq)
        if verify and self.verifier is not None:
            self.verify(task)
        return task

    def verify(self, task: Task) -> None:
        """Check a task's signature with the configured verification key."""
        if self.verifier is None:
            return
        self.verifier.verify(task.signature_envelope(), task.signature)

    def encode_for_save(self, task: Task) -> bytes:
        """The task's JSON as :meth:`save_task` stores it, checked against the server's ``max_payload``.

        Raises:
            ConfigurationError: the encoded task is larger than the server accepts.
        """
        data = codec.encode_task(task)
        max_payload = self.nc.max_payload
        if max_payload and len(data) > max_payload - TASK_ENVELOPE_BYTES:
            METRICS.task_update_error_total.inc()
            raise ConfigurationError(
                f"task {task.id} encodes to {len(data)} bytes, over the NATS server's max_payload of {max_payload} "
                "bytes: keep large data elsewhere (an object store) and pass a reference, or raise max_payload"
            )
        return data

    async def save_task(self, task: Task, *, notify: bool = True, data: bytes | None = None) -> None:
        """Store a task, requiring that nobody changed it since this copy was loaded or saved.

        Transient failures are retried for the client's retry window under the same expected sequence, so a
        write is never applied twice; when a retry conflicts because an earlier, timed-out attempt did land, the
        stored copy is compared with ours and the save counts as done.

        Args:
            task: the task.
            notify: publish its state-change event once it is stored.
            data: the task as :meth:`encode_for_save` returned it, when the caller encoded it already.

        Raises:
            TaskConflict: the stored task changed (``Nats-Expected-Last-Subject-Sequence`` mismatch).
            ConfigurationError: the encoded task is larger than the server accepts.
            JetStreamError: the store rejected the write or stayed unavailable.
        """
        if data is None:
            data = self.encode_for_save(task)
        subject = TASK_SUBJECT_PREFIX + task.id
        headers = {HDR_EXPECTED_LAST_SUBJECT_SEQ: str(task.seq)}
        try:
            ack = await self.js.publish(subject, data, f"saving task {task.id}", headers=headers, stream=TASKS_STREAM)
        except TaskConflict as exc:
            landed = exc.attempts > 1 and await self._landed(task, data, in_flight=exc.err_code == IN_FLIGHT_CONFLICT)
            if not landed:
                METRICS.task_update_error_total.inc()
                raise
        except AsyncJobsError:
            METRICS.task_update_error_total.inc()
            raise
        else:
            task.seq = ack.seq
        METRICS.task_update_total.labels(task.state.value).inc()
        if notify:
            await self.publish_event(task)

    async def _landed(self, task: Task, data: bytes, *, in_flight: bool) -> bool:
        """Whether the stored copy of ``task`` is exactly ``data`` (an earlier attempt landed); adopt its sequence.

        With ``in_flight`` (a replicated stream refused the write because another one to the task was still being
        applied, possibly our own earlier attempt) the store is read a few times before the answer is no.
        """
        what = f"re-reading task {task.id}"
        for attempt in range(LANDED_CHECKS if in_flight else 1):
            if attempt:
                await asyncio.sleep(LANDED_CHECK_INTERVAL_S)
            try:
                stored = await self.js.get_last(TASKS_STREAM, TASK_SUBJECT_PREFIX + task.id, what)
            except AsyncJobsError:
                continue
            if stored.data == data:
                task.seq = stored.seq
                return True
        return False

    async def save_or_discard(self, task: Task) -> None:
        """Save a task, or delete it when its state is one the client discards (docs/protocol.md, Discarding final
        states)."""
        if task.state not in self.discard:
            await self.save_task(task)
            return
        await self.publish_event(task)
        await self.delete_task(task.id)

    async def publish_event(self, task: Task) -> None:
        """Publish the task's state-change event (best effort, as upstream)."""
        try:
            await self.nc.publish(TASK_EVENT_PREFIX + task.id, codec.encode_task_event(task))
        except Exception as exc:  # an event is never worth failing a task for
            log.debug("could not publish the event of task %s: %s", task.id, exc)

    async def delete_task(self, task_id: str) -> None:
        """Erase a task from the store.

        Raises:
            TaskNotFound: no task has that id.
        """
        validate_name(task_id, "task id")
        stored = await self.js.get_last(TASKS_STREAM, TASK_SUBJECT_PREFIX + task_id, f"deleting task {task_id}")
        await self.js.api(
            f"STREAM.MSG.DELETE.{TASKS_STREAM}", {"seq": stored.seq}, f"deleting task {task_id}", errors=TASK_ERRORS
        )

    # ---- enqueue --------------------------------------------------------------------------------------------

    async def enqueue(self, task: Task, queue: Queue, *, dedupe: bool = True) -> None:
        """Store a task and publish its work item (docs/protocol.md, Enqueue), idempotently.

        Enqueueing the same task again (same id and content, e.g. after a timeout or a cancelled call) does not
        fail: while it is still waiting its item is published again under the same ``Nats-Msg-Id`` (the server
        drops the copy within its duplicate window), and once it has started nothing is published.

        Args:
            task: the task, in state new, retry or blocked.
            queue: where its item goes.
            dedupe: send ``Nats-Msg-Id`` so the server drops a duplicate item (never for state ``retry``).

        Raises:
            InvalidTaskStateError: the task is not in state new, retry or blocked.
            DuplicateTaskError: another task with that id exists, or its work item is a duplicate.
            EnqueueError: the work item could not be published.
        """
        if await self.save_for_enqueue(task, queue, adopt=dedupe):
            await self.publish_item(task, queue, dedupe=dedupe)

    async def save_for_enqueue(self, task: Task, queue: Queue | None, *, adopt: bool = True) -> bool:
        """The first half of :meth:`enqueue`: check the state and store the task.

        Args:
            task: the task, in state new, retry or blocked.
            queue: where its item goes; ``None`` stores it on no queue (a staged task, see :mod:`asyncjobs.staged`).
            adopt: when the store already holds this very task (an earlier enqueue of it), carry on from the stored
                copy instead of failing.

        Returns:
            Whether the item still has to be published (``False``: an earlier enqueue of this very task stored it
            and it has already started or finished).

        Raises:
            InvalidTaskStateError: the task is not in state new, retry or blocked.
            DuplicateTaskError: another task with that id exists.
        """
        if task.state not in ENQUEUEABLE_STATES:
            raise InvalidTaskStateError(
                f"cannot enqueue a task in state {task.state.value!r}: only new, retry or blocked tasks can be "
                "enqueued (use retry_task() to run a finished task again)"
            )
        task.queue = "" if queue is None else queue.name
        try:
            await self.save_task(task)
        except TaskConflict as exc:
            if not adopt:
                raise
            stored = await self._same_task(task)
            if stored is None:
                if task.seq != 0:
                    raise
                raise duplicate_task(task) from exc
            return adopt_stored(task, stored)
        return True

    async def _same_task(self, task: Task) -> Task | None:
        """The stored task with ``task``'s id if it is the same task (same envelope and dependencies)."""
        try:
            stored = await self.load_task(task.id, verify=False)
        except TaskNotFound:
            return None
        return stored if same_task(stored, task) else None

    async def publish_item(self, task: Task, queue: Queue, *, dedupe: bool = True, msg_id: str | None = None) -> None:
        """The second half of :meth:`enqueue`: publish the work item.

        Transient failures are retried under the same ``Nats-Msg-Id``, so an item that did land is not doubled.
        A definite failure (no such queue, the queue refused the item) stores the task as ``queue_error``; an
        outage that outlasts the retry window leaves it stored as it is, for a repeated enqueue or the reconciler.

        Raises:
            DuplicateTaskError: the server dropped the item as a duplicate and no item for the task is queued.
            EnqueueError: the work item could not be published.
        """
        try:
            ack = await self.send_item(task, queue, dedupe=dedupe, msg_id=msg_id)
        except AsyncJobsError as exc:
            raise await self.item_error(task, queue, exc) from exc
        await self.item_sent(task, queue, ack)

    async def send_item(
        self, task: Task, queue: Queue, *, dedupe: bool = True, msg_id: str | None = None, pipelined: bool = False
    ) -> PubAck:
        """Publish a task's work item (``Nats-Msg-Id`` as :meth:`publish_item` says) and return the acknowledgement.

        ``pipelined`` marks the item (``AJ-Pipelined: 1``) as sent before its task's save was acknowledged.

        Raises:
            QueueNotFound: the queue does not exist.
            JetStreamError: the item could not be published.
        """
        headers: dict[str, str] | None = None
        if dedupe and task.state != TaskState.RETRY:
            headers = {HDR_MSG_ID: msg_id or task.id}
        if pipelined:
            headers = {**(headers or {}), HDR_AJ_PIPELINED: "1"}
        what = f"publishing the work item of task {task.id} to queue {queue.name!r}"
        return await self.js.publish(
            queue.subject_prefix + task.id, codec.encode_item(task.id), what, headers=headers, stream=queue.stream
        )

    async def item_error(self, task: Task, queue: Queue, exc: AsyncJobsError) -> EnqueueError:
        """Record why a stored task's item could not be published, and return the error for the caller.

        A definite failure stores the task as ``queue_error``; a transient one that outlasted the retry window leaves
        it stored as it is, for a repeated enqueue or the reconciler.
        """
        METRICS.enqueue_error_count.labels(queue.name).inc()
        if isinstance(exc, QueueNotFound):
            await self._mark_queue_error(task, NO_RESPONDERS_TEXT)
            return EnqueueError(
                f"queue {queue.name!r} not found: {NO_RESPONDERS_TEXT}; task {task.id} was saved in state "
                f"queue_error: create the queue (connect with queue={queue.name!r}) and retry_task() it"
            )
        if isinstance(exc, RequestTimeout | JetStreamUnavailable):
            return EnqueueError(
                f"{exc}; task {task.id} is stored in state {task.state.value} but its item may not be queued: "
                "enqueue the same task again (it is idempotent), or leave it to the workers' reconciler"
            )
        await self._mark_queue_error(task, str(exc))
        return EnqueueError(f"{exc}; task {task.id} was saved in state queue_error")

    async def item_sent(self, task: Task, queue: Queue, ack: PubAck) -> None:
        """Check the acknowledgement of a stored task's item: a duplicate is an error only when no item is queued.

        Raises:
            DuplicateTaskError: the server dropped the item as a duplicate and no item for the task is queued (the
                task is stored as ``queue_error``).
        """
        if ack.duplicate and not await self.item_queued(task.id, queue) and not await self._moved_on(task):
            METRICS.enqueue_error_count.labels(queue.name).inc()
            await self._mark_queue_error(task, ERR_DUPLICATE_ITEM)
            raise DuplicateTaskError(f"task {task.id}: {ERR_DUPLICATE_ITEM}; the task was saved in state queue_error")
        METRICS.enqueue_count.labels(queue.name).inc()

    async def _moved_on(self, task: Task) -> bool:
        """Whether a worker took the task's item since it was stored: a duplicate item was then this task's own."""
        try:
            stored = await self.load_task(task.id, verify=False)
        except TaskNotFound:
            return False
        return stored.seq != task.seq and stored.signature_envelope() == task.signature_envelope()

    async def republish_item(self, task_id: str, queue: Queue, *, msg_id: str | None = None) -> bool:
        """Publish a fresh work item for a stored task, replacing any item it has (one per task in a queue).

        The new item starts with a fresh delivery count. ``msg_id`` lets concurrent repairers of the same stored
        task version publish only one item between them.

        Returns:
            Whether an item was stored (``False``: the server dropped it as a duplicate of ``msg_id``).

        Raises:
            QueueNotFound: the queue does not exist.
            JetStreamError: the item could not be published.
        """
        headers = {HDR_MSG_ID: msg_id} if msg_id else None
        what = f"republishing the work item of task {task_id} to queue {queue.name!r}"
        ack = await self.js.publish(
            queue.subject_prefix + task_id, codec.encode_item(task_id), what, headers=headers, stream=queue.stream
        )
        return not ack.duplicate

    async def withdraw_item(self, queue: Queue, seq: int, task_id: str) -> None:
        """Delete one work item by its stream sequence, best effort: an item a worker already took is gone anyway."""
        what = f"withdrawing the work item of task {task_id} from queue {queue.name!r}"
        try:
            await self.js.api(f"STREAM.MSG.DELETE.{queue.stream}", {"seq": seq, "no_erase": True}, what)
        except AsyncJobsError as exc:
            if not (isinstance(exc, JetStreamError) and exc.err_code == JS_ERR_MSG_DELETE_FAILED):
                log.warning("%s failed: %s", what, exc)  # 10057 is "no message found": a worker took it meanwhile

    async def item_queued(self, task_id: str, queue: Queue) -> bool:
        """Whether the queue holds a work item for the task."""
        try:
            await self.js.get_last(queue.stream, queue.subject_prefix + task_id, f"looking up the item of {task_id}")
        except TaskNotFound:
            return False
        return True

    async def _mark_queue_error(self, task: Task, reason: str) -> None:
        task.state = TaskState.QUEUE_ERROR
        task.last_err = reason
        try:
            await self.save_task(task)
        except AsyncJobsError as exc:
            log.warning("could not record queue_error on task %s: %s", task.id, exc)

    async def enqueue_many(self, tasks: Sequence[Task], queue: Queue) -> list[Task | AsyncJobsError]:
        """Enqueue many tasks with pipelined requests; return each task or the error that stopped it."""
        outcomes: list[Task | AsyncJobsError] = []
        for start in range(0, len(tasks), PIPELINE_CHUNK):
            chunk = tasks[start : start + PIPELINE_CHUNK]
            saved = await asyncio.gather(*(self.save_for_enqueue(t, queue) for t in chunk), return_exceptions=True)
            ready = [t for t, res in zip(chunk, saved, strict=True) if res is True]
            published = await asyncio.gather(*(self.publish_item(t, queue) for t in ready), return_exceptions=True)
            result_of: dict[int, BaseException | None] = {id(t): r for t, r in zip(ready, published, strict=True)}
            for task, res in zip(chunk, saved, strict=True):
                outcome = res if isinstance(res, BaseException) else result_of.get(id(task))
                if outcome is None:
                    outcomes.append(task)
                elif isinstance(outcome, AsyncJobsError):
                    outcomes.append(outcome)
                else:
                    raise outcome
        return outcomes


def same_task(stored: Task, task: Task) -> bool:
    """Whether a stored task is ``task`` enqueued before: the same signed fields and dependencies."""
    return stored.signature_envelope() == task.signature_envelope() and stored.dependencies == task.dependencies


def adopt_stored(task: Task, stored: Task) -> bool:
    """Carry on from the stored copy of this very task (enqueued before: a retry after a timeout or a cancelled
    call); return whether its item still has to be published (it has not started)."""
    task.seq, task.state, task.tries = stored.seq, stored.state, stored.tries
    task.last_err, task.tried_at, task.result = stored.last_err, stored.tried_at, stored.result
    return stored.state in (TaskState.NEW, TaskState.BLOCKED)


def duplicate_task(task: Task) -> DuplicateTaskError:
    """The error for an enqueue whose id is taken by another task."""
    return DuplicateTaskError(
        f"task {task.id} already exists: pick another id, or load it with get_task() and retry_task() it"
    )
