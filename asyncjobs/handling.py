"""Running one handler, and turning whatever it did into the delivery's outcome.

A handler may return anything, raise anything (``BaseException`` included), block, or never return. Every one of
those ends here in an outcome handed to the worker's single settle path: complete, retry, terminated, expired or
unreachable, with a log line saying why. Nothing a handler does can kill its concurrency slot or the worker.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import TYPE_CHECKING, Any, Final

from nats.aio.msg import Msg

from asyncjobs import codec
from asyncjobs.constants import ACK, TERM
from asyncjobs.delivery import HandlerContext, error_text, nak
from asyncjobs.errors import AsyncJobsError, DependenciesFailed, TaskTimeout, TerminateTask
from asyncjobs.metrics import METRICS
from asyncjobs.retry import RetryPolicy, retry_delay_ns
from asyncjobs.settle import UNSTORABLE_RESULT, HandBack
from asyncjobs.task import Task, TaskResult, TaskState
from asyncjobs.wiretime import NS_PER_SECOND, WireTime

if TYPE_CHECKING:
    from asyncjobs.router import Router
    from asyncjobs.worker import Worker

log = logging.getLogger("asyncjobs")

SHUTDOWN_ERROR: Final = "worker stopped before the handler finished"


class _Shutdown(Exception):
    """The worker stopped while the handler ran."""


class HandlerRunner:
    """Runs handlers for a worker's deliveries.

    Args:
        worker: the worker whose deliveries these are (its settler ends each one).
        router: the handlers.
        retry_policy: NAK delays for failed tasks.
    """

    def __init__(self, worker: Worker, router: Router, retry_policy: RetryPolicy) -> None:
        self.worker = worker
        self.router = router
        self.retry_policy = retry_policy
        self.max_run_time_s = worker.queue.max_run_time_ns / NS_PER_SECOND
        self._warned_sync: set[str] = set()

    async def run(self, msg: Msg, task: Task, delivered: int) -> None:
        """Run the task's handler (the task is stored ``active``) and settle the delivery with its outcome."""
        queue = self.worker.queue.name
        handler = self.router.lookup(task.type)
        context = HandlerContext(self.worker.nc, msg, self.max_run_time_s)
        task._handler = context
        METRICS.handler_busy_count.inc()
        started = time.perf_counter()
        me = asyncio.current_task()
        value: Any = None
        error: BaseException | None = None
        try:
            async with asyncio.timeout(self.max_run_time_s) as scope:
                context.scope = scope
                result = handler(task)
                value = (await result) if inspect.isawaitable(result) else self._not_awaitable(task, result)
        except asyncio.CancelledError as exc:
            # The worker cancelling its slots means it is stopping; otherwise the handler raised it itself (it
            # awaited something another task cancelled, or cancelled its own task), a failure like any other.
            if me is not None and me.cancelling() and self.worker.stopping:
                error = _Shutdown(SHUTDOWN_ERROR)
            else:
                if me is not None and me.cancelling():
                    me.uncancel()  # the handler cancelled its own task: a failure, and the slot goes on
                error = exc
        except TimeoutError as exc:
            error = exc
            if context.scope is not None and context.scope.expired():
                error = TaskTimeout(
                    f"handler exceeded the queue's max run time of {self.max_run_time_s:g}s (raise the queue's "
                    "max_run_time, or call task.mark_in_progress() while the handler makes progress)"
                )
        except Exception as exc:
            error = exc
        except BaseException as exc:  # SystemExit, KeyboardInterrupt, GeneratorExit raised by the handler itself
            log.error(
                "queue %s: the handler of task %s raised %s; a handler cannot stop the worker (close the client "
                "instead), so this counts as a failed try",
                queue,
                task.id,
                type(exc).__name__,
            )
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
                await self._unstorable(msg, task, delivered, exc)
                return
            task.result = TaskResult(payload, WireTime.now())
            await self._settle(msg, delivered, task, ACK, state=TaskState.COMPLETED)
            return
        await self._failed(msg, task, error, delivered)

    async def _settle(
        self,
        msg: Msg,
        delivered: int,
        task: Task,
        ack: bytes,
        *,
        state: TaskState,
        reason: str = "",
        hand_back: HandBack = HandBack.RETRY,
    ) -> None:
        """End the delivery with the handler's outcome, off the slot (:meth:`Worker.conclude`)."""
        settler = self.worker.settler
        await self.worker.conclude(
            task, settler.settle(msg, delivered, task, ack, state=state, reason=reason, hand_back=hand_back)
        )

    def _not_awaitable(self, task: Task, result: Any) -> Any:
        # It already ran to the end: keep its result rather than fail and run it again.
        if task.type not in self._warned_sync:
            self._warned_sync.add(task.type)
            log.warning(
                "queue %s: the handler for %r returned %s instead of an awaitable: declare it with async def "
                "(its return value is stored as the result)",
                self.worker.queue.name,
                task.type,
                type(result).__name__,
            )
        return result

    async def _unstorable(self, msg: Msg, task: Task, delivered: int, exc: AsyncJobsError) -> None:
        # Running it again would repeat its side effects for a result that still could not be stored.
        reason = f"{UNSTORABLE_RESULT}: {exc}"
        log.warning("queue %s: terminating task %s (%s): %s", self.worker.queue.name, task.id, task.type, reason)
        await self._settle(msg, delivered, task, TERM, state=TaskState.TERMINATED, reason=reason)

    async def _failed(self, msg: Msg, task: Task, error: BaseException, delivered: int) -> None:
        queue = self.worker.queue.name
        settle = self._settle
        if isinstance(error, _Shutdown):
            log.info("queue %s: task %s handed back: %s", queue, task.id, SHUTDOWN_ERROR)
            # Not the task's failure: a deploy or a scale-down must not use up its tries (the count was stored when
            # it became active, so that a worker that dies mid-handler still counts).
            task.tries = max(0, task.tries - 1)
            await settle(
                msg, delivered, task, nak(0), state=TaskState.RETRY, reason=SHUTDOWN_ERROR, hand_back=HandBack.REQUEUE
            )
            return
        METRICS.handler_error_total.labels(queue, task.type).inc()
        last_err = error_text(error)
        if isinstance(error, TerminateTask):
            # Not retried, so logged like a last failed try (without a traceback: the handler chose to end it).
            log.warning("queue %s: task %s (%s) terminated by its handler: %s", queue, task.id, task.type, last_err)
            await settle(msg, delivered, task, TERM, state=TaskState.TERMINATED, reason=last_err)
            return
        if isinstance(error, DependenciesFailed):
            await self.worker.conclude(task, self.worker.settler.unreachable(msg, delivered, task, last_err))
            return
        if task.max_tries > 0 and task.tries >= task.max_tries:
            log.warning(
                "queue %s: task %s (%s) failed on try %d of %d, its last, expiring it: %s",
                queue,
                task.id,
                task.type,
                task.tries,
                task.max_tries,
                last_err,
                exc_info=error,
            )
            await settle(msg, delivered, task, TERM, state=TaskState.EXPIRED, reason=last_err)
            return
        delay_ns = retry_delay_ns(self.retry_policy, delivered)
        log.warning(
            "queue %s: task %s (%s) failed on try %d, retrying in %.1fs: %s",
            queue,
            task.id,
            task.type,
            task.tries,
            delay_ns / NS_PER_SECOND,
            last_err,
            exc_info=error,
        )
        await settle(msg, delivered, task, nak(delay_ns), state=TaskState.RETRY, reason=last_err)
