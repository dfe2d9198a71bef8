"""Staged tasks: stored without a work item, and released onto a queue when an outside decision says they may run.

An enqueue stores a task and publishes its work item in one call. Some callers need the two apart: a workflow
engine stores every step of a run at once but queues a step only when its parents are done; an approval gate
stores a task and queues it when someone approves. :class:`StagedTasks` (``client.staged``) gives them the pieces,
each with the guarantees of an enqueue:

* :meth:`StagedTasks.stage_many` stores tasks on no queue yet (their ``queue`` is empty) and without items,
  idempotently (staging the same task again carries on from the stored copy, as a repeated enqueue does);
* :meth:`StagedTasks.update` saves a changed task with compare-and-set on the copy that was loaded, so two
  deciders never both win, and publishes its lifecycle event;
* :meth:`StagedTasks.release` puts a stored task on a queue: it records the queue in the task when it has none,
  then publishes the work item, deduplicated on the stored version, so a release repeated by several deciders
  queues one item;
* :meth:`StagedTasks.withdraw` removes a queued item.

A staged task belongs to no queue until it is released, so no worker's reconciler takes it for a task whose item
was lost. A staged task with ``dependencies`` is stored ``blocked``, as upstream stores it: Go's ``ajc tasks view``
shows its parents. Workers only see a task once it is released; a released task in state ``new`` or ``retry``
runs without its parents being checked again, which is what lets the releaser decide (for instance, run a clean-up
step whose parent failed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Final, TypeVar

from asyncjobs.errors import AsyncJobsError, InvalidTaskStateError, TaskNotFound
from asyncjobs.jsapi import QUEUE_ERRORS, TASK_ERRORS, ErrorMap, JetStream
from asyncjobs.queue import Queue
from asyncjobs.storage import PIPELINE_CHUNK, Storage
from asyncjobs.task import ENQUEUEABLE_STATES, Task

__all__ = ["StagedTasks"]

T = TypeVar("T")

RELEASE_MSG_ID_SEPARATOR: Final = ":r"
# Looking up an item: nothing stored for the task is "not queued", a missing stream is a missing queue.
ITEM_ERRORS: Final[ErrorMap] = {**TASK_ERRORS, **QUEUE_ERRORS}


class StagedTasks:
    """Store tasks without queueing them, change them safely, and release them onto the client's queue.

    Reach it as ``client.staged``. Every call is safe to repeat and, once started, finishes even if its caller is
    cancelled, like :meth:`asyncjobs.Client.enqueue`.
    """

    def __init__(
        self,
        storage: Storage,
        js: JetStream,
        queue: Callable[[], Queue],
        sign: Callable[[Task], None],
        shield: Callable[[Coroutine[Any, Any, Any]], Coroutine[Any, Any, Any]],
        check_open: Callable[[], None],
    ) -> None:
        self._storage = storage
        self._js = js
        self._queue = queue
        self._sign = sign
        self._shield = shield
        self._check_open = check_open

    async def stage(self, task: Task) -> Task:
        """Store one task without a work item; see :meth:`stage_many`.

        Raises:
            InvalidTaskStateError: the task is not new, retry or blocked.
            DuplicateTaskError: another task with that id exists.
            JetStreamError: the store stayed unavailable for the retry window.
        """
        outcome = (await self.stage_many([task], return_exceptions=True))[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return task

    async def stage_many(self, tasks: Iterable[Task], *, return_exceptions: bool = False) -> list[Any]:
        """Store tasks on no queue and without work items (pipelined, 512 at a time); :meth:`release` queues them.

        Each task must be ``new`` or ``blocked`` (a task built with dependencies is ``blocked``); its ``queue`` is
        stored empty. Staging a task
        that is already stored as this very task (same signed fields and dependencies) does not fail: the task
        object takes the stored copy's state and sequence, so a staging repeated after a crash or a timeout carries
        on where the first one stopped.

        Args:
            tasks: the tasks to store.
            return_exceptions: return each task or the error that stopped it, instead of raising.

        Returns:
            The tasks (or, with ``return_exceptions``, each task or its error), in order.

        Raises:
            ExceptionGroup: some tasks failed (only without ``return_exceptions``).
        """
        self._check_open()
        batch = list(tasks)
        for task in batch:
            task.queue = ""
            self._sign(task)
        outcomes: list[Any] = await self._shield(self._stage_all(batch))
        failures = [outcome for outcome in outcomes if isinstance(outcome, AsyncJobsError)]
        if failures and not return_exceptions:
            raise ExceptionGroup(f"{len(failures)} of {len(batch)} tasks could not be staged", failures)
        return outcomes

    async def _stage_all(self, batch: list[Task]) -> list[Any]:
        outcomes: list[Any] = []
        for start in range(0, len(batch), PIPELINE_CHUNK):
            chunk = batch[start : start + PIPELINE_CHUNK]
            saved = await asyncio.gather(
                *(self._storage.save_for_enqueue(task, None) for task in chunk), return_exceptions=True
            )
            for task, outcome in zip(chunk, saved, strict=True):
                if isinstance(outcome, AsyncJobsError):
                    outcomes.append(outcome)
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    outcomes.append(task)
        return outcomes

    async def update(self, task: Task) -> Task:
        """Save a changed task, provided nobody saved it since this copy was loaded; publish its event.

        Load the task with :meth:`asyncjobs.Client.get_task`, change it, then update it: when another process saved
        the task in between, :class:`~asyncjobs.TaskConflict` is raised and nothing is written; load it again and
        decide again. With a signing key the task is signed again, since a changed deadline changes what the
        signature covers.

        Raises:
            TaskConflict: the stored task changed since this copy was loaded.
            JetStreamError: the store stayed unavailable for the retry window.
        """
        self._check_open()
        if task.signature:
            task.signature = ""
        self._sign(task)
        await self._shield(self._storage.save_task(task))
        return task

    async def release(self, task: Task, *, queue: str | None = None, msg_id: str | None = None) -> bool:
        """Put a stored task on a queue: publish its work item, so a worker runs it.

        ``task`` must be the stored copy (as loaded, staged or updated), in state ``new``, ``retry`` or
        ``blocked``. A task on no queue yet (a staged one) is first updated with the queue (``queue``, else the
        client's), compare-and-set as :meth:`update`; a task already on a queue keeps it. The item carries
        ``Nats-Msg-Id`` ``<id>:r<sequence>`` by default, so releases of the same stored version by several processes
        within the server's duplicate window queue one item between them.

        Args:
            task: the stored task.
            queue: the queue for a task that has none; by default the client's.
            msg_id: another deduplication id, for callers with their own notion of a release.

        Returns:
            Whether an item was stored (``False``: it was a duplicate of an earlier release).

        Raises:
            InvalidTaskStateError: the task is not new, retry or blocked.
            TaskConflict: the task had to be updated with its queue and changed since it was read.
            QueueNotFound: the queue does not exist.
            JetStreamError: the item could not be published.
        """
        self._check_open()
        if task.state not in ENQUEUEABLE_STATES:
            raise InvalidTaskStateError(
                f"cannot release task {task.id} in state {task.state.value!r}: only new, retry or blocked tasks "
                "can be queued"
            )
        if not task.queue:
            signature = task.signature
            task.queue = self._queue_named(queue).name
            try:
                await self.update(task)
            except AsyncJobsError:
                # Not stored: a release retried with this copy must record the queue again, not skip to the item.
                task.queue, task.signature = "", signature
                raise
        target = self._queue_named(task.queue)
        dedupe = msg_id or f"{task.id}{RELEASE_MSG_ID_SEPARATOR}{task.seq}"
        stored: bool = await self._shield(self._storage.republish_item(task.id, target, msg_id=dedupe))
        return stored

    async def queued(self, task_id: str, *, queue: str | None = None) -> bool:
        """Whether a queue (the client's by default) holds a work item for the task.

        Raises:
            QueueNotFound: the queue does not exist.
        """
        self._check_open()
        target = self._queue_named(queue)
        try:
            await self._js.get_last(
                target.stream, target.subject_prefix + task_id, f"looking up the item of {task_id}", errors=ITEM_ERRORS
            )
        except TaskNotFound:
            return False
        return True

    async def withdraw(self, task_id: str, *, queue: str | None = None) -> bool:
        """Remove a task's work item from a queue (the client's by default), if one is there.

        An item already delivered to a worker is removed too, but the worker goes on with the task; store the task
        in a final state with :meth:`update` so that Python workers drop any copy of the item still to come.

        Returns:
            Whether the queue held an item for the task.

        Raises:
            QueueNotFound: the queue does not exist.
        """
        if not await self.queued(task_id, queue=queue):
            return False
        target = self._queue_named(queue)
        subject = target.subject_prefix + task_id
        await self._js.api(
            f"STREAM.PURGE.{target.stream}",
            {"filter": subject},
            f"withdrawing the item of {task_id}",
            errors=QUEUE_ERRORS,
        )
        return True

    def _queue_named(self, name: str | None) -> Queue:
        """The client's queue, or another one by name."""
        own = self._queue()
        if not name or name == own.name:
            return own
        return Queue(name)
