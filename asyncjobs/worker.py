"""The worker: takes items off a queue and runs their tasks' handlers.

The protocol is in docs/protocol.md, sections Pulling work items, Processing an item, Failure, retry and termination,
and Dependencies.

Each delivered item goes through the same gates as the Go worker (load, state, deadline, tries, dependencies), is set
``active``, runs under the queue's max run time, and ends in :meth:`Settler.settle`, the one place that decides
how a delivery ends: ``+ACK`` on success, ``+TERM`` when the task reached a final state, or ``-NAK {"delay": <ns>}``
to hand it back. No hand-back can strand a task: on the queue's last permitted delivery a hand-back becomes a final
state, or a fresh item when the task was not at fault. Differences from Go are listed in
``docs/decisions.md``; each one stays readable by Go clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Final

from nats.aio.msg import Msg

from asyncjobs import codec
from asyncjobs.concluding import Concluding
from asyncjobs.constants import ACK, BLOCKED_NAK_DELAY_NS, ERR_DEPENDENCIES_FAILED, HDR_AJ_PIPELINED, TERM
from asyncjobs.delivery import ACK_TIMEOUT_S, delivery_count, nak, orphan_delay_ns
from asyncjobs.errors import (
    AsyncJobsError,
    CorruptDataError,
    SignatureError,
    TaskNotFound,
)
from asyncjobs.handling import HandlerRunner
from asyncjobs.metrics import METRICS
from asyncjobs.puller import WAITED_KEEP_ALIVE_S, Puller, prefetch_for
from asyncjobs.retry import RETRY_LINEAR_TEN_SECONDS, RetryPolicy
from asyncjobs.settle import HandBack, Settler, past_deadline, tries_used_up
from asyncjobs.task import FAILED_STATES, Task, TaskState
from asyncjobs.upkeep import InProcess, Upkeep
from asyncjobs.wiretime import NS_PER_SECOND, WireTime

if TYPE_CHECKING:
    from asyncjobs.queue import Queue
    from asyncjobs.reconciler import Reconciler
    from asyncjobs.router import Router
    from asyncjobs.storage import Storage

log = logging.getLogger("asyncjobs")

_WAITING_STATES: Final = frozenset({TaskState.NEW, TaskState.RETRY, TaskState.BLOCKED})
_DONE_STATES: Final = frozenset(
    {TaskState.COMPLETED, TaskState.EXPIRED, TaskState.TERMINATED, TaskState.UNREACHABLE, TaskState.QUEUE_ERROR}
)


class Worker:
    """Runs handlers for one queue with at most ``concurrency`` at a time in this process.

    Args:
        storage: task storage.
        queue: the bound queue, with the server's settings.
        router: the handlers.
        concurrency: handlers running at once in this process.
        retry_policy: NAK delays for failed tasks.
        shutdown_grace: seconds to let running handlers finish when the worker stops.
        api_prefix: the JetStream API prefix.
        until_idle: return once the queue has nothing waiting or in flight.
        reconciler: repairs stuck tasks of the queue while the worker runs.
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
        until_idle: bool = False,
        reconciler: Reconciler | None = None,
    ) -> None:
        self.storage = storage
        self.nc = storage.nc
        self.queue = queue
        self.shutdown_grace = shutdown_grace
        self.max_run_time_ns = queue.max_run_time_ns
        self.max_deliver = queue.max_tries
        self.until_idle = until_idle
        self.reconciler = reconciler
        self.inbox: asyncio.Queue[tuple[float, Msg]] = asyncio.Queue()
        """Delivered items waiting for a slot, with the monotonic time each arrived."""
        self.slots: list[asyncio.Task[None]] = []
        self.busy = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.stopping = False
        self.running: dict[str, InProcess] = {}
        """Deliveries this worker is processing now (from activation to settling), by task id."""
        self.settling = Concluding(self)
        """Outcomes being stored and acked off their slots."""
        self.upkeep = Upkeep(self)
        self.settler = Settler(storage, queue)
        self.handlers = HandlerRunner(self, router, retry_policy)
        self.puller = Puller(
            self.nc,
            f"{api_prefix}.CONSUMER.MSG.NEXT.{queue.stream}.WORKERS",
            queue.name,
            slots=concurrency,
            prefetch=prefetch_for(concurrency),
            deliver=self._deliver,
            on_recovered=self._recovered,
        )

    async def run(self) -> None:
        """Process items until cancelled (or, with ``until_idle``, until the queue is idle).

        On the way out running handlers get ``shutdown_grace`` to finish.

        Raises:
            ClientClosedError: the NATS connection was closed for good.
        """
        self.slots = [
            asyncio.create_task(self._slot(), name=f"asyncjobs-slot-{self.queue.name}-{n}")
            for n in range(self.puller.slots)
        ]
        name = self.queue.name
        # The puller (and the idle check) decide when the worker ends; the rest only serve it.
        deciding = [asyncio.create_task(self.puller.run(), name=f"asyncjobs-pull-{name}")]
        if self.until_idle:
            deciding.append(asyncio.create_task(self.upkeep.wait_idle(), name=f"asyncjobs-idle-{name}"))
        serving = [asyncio.create_task(self.upkeep.watch_loop_lag(), name=f"asyncjobs-lag-{name}")]
        if self.reconciler is not None:
            serving.append(asyncio.create_task(self.reconciler.run(), name=f"asyncjobs-reconcile-{name}"))
            serving.append(asyncio.create_task(self.reconciler.watch_dead_items(), name=f"asyncjobs-dead-{name}"))
        for task in serving:
            task.add_done_callback(self._served)
        # Kept until the last outcome is settled, shutdown grace included.
        keep_alive = asyncio.create_task(self.upkeep.keep_alive(), name=f"asyncjobs-wpi-{name}")
        helpers = deciding + serving
        try:
            done, _ = await asyncio.wait(deciding, return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                finished.result()  # the puller failing for good (a closed connection) ends the worker
        finally:
            self.stopping = True
            for helper in helpers:
                helper.cancel()
            try:
                await asyncio.gather(*helpers, return_exceptions=True)
            finally:
                # Runs even when a second cancellation lands on the await above: no handler outlives the worker.
                try:
                    await self._drain()
                finally:
                    keep_alive.cancel()
                    await asyncio.gather(keep_alive, return_exceptions=True)

    def _served(self, task: asyncio.Task[None]) -> None:
        # A background duty that ended on its own while the worker runs: say so, the worker goes on without it.
        if not task.cancelled() and not self.stopping:
            log.error("queue %s: %s stopped: %r", self.queue.name, task.get_name(), task.exception())

    async def _drain(self) -> None:
        """Hand back what was not started, give running handlers the shutdown grace, then cancel them.

        Cancelling the worker a second time (a second stop signal) ends the grace at once: running handlers are
        cancelled and their tasks handed back.
        """
        unstarted = [*self.puller.overflow]
        self.puller.overflow.clear()
        while not self.inbox.empty():
            unstarted.append(self.inbox.get_nowait()[1])
        for msg in unstarted:
            # Not started: straight back to the queue (a fresh item if this was its last permitted delivery).
            await self.settler.settle(msg, delivery_count(msg.reply), None, nak(0), hand_back=HandBack.REQUEUE)
        me = asyncio.current_task()
        hurried = me is not None and me.cancelling() > 1  # cancelled again while stopping: no grace
        try:
            if (self.busy or self.settling) and not hurried:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.shutdown_grace):
                        await self.idle.wait()
        finally:
            # Also when a second cancellation cuts the grace short: running handlers are cancelled and their tasks
            # handed back now, never left running after the worker is gone.
            for slot in self.slots:
                slot.cancel()
            await asyncio.wait(self.slots, timeout=ACK_TIMEOUT_S * 2)
            # Outcomes being stored are not handler code: they get the same short while to finish. One cut off
            # leaves its task active with its item unacked, which the gates settle on the item's next delivery.
            await self.settling.finish(ACK_TIMEOUT_S * 2)

    def _recovered(self) -> None:
        # The consumer answers again: resend acks its new leader may have missed, and look for lost deliveries.
        self.settler.replay_acks()
        if self.reconciler is not None:
            self.reconciler.wake()

    def _deliver(self, msg: Msg) -> None:
        self.inbox.put_nowait((time.monotonic(), msg))

    async def _slot(self) -> None:
        # One long-lived coroutine per concurrency slot: cheaper than a task per item.
        me = asyncio.current_task()
        assert me is not None
        while True:
            arrived, msg = await self.inbox.get()
            if time.monotonic() - arrived >= WAITED_KEEP_ALIVE_S:
                # A prefetched item that waited for a slot: its ack wait ran meanwhile, the handler's has not
                # started. Restart it, so the server does not deliver the item elsewhere while it runs here.
                self.upkeep.keep_alive_now(msg)
            self.busy += 1
            self.idle.clear()
            try:
                await self._process(msg)
            except asyncio.CancelledError:
                if me.cancelling():
                    # Stopped before its handler started (loading, gates, activation): straight back to the queue.
                    await self.hand_back(msg, nak(0))
                    raise
                # Not ours: something inside the processing raised it. Keep the slot; hand the item back.
                log.error("queue %s: a stray cancellation while processing an item; handing it back", self.queue.name)
                await self.hand_back(msg)
            except Exception:
                log.exception("queue %s: unexpected error processing an item; handing it back", self.queue.name)
                await self.hand_back(msg)
            finally:
                self.busy -= 1
                if not self.busy and not self.settling:
                    self.idle.set()
                if not self.stopping:
                    self.puller.release()
            if me.cancelling():
                return  # the worker is stopping: the handed-back item was this slot's last

    # ---- one item -------------------------------------------------------------------------------------------

    async def _process(self, msg: Msg) -> None:
        queue = self.queue.name
        delivered = delivery_count(msg.reply)
        try:
            task_id = codec.decode_item(msg.data)
        except CorruptDataError as exc:
            METRICS.item_corrupt_error_count.labels(queue).inc()
            log.warning("queue %s: terminating an item: %s", queue, exc)
            await self.settler.ack(msg, TERM)
            return
        running = self.running.get(task_id)
        if running is not None:
            # Redelivered because its handler ran to the ack wait, or a second item (a forced retry_task, a repeated
            # enqueue): never run a task twice at once in one worker. The item is dropped; if the running delivery
            # ends up handing the task back, it queues a fresh item.
            log.warning("queue %s: task %s %s; not starting it twice", queue, task_id, self._why_again(running))
            running.dropped_duplicate = True
            await self.settler.ack(msg, TERM)
            return
        task = await self._load(msg, task_id, delivered)
        if task is None:
            return
        now = WireTime.now()
        if not await self._passes_gates(msg, task, now, delivered):
            return
        previous = task.state
        task.state = TaskState.ACTIVE
        task.tried_at = now
        task.last_err = ""
        # Upstream counts the try only in memory until the next save, so a worker that dies mid-handler loses
        # the count and a task that kills its worker runs forever; we store it with the active state.
        task.tries += 1
        entry = self.running[task.id] = InProcess(task, msg, time.monotonic())  # until its delivery is settled
        try:
            try:
                await self.storage.save_task(task)
            except AsyncJobsError as exc:
                # Another worker or a retry_task() changed it, or the store stayed unavailable: look again later.
                log.info("queue %s: could not set task %s active, handing it back: %s", queue, task_id, exc)
                task.tries -= 1
                task.state = previous
                await self.settler.settle(msg, delivered, task, self._later(delivered), hand_back=HandBack.REQUEUE)
                return
            await self.handlers.run(msg, task, delivered)
        finally:
            if self.running.get(task.id) is entry and not entry.concluding:
                del self.running[task.id]
        if entry.dropped_duplicate and not entry.concluding:
            await self.restore_item(task.id)

    async def conclude(self, task: Task, settling: Coroutine[Any, Any, None]) -> None:
        """Settle a delivery whose handler has finished, off its slot when it can (:meth:`Concluding.conclude`)."""
        await self.settling.conclude(task, settling)

    def _why_again(self, running: InProcess) -> str:
        limit_s = self.max_run_time_ns / NS_PER_SECOND
        handler = running.task._handler  # its deadline moves with task.mark_in_progress()
        left_s = handler.deadline - time.time() if handler is not None else limit_s - (time.monotonic() - running.since)
        if left_s > 1:
            return "was delivered again while this worker runs it (a second item: forced retry_task, repeated enqueue)"
        return (
            f"was delivered again: its handler ran for the queue's max run time of {limit_s:g}s (it is cancelled and "
            "the task retried; if it keeps running, it blocks the event loop: use asyncio.to_thread for blocking "
            "code, and task.mark_in_progress() or a longer max_run_time for long work)"
        )

    async def restore_item(self, task_id: str) -> None:
        """After a duplicate delivery was dropped: a task left waiting (handed back, or retried by someone) must still
        have an item, since the dropped one may have been the only one."""
        try:
            stored = await self.storage.load_task(task_id, verify=False)
            if stored.state not in _WAITING_STATES or await self.storage.item_queued(task_id, self.queue):
                return
        except AsyncJobsError as exc:
            log.info(
                "queue %s: could not check the item of task %s (the reconciler will): %s", self.queue.name, task_id, exc
            )
            return
        await self.settler.requeue(task_id, f"it is {stored.state.value} and a duplicate delivery of it was dropped")

    async def hand_back(self, msg: Msg, body: bytes | None = None) -> None:
        """Hand back an item whose processing broke off (a bug, a cancellation): never a dead item."""
        delivered = delivery_count(msg.reply)
        body = self._later(delivered) if body is None else body
        await self.settler.settle(msg, delivered, None, body, hand_back=HandBack.REQUEUE)

    @staticmethod
    def _later(delivered: int) -> bytes:
        """The hand-back for a transient problem: look again after a short, growing delay."""
        return nak(RETRY_LINEAR_TEN_SECONDS.delay_ns(delivered))

    async def _load(self, msg: Msg, task_id: str, delivered: int) -> Task | None:
        queue = self.queue.name
        try:
            return await self.storage.load_task(task_id)
        except TaskNotFound:
            # A young item of a pipelined enqueue may be ahead of its task's save: look again shortly. On the last
            # permitted delivery a hand-back would become a fresh item whose age starts again: terminate instead.
            ahead = msg.headers is not None and msg.headers.get(HDR_AJ_PIPELINED) == "1"
            delay_ns = orphan_delay_ns(msg.reply, delivered, time.time_ns()) if ahead else None
            if delay_ns is not None and not self.settler.is_last(delivered):
                wait_s = delay_ns / NS_PER_SECOND
                log.debug("queue %s: task %s is not stored yet, handing its item back for %gs", queue, task_id, wait_s)
                await self.settler.settle(msg, delivered, None, nak(delay_ns), hand_back=HandBack.REQUEUE)
                return None
            METRICS.task_not_found_error_count.labels(queue).inc()
            log.info("queue %s: task %s does not exist, terminating its item", queue, task_id)
            await self.settler.ack(msg, TERM)
        except SignatureError as exc:
            METRICS.task_not_found_error_count.labels(queue).inc()
            log.warning("queue %s: task %s failed signature verification: %s", queue, task_id, exc)
            await self._terminate_untrusted(task_id, str(exc))
            await self.settler.ack(msg, TERM)
        except CorruptDataError as exc:
            METRICS.task_not_found_error_count.labels(queue).inc()
            log.warning("queue %s: task %s cannot be decoded, terminating its item: %s", queue, task_id, exc)
            await self.settler.ack(msg, TERM)
        except AsyncJobsError as exc:
            METRICS.task_not_found_error_count.labels(queue).inc()
            log.warning("queue %s: could not load task %s, handing it back: %s", queue, task_id, exc)
            await self.settler.settle(
                msg, delivered, None, nak(RETRY_LINEAR_TEN_SECONDS.delay_ns(delivered)), hand_back=HandBack.REQUEUE
            )
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
            await self.settler.ack(msg, ACK)
            return False
        if task.state == TaskState.ACTIVE and task.tried_at is not None:
            elapsed = now.unix_ns - task.tried_at.unix_ns
            if elapsed < self.max_run_time_ns:
                # Another handler may still be running it: look again once its run time is up.
                wait = nak(max(self.max_run_time_ns - elapsed, NS_PER_SECOND))
                reason = "it is still active in another worker"
                await self.settler.settle(msg, delivered, task, wait, reason=reason, hand_back=HandBack.YIELD)
                return False
        if task.deadline_at is not None and now.unix_ns > task.deadline_at.unix_ns:
            METRICS.task_past_deadline_count.labels(queue).inc()
            await self.settler.expire(msg, delivered, task, past_deadline(task))
            return False
        if task.max_tries > 0 and task.tries >= task.max_tries:
            METRICS.task_past_max_tries_count.labels(queue).inc()
            await self.settler.expire(msg, delivered, task, tries_used_up(task))
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
                reason = f"{ERR_DEPENDENCIES_FAILED}: task not found: {parent_id}"
                await self.settler.unreachable(msg, delivered, task, reason)
                return False
            except AsyncJobsError as exc:
                log.info("task %s: could not load dependency %s: %s", task.id, parent_id, exc)
                await self.settler.settle(msg, delivered, task, nak(BLOCKED_NAK_DELAY_NS), hand_back=HandBack.REQUEUE)
                return False
            if parent.state in FAILED_STATES or parent.state == TaskState.UNREACHABLE:
                reason = f"{ERR_DEPENDENCIES_FAILED}: task {parent_id} is {parent.state.value or 'in an unknown state'}"
                await self.settler.unreachable(msg, delivered, task, reason)
                return False
            if parent.state != TaskState.COMPLETED:
                waiting = True
            elif task.load_dependencies and parent.result is not None:
                task.dependency_results[parent_id] = parent.result
        if not waiting:
            return True
        reason = f"gave up waiting for dependencies after {delivered} deliveries"
        await self.settler.settle(msg, delivered, task, nak(BLOCKED_NAK_DELAY_NS), reason=reason)
        return False
