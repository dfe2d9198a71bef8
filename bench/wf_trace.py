"""The workflows benchmark's probes: running a workflow (or flat tasks) to its end, timestamps from inside the
releaser, and the raw JetStream hop it is compared with."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Self

import orjson
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy

import asyncjobs
from asyncjobs import TaskState, TaskStateEvent
from asyncjobs.codec import decode_event
from asyncjobs.constants import TASK_EVENT_WILDCARD
from asyncjobs.wiretime import WireTime
from asyncjobs_workflows import Workflow, Workflows
from asyncjobs_workflows.constants import RUN_EVENT_PREFIX
from asyncjobs_workflows.record import RunState, new_run_id, step_task_id
from asyncjobs_workflows.releaser import FINAL_STATES, Releaser
from asyncjobs_workflows.runevents import decode_run_event
from bench.raw import PAYLOAD, check_ack
from bench.wf_common import STEP_TIMEOUT_S, TASK_TYPE, WorkerProcess, ms

HOP_STREAM: Final = "BENCH_WF_HOP"
HOP_SUBJECT: Final = "BENCH.WF_HOP"


# ---- the submitter's side: run to the end ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ran:
    run_id: str
    seconds: float
    """From calling ``submit`` until the run's final event arrived."""


class Finished:
    """The submitter's side of a deployment: runs a workflow (or flat tasks) to its end and says how long it took.

    A run's end is its ``run_state`` event (core NATS, subscribed before the submit); flat tasks end with the
    ``complete`` task event of the last of them. Every wait is bounded and fails at once if the worker process or
    the releaser died.
    """

    def __init__(
        self,
        client: asyncjobs.Client,
        flows: Workflows,
        worker: WorkerProcess | None,
        releasing: asyncio.Task[None] | None,
    ) -> None:
        self.client = client
        self.flows = flows
        self.worker = worker
        self._releasing = releasing
        self._runs: dict[str, asyncio.Future[float]] = {}
        self._subscription: Subscription | None = None

    async def __aenter__(self) -> Self:
        self._subscription = await self.client.nc.subscribe(RUN_EVENT_PREFIX + "*", cb=self._on_run_event)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()

    async def _on_run_event(self, msg: Msg) -> None:
        event = decode_run_event(msg.data)
        waiter = self._runs.get(event.run_id)
        if event.state is not RunState.RUNNING and waiter is not None and not waiter.done():
            waiter.set_result(time.perf_counter())

    async def run(self, workflow: Workflow) -> Ran:
        """Submit ``workflow`` and wait for the run to end; it must complete."""
        run_id = new_run_id()
        waiter = self._runs[run_id] = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        await self.flows.submit(workflow, run_id=run_id)
        ended = await self._wait(waiter, f"run {run_id} of {workflow.name} ({len(workflow.steps)} steps)")
        state = (await self.flows.get(run_id)).state
        if state is not RunState.COMPLETE:
            raise RuntimeError(f"run {run_id} of {workflow.name} ended {state.value}, not complete")
        del self._runs[run_id]
        return Ran(run_id, ended - started)

    async def flat(self, count: int) -> float:
        """``enqueue_many`` of ``count`` no-op tasks; the seconds until the last is stored ``complete``."""
        tasks = [asyncjobs.Task(TASK_TYPE, None) for _ in range(count)]
        pending = {task.id for task in tasks}
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        async def on_event(msg: Msg) -> None:
            event = decode_event(msg.data)
            if isinstance(event, TaskStateEvent) and event.state == TaskState.COMPLETED:
                pending.discard(event.task_id)
                if not pending and not waiter.done():
                    waiter.set_result(time.perf_counter())

        subscription = await self.client.nc.subscribe(TASK_EVENT_WILDCARD, cb=on_event)
        try:
            started = time.perf_counter()
            await self.client.enqueue_many(tasks)
            return await self._wait(waiter, f"{count} flat tasks") - started
        finally:
            await subscription.unsubscribe()

    def read_starts(self) -> dict[str, int]:
        assert self.worker is not None
        return self.worker.read_starts()

    async def started(self, task_id: str) -> None:
        """Wait until the worker entered the handler of ``task_id``."""
        what = f"the start of task {task_id}"
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while task_id not in self.read_starts():
            self._check(what)
            if time.monotonic() > deadline:
                raise TimeoutError(f"workflows benchmark stalled: {what} not seen within {STEP_TIMEOUT_S:.0f}s")
            await asyncio.sleep(0.001)

    async def _wait(self, waiter: asyncio.Future[float], what: str) -> float:
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while not waiter.done():
            self._check(what)
            if time.monotonic() > deadline:
                raise TimeoutError(f"workflows benchmark stalled: {what} not ended within {STEP_TIMEOUT_S:.0f}s")
            await asyncio.wait({waiter}, timeout=0.5)
        return waiter.result()

    def _check(self, what: str) -> None:
        if self.worker is not None:
            self.worker.check()
        if self._releasing is not None and self._releasing.done():
            self._releasing.result()
            raise RuntimeError(f"the releaser stopped while waiting for {what}")


# ---- where the release latency goes -----------------------------------------------------------------------------


class Spans:
    """Timestamps from inside the in-process releaser, taken by wrapping (not changing) a few of its calls.

    ``Releaser.on_step_event`` notes when a step's final event reached the releaser (and when the events stream
    stored it); the releaser client's ``staged.update`` and ``staged.release`` note when a child was saved ``new``
    and when its work item was published, and its ``get_task`` calls are counted.
    """

    def __init__(self) -> None:
        self.events: dict[str, tuple[int, int]] = {}
        """Parent task id -> (unix ns its final event was stored, unix ns the releaser took it up)."""
        self.saved_new: dict[str, int] = {}
        self.released: dict[str, int] = {}
        self.reads = 0
        """Tasks the releaser's client loaded (``get_task``) so far."""
        self.failures: list[Exception] = []
        """Errors of the probe itself (a changed releaser signature, say); :meth:`breakdown` raises the first."""

    @contextlib.contextmanager
    def tracing(self) -> Iterator[None]:
        original = Releaser.on_step_event
        events, failures = self.events, self.failures

        async def traced(self: Releaser, run_id: str, step: str, state: TaskState, stored_at: Any, *rest: Any) -> None:
            try:
                if state in FINAL_STATES:
                    events.setdefault(step_task_id(run_id, step), (_unix_ns(stored_at), time.time_ns()))
            except Exception as exc:  # the probe must never change what the releaser does: report it afterwards
                failures.append(exc)
            await original(self, run_id, step, state, stored_at, *rest)

        Releaser.on_step_event = traced  # type: ignore[method-assign]
        try:
            yield
        finally:
            Releaser.on_step_event = original  # type: ignore[method-assign]

    def attach(self, client: asyncjobs.Client) -> None:
        """Wrap ``client.staged``'s update and release, and count ``client.get_task`` (the releaser's client only)."""
        staged = client.staged
        update, release = staged.update, staged.release

        async def traced_update(task: asyncjobs.Task, **options: Any) -> asyncjobs.Task:
            stored = await update(task, **options)
            if task.state == TaskState.NEW:
                self.saved_new.setdefault(task.id, time.time_ns())
            return stored

        async def traced_release(task: asyncjobs.Task, **options: Any) -> bool:
            published = await release(task, **options)
            self.released.setdefault(task.id, time.time_ns())
            return published

        get_task = client.get_task

        async def counted_get_task(task_id: str) -> asyncjobs.Task:
            self.reads += 1
            return await get_task(task_id)

        staged.update = traced_update  # type: ignore[method-assign]
        staged.release = traced_release  # type: ignore[method-assign]
        client.get_task = counted_get_task  # type: ignore[method-assign]

    def breakdown(
        self,
        pairs: list[tuple[str, str]],
        done_ns: dict[str, int],
        saved_ns: dict[str, int],
        starts: dict[str, int],
    ) -> list[tuple[str, float]]:
        """The median of each part of parent completed -> child started, over the pairs traced end to end.

        Raises:
            RuntimeError: the probe failed while tracing.
        """
        if self.failures:
            raise RuntimeError(f"the releaser probe failed {len(self.failures)} times") from self.failures[0]
        parts: list[list[float]] = [[] for _ in range(7)]
        for parent, child in pairs:
            if parent not in self.events or child not in self.saved_new or child not in self.released:
                continue
            event_stored, taken = self.events[parent]
            marks = [
                done_ns[parent],
                saved_ns[parent],
                event_stored,
                taken,
                self.saved_new[child],
                self.released[child],
                starts[child],
            ]
            for i, (a, b) in enumerate(itertools.pairwise(marks)):
                parts[i].append(ms(b - a))
            parts[6].append(ms(marks[-1] - marks[0]))
        labels = (
            "worker stores the parent `complete` (handler returned -> JetStream time of the save)",
            "its `complete` event is stored in `CHORIA_AJ_EVENTS`",
            "the event feed delivers it to the releaser (`on_step_event` entered)",
            "releaser reads the run record and the parent and child tasks, saves the child `new`",
            "releaser publishes the child's work item (`staged.release`, with ack)",
            "worker starts the child (pull, load the task, save it `active`, enter the handler)",
            f"total, over {len(parts[6])} pairs traced end to end",
        )
        return [
            (label, statistics.median(values) if values else float("nan"))
            for label, values in zip(labels, parts, strict=True)
        ]


def _unix_ns(when: datetime | float) -> int:
    """When the events stream stored an event, as the releaser was given it: an aware datetime or unix seconds."""
    return WireTime.from_datetime(when).unix_ns if isinstance(when, datetime) else int(when * 1e9)


async def raw_hops(client: asyncjobs.Client, count: int, warmup: int = 20) -> tuple[list[float], list[float]]:
    """One message at a time into a file work-queue stream whose pull consumer has requests waiting (as the core's
    puller keeps them): the publish's round trip and the publish-to-delivery hop, in ms."""
    nc = client.nc
    js = nc.jetstream()
    await js.add_stream(name=HOP_STREAM, subjects=[HOP_SUBJECT], retention=RetentionPolicy.WORK_QUEUE)
    await js.add_consumer(HOP_STREAM, ConsumerConfig(durable_name="HOP", ack_policy=AckPolicy.EXPLICIT))
    delivered: asyncio.Queue[tuple[int, Msg]] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        delivered.put_nowait((time.time_ns(), msg))

    inbox = nc.new_inbox()
    subscription = await nc.subscribe(inbox, cb=on_msg)
    try:
        pull = orjson.dumps({"batch": count + warmup, "expires": int(STEP_TIMEOUT_S * 1e9)})
        await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{HOP_STREAM}.HOP", pull, reply=inbox)
        await nc.flush()
        round_trips, hops = [], []
        for i in range(count + warmup):
            sent = time.time_ns()
            check_ack((await nc.request(HOP_SUBJECT, PAYLOAD, timeout=10)).data, "publish")
            acked = time.time_ns()
            got, msg = await asyncio.wait_for(delivered.get(), 10)
            await nc.publish(msg.reply or "", b"+ACK")
            if i >= warmup:
                round_trips.append(ms(acked - sent))
                hops.append(ms(got - sent))
        return round_trips, hops
    finally:
        await subscription.unsubscribe()
