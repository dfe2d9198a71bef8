"""The worker: takes items off a queue and runs their tasks' handlers (upstream §1.7 to §1.9 and §3.2 to §3.7).

Each delivered item goes through the same gates as upstream (load, state, deadline, tries, dependencies), is set
``active``, runs under the queue's max run time, and ends with one ack: ``+ACK`` on success, ``+TERM`` when the task
reached a final state, or ``-NAK {"delay": <ns>}`` to be retried. Differences from upstream are listed in
``docs/decisions.md``; each one stays readable by Go clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, Final

from nats.aio.msg import Msg

from asyncjobs import codec
from asyncjobs.constants import ACK, BLOCKED_NAK_DELAY_NS, ERR_DEPENDENCIES_FAILED, TERM
from asyncjobs.delivery import ACK_TIMEOUT_S, HandlerContext, delivery_count, nak
from asyncjobs.errors import (
    AsyncJobsError,
    CorruptDataError,
    DependenciesFailed,
    SignatureError,
    TaskConflict,
    TaskNotFound,
    TaskTimeout,
    TerminateTask,
)
from asyncjobs.metrics import METRICS
from asyncjobs.puller import Puller
from asyncjobs.retry import RETRY_LINEAR_TEN_SECONDS, RetryPolicy, retry_delay_ns
from asyncjobs.task import FAILED_STATES, Task, TaskResult, TaskState
from asyncjobs.wiretime import NS_PER_SECOND, WireTime

if TYPE_CHECKING:
    from asyncjobs.queue import Queue
    from asyncjobs.router import Router
    from asyncjobs.storage import Storage

log = logging.getLogger("asyncjobs")

SHUTDOWN_ERROR: Final = "worker stopped before the handler finished"
STALE_LAST_TRY: Final = "no outcome was recorded for the last try (its worker stopped or lost the item)"
_DONE_STATES: Final = frozenset({TaskState.COMPLETED, TaskState.EXPIRED, TaskState.TERMINATED, TaskState.UNREACHABLE})


class Worker:
    """Runs handlers for one queue with at most ``concurrency`` at a time in this process.

    Args:
        storage: task storage.
        queue: the bound queue, with the server's settings.
        router: the handlers.
        concurrency: handlers running at once in this process.
        retry_policy: NAK delays for failed tasks.
        shutdown_grace: seconds to let running handlers finish when the worker stops.
    """

    def __init__(
        self,
        storage: Storage,
        queue: Queue,
        router: Router,
        *,
        concurrency: int,
        retry_policy: RetryPolicy,
        shutdown_grace: float,
        api_prefix: str,
    ) -> None:
        self.storage = storage
        self.nc = storage.nc
        self.queue = queue
        self.router = router
        self.retry_policy = retry_policy
        self.shutdown_grace = shutdown_grace
        self.max_run_time_s = queue.max_run_time_ns / NS_PER_SECOND
        self.max_run_time_ns = queue.max_run_time_ns
        self.max_deliver = queue.max_tries
        self.inbox: asyncio.Queue[Msg] = asyncio.Queue()
        self.slots: list[asyncio.Task[None]] = []
        self.busy = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.stopping = False
        self.puller = Puller(
            self.nc,
            f"{api_prefix}.CONSUMER.MSG.NEXT.{queue.stream}.WORKERS",
            queue.name,
            slots=concurrency,
            deliver=self._deliver,
        )

    async def run(self) -> None:
        """Process items until cancelled; on the way out running handlers get ``shutdown_grace`` to finish."""
        self.slots = [
            asyncio.create_task(self._slot(), name=f"asyncjobs-slot-{self.queue.name}-{n}")
            for n in range(self.puller.slots)
        ]
        pulling = asyncio.create_task(self.puller.run(), name=f"asyncjobs-pull-{self.queue.name}")
        try:
            await pulling
        finally:
            self.stopping = True
            pulling.cancel()
            await asyncio.gather(pulling, return_exceptions=True)
            await self._drain()

    async def _drain(self) -> None:
        unstarted = [*self.puller.overflow]
        self.puller.overflow.clear()
        while not self.inbox.empty():
            unstarted.append(self.inbox.get_nowait())
        for msg in unstarted:
            await self._ack(msg, nak(0))
        if self.busy:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.shutdown_grace):
                    await self.idle.wait()
        for slot in self.slots:
            slot.cancel()
        await asyncio.wait(self.slots, timeout=ACK_TIMEOUT_S * 2)

    def _deliver(self, msg: Msg) -> None:
        self.inbox.put_nowait(msg)

    async def _slot(self) -> None:
        # One long-lived coroutine per concurrency slot: cheaper than a task per item.
        while True:
            msg = await self.inbox.get()
            self.busy += 1
            self.idle.clear()
            try:
                await self._process(msg)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("queue %s: unexpected error processing an item", self.queue.name)
            finally:
                self.busy -= 1
                if not self.busy:
                    self.idle.set()
                if not self.stopping:
                    self.puller.release()

    async def _ack(self, msg: Msg, body: bytes) -> None:
        try:
            await self.nc.publish(msg.reply, body)
        except Exception as exc:  # the item is redelivered after AckWait and the gates handle it
            log.warning("queue %s: could not ack an item (%s): %s", self.queue.name, body.decode(), exc)

    def _retrynak(self, delivered: int) -> bytes:
        return nak(retry_delay_ns(self.retry_policy, delivered))

    # ---- one item -------------------------------------------------------------------------------------------

    async def _process(self, msg: Msg) -> None:
        queue = self.queue.name
        delivered = delivery_count(msg.reply)
        try:
            task_id = codec.decode_item(msg.data)
        except CorruptDataError as exc:
            METRICS.item_corrupt_error_count.labels(queue).inc()
            log.warning("queue %s: terminating an item: %s", queue, exc)
            await self._ack(msg, TERM)
            return
        task = await self._load(msg, task_id, delivered)
        if task is None:
            return
        now = WireTime.now()
        if not await self._passes_gates(msg, task, now, delivered):
            return
        task.state = TaskState.ACTIVE
        task.tried_at = now
        task.last_err = ""
        # Upstream counts the try only in memory until the next save, so a worker that dies mid-handler loses
        # the count and a task that kills its worker runs forever; we store it with the active state.
        task.tries += 1
        try:
            await self.storage.save_task(task)
        except AsyncJobsError as exc:
            # Most likely another worker or a retry_task() changed it: look again later.
            log.info("queue %s: could not set task %s active, retrying later: %s", queue, task_id, exc)
            await self._ack(msg, nak(RETRY_LINEAR_TEN_SECONDS.delay_ns(delivered)))
            return
        await self._run_handler(msg, task, delivered)

    async def _load(self, msg: Msg, task_id: str, delivered: int) -> Task | None:
        queue = self.queue.name
        try:
            return await self.storage.load_task(task_id)
        except TaskNotFound:
            METRICS.task_not_found_error_count.labels(queue).inc()
            log.info("queue %s: task %s does not exist, terminating its item", queue, task_id)
            await self._ack(msg, TERM)
        except SignatureError as exc:
            METRICS.task_not_found_error_count.labels(queue).inc()
            log.warning("queue %s: task %s failed signature verification: %s", queue, task_id, exc)
            await self._terminate_untrusted(task_id, str(exc))
            await self._ack(msg, TERM)
        except CorruptDataError as exc:
            METRICS.task_not_found_error_count.labels(queue).inc()
            log.warning("queue %s: task %s cannot be decoded, terminating its item: %s", queue, task_id, exc)
            await self._ack(msg, TERM)
        except AsyncJobsError as exc:
            METRICS.task_not_found_error_count.labels(queue).inc()
            log.warning("queue %s: could not load task %s, retrying: %s", queue, task_id, exc)
            await self._ack(msg, nak(RETRY_LINEAR_TEN_SECONDS.delay_ns(delivered)))
        return None

    async def _terminate_untrusted(self, task_id: str, reason: str) -> None:
        try:
            task = await self.storage.load_task(task_id, verify=False)
            task.state = TaskState.TERMINATED
            task.last_err = reason
            task.tried_at = WireTime.now()
            await self.storage.save_task(task)
        except AsyncJobsError as exc:
            log.warning("could not record the signature failure of task %s: %s", task_id, exc)

    async def _passes_gates(self, msg: Msg, task: Task, now: WireTime, delivered: int) -> bool:
        queue = self.queue.name
        if task.state in _DONE_STATES:
            await self._ack(msg, ACK)
            return False
        if task.state == TaskState.ACTIVE and task.tried_at is not None:
            elapsed = now.unix_ns - task.tried_at.unix_ns
            if elapsed < self.max_run_time_ns:
                # Another handler may still be running it: look again once its run time is up.
                await self._ack(msg, nak(max(self.max_run_time_ns - elapsed, 1_000_000_000)))
                return False
        if task.deadline_at is not None and now.unix_ns > task.deadline_at.unix_ns:
            METRICS.task_past_deadline_count.labels(queue).inc()
            await self._finish(msg, task, TaskState.EXPIRED, ACK, task.last_err)
            return False
        if task.max_tries > 0 and task.tries >= task.max_tries:
            METRICS.task_past_max_tries_count.labels(queue).inc()
            # Still active: the worker of its last try died or lost the item before recording an outcome.
            reason = STALE_LAST_TRY if task.state == TaskState.ACTIVE else task.last_err
            await self._finish(msg, task, TaskState.EXPIRED, ACK, reason)
            return False
        if task.state == TaskState.BLOCKED and task.dependencies:
            return await self._dependencies_ready(msg, task, delivered)
        return True

    async def _dependencies_ready(self, msg: Msg, task: Task, delivered: int) -> bool:
        waiting = False
        for parent_id in task.dependencies:
            try:
                parent = await self.storage.load_task(parent_id)
            except TaskNotFound:
                await self._unreachable(msg, task, f"{ERR_DEPENDENCIES_FAILED}: task not found: {parent_id}")
                return False
            except AsyncJobsError as exc:
                log.info("task %s: could not load dependency %s: %s", task.id, parent_id, exc)
                await self._ack(msg, nak(BLOCKED_NAK_DELAY_NS))
                return False
            if parent.state in FAILED_STATES or parent.state == TaskState.UNREACHABLE:
                reason = f"{ERR_DEPENDENCIES_FAILED}: task {parent_id} is {parent.state.value or 'in an unknown state'}"
                await self._unreachable(msg, task, reason)
                return False
            if parent.state != TaskState.COMPLETED:
                waiting = True
            elif task.load_dependencies and parent.result is not None:
                task.dependency_results[parent_id] = parent.result
        if not waiting:
            return True
        if 0 < self.max_deliver <= delivered:
            reason = f"gave up waiting for dependencies after {delivered} deliveries (queue max_tries)"
            await self._finish(msg, task, TaskState.EXPIRED, TERM, reason)
        else:
            await self._ack(msg, nak(BLOCKED_NAK_DELAY_NS))
        return False

    async def _unreachable(self, msg: Msg, task: Task, reason: str) -> None:
        METRICS.task_dependencies_failed.inc()
        await self._finish(msg, task, TaskState.UNREACHABLE, TERM, reason)

    async def _finish(self, msg: Msg, task: Task, state: TaskState, ack: bytes, last_err: str) -> None:
        """Put a task in a final state, store it (or discard it) and end its item."""
        await self._store(task, state, last_err)
        await self._ack(msg, ack)

    async def _store(self, task: Task, state: TaskState, last_err: str) -> None:
        """Record an outcome; a failure to store it is logged, since the item's ack still has to go out."""
        task.state = state
        task.last_err = last_err
        task.tried_at = WireTime.now()
        try:
            await self.storage.save_or_discard(task)
        except TaskConflict as exc:
            log.info("queue %s: task %s changed while its handler ran: %s", self.queue.name, task.id, exc)
        except AsyncJobsError as exc:
            log.warning("queue %s: could not store task %s as %s: %s", self.queue.name, task.id, state.value, exc)

    # ---- the handler ----------------------------------------------------------------------------------------

    async def _run_handler(self, msg: Msg, task: Task, delivered: int) -> None:
        queue = self.queue.name
        handler = self.router.lookup(task.type)
        context = HandlerContext(self.nc, msg, self.max_run_time_s)
        task._handler = context
        METRICS.handler_busy_count.inc()
        started = time.perf_counter()
        value: Any = None
        error: BaseException | None = None
        try:
            async with asyncio.timeout(self.max_run_time_s) as scope:
                context.scope = scope
                value = await handler(task)
        except asyncio.CancelledError:
            if not self.stopping:
                raise
            error = asyncio.CancelledError(SHUTDOWN_ERROR)
        except TimeoutError as exc:
            error = exc
            if context.scope is not None and context.scope.expired():
                error = TaskTimeout(f"handler exceeded the queue's max run time of {self.max_run_time_s:g}s")
        except Exception as exc:
            error = exc
        finally:
            task._handler = None
            METRICS.handler_busy_count.dec()
            METRICS.handler_runtime.labels(queue, task.type).observe(time.perf_counter() - started)
        if error is None:
            try:
                payload = codec.result_payload(value)
            except AsyncJobsError as exc:
                error = exc
            else:
                await self._complete(msg, task, payload)
                return
        await self._failed(msg, task, error, delivered)

    async def _complete(self, msg: Msg, task: Task, payload: Any) -> None:
        now = WireTime.now()
        task.state = TaskState.COMPLETED
        task.tried_at = now
        task.last_err = ""
        task.result = TaskResult(payload, now)
        try:
            await self.storage.save_or_discard(task)
        except AsyncJobsError as exc:
            log.warning("queue %s: task %s completed but could not be stored: %s", self.queue.name, task.id, exc)
        await self._ack(msg, ACK)

    async def _failed(self, msg: Msg, task: Task, error: BaseException, delivered: int) -> None:
        queue = self.queue.name
        METRICS.handler_error_total.labels(queue, task.type).inc()
        last_err = str(error) or type(error).__name__
        if isinstance(error, asyncio.CancelledError):
            # Shutting down: hand the task straight to another worker.
            await self._store(task, TaskState.RETRY, SHUTDOWN_ERROR)
            await self._ack(msg, nak(0))
            return
        if isinstance(error, TerminateTask):
            await self._finish(msg, task, TaskState.TERMINATED, TERM, last_err)
            return
        if isinstance(error, DependenciesFailed):
            await self._unreachable(msg, task, last_err)
            return
        out_of_tries = task.max_tries > 0 and task.tries >= task.max_tries
        out_of_deliveries = 0 < self.max_deliver <= delivered
        if out_of_tries or out_of_deliveries:
            log.info("queue %s: expiring task %s after %d tries: %s", queue, task.id, task.tries, last_err)
            await self._finish(msg, task, TaskState.EXPIRED, TERM, last_err)
            return
        log.debug("queue %s: task %s failed (try %d), retrying: %s", queue, task.id, task.tries, last_err)
        await self._store(task, TaskState.RETRY, last_err)
        await self._ack(msg, self._retrynak(delivered))
