"""How a delivery ends: the one place that stores a delivery's outcome and sends its ack.

Every path of the worker (gates, handler outcomes, hand-backs, shutdown) ends in :meth:`Settler.settle`, so no path
can skip the check of the queue's last permitted delivery or leave an outcome unstored behind an ``+ACK``:

* A hand-back (``-NAK``) on the last permitted delivery (the consumer's ``max_deliver``) would leave an item JetStream
  never delivers again. What happens instead depends on why the item was handed back (:class:`HandBack`).
* An outcome that cannot be stored (the store stayed unavailable past the retry window) keeps its item: it is handed
  back, so a later delivery records one, instead of being acked with the task left ``active``.
* Final acks (``+ACK``, ``+TERM``) are kept for a minute and sent again when the consumer answers after a
  disturbance (a new leader, a reconnect), since acks sent to a leader that died are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from enum import Enum
from typing import TYPE_CHECKING, Final

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from asyncjobs import codec
from asyncjobs.acklog import AckLog
from asyncjobs.constants import ACK, TERM
from asyncjobs.delivery import nak
from asyncjobs.errors import AsyncJobsError, ConfigurationError, CorruptDataError, TaskConflict, TaskNotFound
from asyncjobs.metrics import METRICS
from asyncjobs.retry import RETRY_LINEAR_TEN_SECONDS
from asyncjobs.task import Task, TaskState
from asyncjobs.wiretime import WireTime, format_time

if TYPE_CHECKING:
    from asyncjobs.queue import Queue
    from asyncjobs.storage import Storage

log = logging.getLogger("asyncjobs")

UNSTORABLE_RESULT: Final = "the handler's result cannot be stored"
STALE_LAST_TRY: Final = "no outcome was recorded for the last try (its worker stopped or lost the item)"
# Final acks are kept this long so they can be sent again once a new consumer leader serves.
ACK_REPLAY_WINDOW_S: Final = 60.0
ACK_REPLAY_MAX: Final = 100_000


class HandBack(Enum):
    """Why an item is handed back (``-NAK``), which decides what its last permitted delivery does instead."""

    RETRY = "retry"
    """The task failed or waits for its dependencies: on the last delivery it ends ``expired``."""
    REQUEUE = "requeue"
    """The task was not at fault (the worker stopped, the store was unavailable, a lost race): on the last delivery
    a fresh item replaces the old one."""
    YIELD = "yield"
    """Another handler runs the task right now and owns its outcome: on the last delivery a fresh item replaces the
    old one (that handler's ``-NAK`` could go to the old one), or, when the queue permits a single delivery (the
    running one's is then a last one too, and its settle ends the task), the item is dropped."""


class Settler:
    """Ends the deliveries of one queue.

    Args:
        storage: task storage.
        queue: the bound queue, with the server's settings (its ``max_tries`` is the consumer's ``max_deliver``).
    """

    def __init__(self, storage: Storage, queue: Queue) -> None:
        self.storage = storage
        self.nc: NATS = storage.nc
        self.queue = queue
        self.max_deliver = queue.max_tries
        self.recent_acks = AckLog(window_s=ACK_REPLAY_WINDOW_S, limit=ACK_REPLAY_MAX)
        self._replaying: asyncio.Task[None] | None = None

    def is_last(self, delivered: int) -> bool:
        """Whether JetStream will not deliver the item again after this delivery."""
        return 0 < self.max_deliver <= delivered

    async def expire(self, msg: Msg, delivered: int, task: Task, why: str) -> None:
        """End a delivery whose task may not run any more: log at WARNING, store it ``expired``, ``+ACK`` the item.

        Args:
            msg: the delivered item.
            delivered: its delivery count.
            task: the task.
            why: why it may not run; the task's earlier ``last_err``, if any, is kept after it.
        """
        reason = with_last_error(why, task.last_err)
        queue = self.queue.name
        log.warning("queue %s: expiring task %s (%s) without running it: %s", queue, task.id, task.type, reason)
        await self.settle(msg, delivered, task, ACK, state=TaskState.EXPIRED, reason=reason)

    async def unreachable(self, msg: Msg, delivered: int, task: Task, reason: str) -> None:
        """End a delivery whose task can never run (a dependency failed): log at WARNING, store it ``unreachable``."""
        METRICS.task_dependencies_failed.inc()
        log.warning("queue %s: task %s (%s) is unreachable: %s", self.queue.name, task.id, task.type, reason)
        await self.settle(msg, delivered, task, TERM, state=TaskState.UNREACHABLE, reason=reason)

    async def settle(
        self,
        msg: Msg,
        delivered: int,
        task: Task | None,
        ack: bytes,
        *,
        state: TaskState | None = None,
        reason: str = "",
        hand_back: HandBack = HandBack.RETRY,
    ) -> None:
        """End a delivery: store ``state`` with ``reason`` (when given), then send ``ack``.

        Args:
            msg: the delivered item.
            delivered: its delivery count.
            task: the task, when it could be loaded.
            ack: ``ACK``, ``TERM`` or a ``-NAK`` body.
            state: the state to store first, if any.
            reason: its ``last_err``.
            hand_back: for a ``-NAK``, why, which decides the last permitted delivery.
        """
        queue = self.queue.name
        last = self.is_last(delivered)
        if last and ack not in (ACK, TERM):
            if hand_back is HandBack.REQUEUE or task is None:
                if task is not None and state is not None:
                    await self.store(task, state, reason)
                await self._requeue(msg, task, delivered)
                return
            if hand_back is HandBack.YIELD:
                if self.max_deliver > 1:
                    # The running handler's -NAK could go to this very item: keep one the queue will deliver.
                    await self._requeue(msg, task, delivered)
                else:
                    # Its own delivery is a last one too, so its settle ends the task: just drop this one.
                    log.warning("queue %s: dropping the last permitted item of task %s: %s", queue, task.id, reason)
                    await self.ack(msg, TERM)
                return
            state, ack = TaskState.EXPIRED, TERM
            deliveries = "1 delivery" if self.max_deliver == 1 else f"{self.max_deliver} deliveries"
            used_up = f"the queue's max_tries ({deliveries}) is used up"
            reason = f"{reason}; {used_up}" if reason else used_up
            log.warning("queue %s: expiring task %s (%s): %s", queue, task.id, task.type, reason)
        if state is not None and task is not None and not await self.store(task, state, reason):
            if last:
                log.error("queue %s: the outcome of task %s is not stored; the reconciler repairs it", queue, task.id)
            else:
                ack = nak(RETRY_LINEAR_TEN_SECONDS.delay_ns(delivered))
        await self.ack(msg, ack)

    async def _requeue(self, msg: Msg, task: Task | None, delivered: int) -> None:
        """Replace an item on its last permitted delivery by a fresh one (the task was not at fault)."""
        try:
            task_id = task.id if task is not None else codec.decode_item(msg.data)
        except CorruptDataError:
            await self.ack(msg, TERM)
            return
        why = f"delivery {delivered} was the queue's last permitted one and the task was not at fault"
        if not await self.requeue(task_id, why):
            await self.ack(msg, TERM)

    async def requeue(self, task_id: str, why: str) -> bool:
        """Publish a fresh item for a task (replacing any it has); ``False`` if that failed (the reconciler will)."""
        log.warning("queue %s: queueing a fresh item for task %s: %s", self.queue.name, task_id, why)
        try:
            await self.storage.republish_item(task_id, self.queue)
        except AsyncJobsError as exc:
            log.error("queue %s: could not requeue task %s (%s); the reconciler will", self.queue.name, task_id, exc)
            return False
        return True

    async def store(self, task: Task, state: TaskState, last_err: str) -> bool:
        """Record an outcome; ``False`` when it could not be stored (a changed or deleted task counts as done)."""
        task.state = state
        task.last_err = last_err
        # A completion is "tried" when its result was made: one timestamp for both.
        result = task.result
        task.tried_at = result.completed_at if state is TaskState.COMPLETED and result is not None else WireTime.now()
        try:
            await self.storage.save_or_discard(task)
        except (TaskConflict, TaskNotFound) as exc:
            # Someone else's write won (a forced retry_task, a delete, a repair): this outcome is dropped, visibly.
            log.warning(
                "queue %s: the %s outcome of task %s was not stored, the task changed meanwhile: %s",
                self.queue.name,
                state.value,
                task.id,
                exc,
            )
        except ConfigurationError as exc:  # the outcome itself cannot be stored: a result over max_payload
            if state is not TaskState.COMPLETED:
                log.error("queue %s: could not store task %s as %s: %s", self.queue.name, task.id, state.value, exc)
                return False
            task.result = None
            return await self.store(task, TaskState.TERMINATED, f"{UNSTORABLE_RESULT}: {exc}")
        except AsyncJobsError as exc:
            log.warning("queue %s: could not store task %s as %s: %s", self.queue.name, task.id, state.value, exc)
            return False
        return True

    # ---- acks -----------------------------------------------------------------------------------------------

    async def ack(self, msg: Msg, body: bytes) -> None:
        """Send an ack body for a delivered item (no reply awaited: a lost ack means a redelivery the gates settle)."""
        if body in (ACK, TERM):
            self.recent_acks.append(msg.reply, body, time.monotonic())
        try:
            await self.nc.publish(msg.reply, body)
        except Exception as exc:  # the item is redelivered after AckWait and the gates handle it
            log.warning("queue %s: could not ack an item (%s): %s", self.queue.name, body.decode(), exc)

    def replay_acks(self) -> None:
        """The consumer answers again after a disturbance: its new leader may never have seen our recent acks."""
        self.recent_acks.expire(time.monotonic())
        if self.recent_acks and self._replaying is None and not self.nc.is_closed:
            self._replaying = asyncio.get_running_loop().create_task(self._resend(self.recent_acks.copy()))

    async def _resend(self, acks: AckLog) -> None:
        # Acks are idempotent: one for an item already removed is ignored by the server.
        log.info("queue %s: re-sending %d recent acks to the consumer's leader", self.queue.name, len(acks))
        try:
            for reply, body in acks:
                with contextlib.suppress(Exception):
                    await self.nc.publish(reply, body)
        finally:
            self._replaying = None


def past_deadline(task: Task) -> str:
    """Why a task whose deadline passed before it could run is expired."""
    deadline = format_time(task.deadline_at) if task.deadline_at is not None else "(none)"
    attempt = "the task could run" if not task.tries else f"try {task.tries + 1} could start"
    return f"its deadline {deadline} passed before {attempt}"


def tries_used_up(task: Task) -> str:
    """Why a task delivered again after its last permitted try is expired."""
    used_up = f"the task's max_tries ({task.max_tries} {'try' if task.max_tries == 1 else 'tries'}) is used up"
    # Still active: the worker of its last try died or lost the item before recording an outcome.
    return f"{STALE_LAST_TRY}; {used_up}" if task.state == TaskState.ACTIVE else used_up


def with_last_error(why: str, last_err: str) -> str:
    """``why`` with the task's earlier error after it, so an expiry never hides what went wrong before."""
    return f"{why}; last error: {last_err}" if last_err and last_err != why else why
