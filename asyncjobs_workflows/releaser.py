"""The release loop: reads task events through a durable feed and releases children the moment parents end.

Every task event in the deployment reaches one of the releasers (they share the ``CHORIA_AJ_WORKFLOWS`` consumer
on the events stream); events of tasks that are not workflow steps are acknowledged at once. For a step that
reached a final state the releaser decides its children (:class:`~asyncjobs_workflows.engine.Engine`), then ends
the run when nothing is left to run. An event is acknowledged once handled, and given back when handling failed
(a JetStream outage), so it is handled again, here or by another releaser.

Task events are published on core NATS after each save and are not guaranteed to be stored (a publisher may
crash between the save and the publish). So each releaser also sweeps every running run every
``sweep_interval`` seconds, and at start: it completes half-submitted runs, decides blocked steps whose parents
ended, queues released steps that lost their work item, and ends runs that are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from typing import Final

from asyncjobs import AsyncJobsError, ClientClosedError, EventFeed, FeedItem, TaskState, TaskStateEvent
from asyncjobs.metrics import METRICS
from asyncjobs.wiretime import WireTime, format_time
from asyncjobs_workflows.constants import FEED_ACK_WAIT_S, FEED_NAME, RUN_KEY_PREFIX, SUBMIT_GRACE_S
from asyncjobs_workflows.control import decide_blocked
from asyncjobs_workflows.engine import Engine
from asyncjobs_workflows.record import RunRecord, RunState, parse_step_task_id, started_key
from asyncjobs_workflows.status import Outcome
from asyncjobs_workflows.stopping import cancel_step
from asyncjobs_workflows.submission import complete_submission

__all__ = ["Releaser"]

log = logging.getLogger("asyncjobs.workflows")

FINAL_STATES: Final = frozenset(
    {
        TaskState.COMPLETED,
        TaskState.EXPIRED,
        TaskState.TERMINATED,
        TaskState.UNREACHABLE,
        TaskState.QUEUE_ERROR,
        TaskState.UNKNOWN,
    }
)
STOP_GRACE_S: Final = 5.0
"""On stop, events being handled get this long to finish; the rest are given back to the other releasers."""
MAX_REDELIVERY_DELAY_S: Final = 30.0


class Releaser:
    """Runs the release loop and the sweep for one client; see the module docstring.

    Args:
        engine: the engine to decide with.
        sweep_interval: seconds between sweeps of the running runs.
        concurrency: events handled at once.
    """

    def __init__(self, engine: Engine, *, sweep_interval: float, concurrency: int) -> None:
        self._engine = engine
        self._sweep_interval = sweep_interval
        self._concurrency = concurrency
        self._handling: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Release until cancelled; returns when the client is closed.

        Raises:
            JetStreamError: the feed or the runs bucket could not be prepared.
        """
        engine = self._engine
        await engine.kv()
        feed = EventFeed(engine.client, FEED_NAME, slots=self._concurrency, ack_wait=FEED_ACK_WAIT_S)
        sweeping = asyncio.create_task(self._sweep_forever(), name="asyncjobs-workflows-sweep")
        try:
            async with feed:
                async for item in feed:
                    self._spawn(item)
        except ClientClosedError:
            log.info("workflow releaser: the client was closed, stopping")
        finally:
            sweeping.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sweeping
            await self._drain()

    def _spawn(self, item: FeedItem) -> None:
        event = item.event
        parsed = parse_step_task_id(event.task_id) if isinstance(event, TaskStateEvent) else None
        if parsed is None or not isinstance(event, TaskStateEvent):
            METRICS.workflow_events_total.labels("other").inc()
            item.ack()
            return
        METRICS.workflow_events_total.labels("step").inc()
        handling = asyncio.create_task(self._handle(item, event, *parsed))
        self._handling.add(handling)
        handling.add_done_callback(self._handling.discard)

    async def _handle(self, item: FeedItem, event: TaskStateEvent, run_id: str, step: str) -> None:
        try:
            await self.on_step_event(run_id, step, event.state, item.stored_at)
        except asyncio.CancelledError:
            item.nak()  # stopping: another releaser takes it at once
            raise
        except (AsyncJobsError, OSError) as exc:
            delay = min(float(2 ** min(item.delivered, 5)), MAX_REDELIVERY_DELAY_S)
            log.warning(
                "workflow run %s: handling the %s event of step %s failed, trying again in %.0fs: %s",
                run_id,
                event.state.value,
                step,
                delay,
                exc,
            )
            item.nak(delay)
            return
        except Exception:
            log.exception("workflow run %s: handling the event of step %s failed unexpectedly", run_id, step)
            item.nak(MAX_REDELIVERY_DELAY_S)
            return
        item.ack()

    async def on_step_event(self, run_id: str, step: str, state: TaskState, stored_at: datetime) -> None:
        """Handle one step's task event: note when it started, or decide its children and maybe end the run."""
        engine = self._engine
        if state == TaskState.ACTIVE:
            stamp = format_time(WireTime.from_datetime(stored_at))
            await (await engine.kv()).put(started_key(run_id, step), stamp.encode())
            return
        if state not in FINAL_STATES and state != TaskState.RETRY:
            return
        record = await engine.load_record(run_id)
        if record is not None and record.state is RunState.CANCELLED:
            if state == TaskState.RETRY:
                # A step that was running when its run was cancelled failed: its next try must not start.
                await cancel_step(engine, run_id, step)
                return
            # A release that raced the cancel may have left an item to a child (its releaser died before checking).
            loaded = await engine.loaded(record)
            for child in () if loaded is None else loaded.graph.children.get(step, ()):
                await cancel_step(engine, run_id, child)
            return
        if record is None or record.state is not RunState.RUNNING or state == TaskState.RETRY:
            return
        loaded = await engine.loaded(record)
        if loaded is None or step not in loaded.workflow.steps:
            return
        # Read the step itself: the event may be stale (the run was retried since).
        if engine.note(record, step, await engine.load_task(run_id, step)) is Outcome.PENDING:
            return
        waiting = await engine.settle(record, loaded, step, since_ns=WireTime.from_datetime(stored_at).unix_ns)
        if not waiting:  # a child still waiting for a parent means the run goes on: no need to look
            await engine.finish_if_done(record, loaded)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except (AsyncJobsError, OSError) as exc:
                log.warning(
                    "workflow releaser: the sweep of running runs failed, next in %.0fs: %s", self._sweep_interval, exc
                )
            await asyncio.sleep(self._sweep_interval)

    async def sweep(self) -> int:
        """Check every running run once (see the module docstring); returns how many runs were checked.

        A run that cannot be checked (a JetStream error, a step that cannot be stored) is logged and skipped: one
        wedged run never keeps the others from being repaired.
        """
        engine = self._engine
        checked = 0
        for entry in await (await engine.kv()).entries(RUN_KEY_PREFIX + "*"):
            try:
                record = RunRecord.decode(entry.value, revision=entry.revision)
            except AsyncJobsError as exc:
                log.warning("workflow releaser: skipping run record %s: %s", entry.key, exc)
                continue
            if record.state is not RunState.RUNNING:
                continue
            try:
                if await self._sweep_run(record):
                    checked += 1
            except (AsyncJobsError, OSError) as exc:
                log.warning("workflow releaser: the sweep could not check run %s, trying next time: %s", record.id, exc)
        return checked

    async def _sweep_run(self, listed: RunRecord) -> bool:
        engine = self._engine
        record = await engine.load_record(listed.id)  # the listing may be old by now in a large deployment
        if record is None or record.state is not RunState.RUNNING:
            return False
        loaded = await engine.loaded(record)
        if loaded is None:
            return False
        if not record.submitted:
            age_s = time.time() - record.created.unix_ns / 1e9
            if age_s > SUBMIT_GRACE_S:
                log.info("workflow run %s was left half-submitted %.0fs ago: completing it", record.id, age_s)
                await complete_submission(engine, record, loaded)
            return True
        await decide_blocked(engine, record, loaded)
        await engine.finish_if_done(record, loaded)
        return True

    async def _drain(self) -> None:
        handling = list(self._handling)
        if not handling:
            return
        _, pending = await asyncio.wait(handling, timeout=STOP_GRACE_S)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
