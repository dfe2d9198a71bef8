"""Worker semantics against a real server: outcomes, acks, gates, retries, expiry and shutdown."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

import asyncjobs
from asyncjobs import TaskState
from asyncjobs.testing import eventually
from tests.core.conftest import ClientFactory, running, wait_state


class AckLog:
    """Collects the ack bodies sent for a queue's items, read off the wire with a core subscription."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def watch(self, nc: NATS, queue: str) -> None:
        async def record(msg: Msg) -> None:
            self.bodies.append(msg.data)

        await nc.subscribe(f"$JS.ACK.CHORIA_AJ_Q_{queue}.WORKERS.>", cb=record)
        await nc.flush()

    def count(self, prefix: bytes) -> int:
        return sum(1 for body in self.bodies if body.startswith(prefix))


async def test_success_stores_result_and_acks(make_client: ClientFactory, nc: NATS) -> None:
    acks = AckLog()
    await acks.watch(nc, "W")
    client = await make_client(queue="W")
    router = asyncjobs.Router()
    seen: list[tuple[str, int, Any]] = []

    @router.handler("email:new")
    async def handle(task: asyncjobs.Task) -> dict[str, Any]:
        seen.append((task.state.value, task.tries, task.payload_json()))
        return {"sent": True}

    task = await client.enqueue(asyncjobs.Task("email:new", {"to": "a@example.net"}))
    assert task.state == TaskState.NEW
    async with running(client, router):
        done = await wait_state(client, task.id, TaskState.COMPLETED)
    assert seen == [("active", 1, {"to": "a@example.net"})]
    assert done.tries == 1
    assert done.result is not None and done.result.payload == {"sent": True}
    assert done.last_err == ""
    assert done.tried is not None and done.tried >= done.created
    await eventually(lambda: acks.bodies == [b"+ACK"], message="exactly one +ACK")
    info = await client.admin.queue_info("W")
    assert info.items == 0


async def test_failure_retries_with_nak_delay_then_completes(make_client: ClientFactory, nc: NATS) -> None:
    acks = AckLog()
    await acks.watch(nc, "R")
    client = await make_client(queue="R")
    router = asyncjobs.Router()

    @router.handler("flaky")
    async def handle(task: asyncjobs.Task) -> str:
        if task.tries < 3:
            raise RuntimeError(f"attempt {task.tries} failed")
        return "ok"

    task = await client.enqueue(asyncjobs.Task("flaky"))
    async with running(client, router):
        done = await wait_state(client, task.id, TaskState.COMPLETED)
    assert done.tries == 3
    assert done.last_err == ""
    naks = [body for body in acks.bodies if body.startswith(b"-NAK")]
    assert len(naks) == 2
    for body in naks:
        delay = orjson.loads(body[len(b"-NAK ") :])["delay"]
        assert isinstance(delay, int) and 5_000_000 <= delay <= 55_000_000
        assert body.startswith(b'-NAK {"delay": ')
    await eventually(lambda: acks.count(b"+ACK") == 1)


async def test_failure_records_retry_state_and_error(make_client: ClientFactory) -> None:
    client = await make_client(queue="E", retry_policy=asyncjobs.LinearPolicy(steps=1, jitter=0, min_s=30, max_s=31))
    router = asyncjobs.Router()

    @router.handler("boom")
    async def handle(task: asyncjobs.Task) -> None:
        raise ValueError("smtp: connection refused")

    task = await client.enqueue(asyncjobs.Task("boom"))
    async with running(client, router):
        failed = await wait_state(client, task.id, TaskState.RETRY)
    assert failed.tries == 1
    assert failed.last_err == "ValueError: smtp: connection refused"


async def test_terminate_task_ends_with_term(make_client: ClientFactory, nc: NATS) -> None:
    acks = AckLog()
    await acks.watch(nc, "T")
    client = await make_client(queue="T")
    router = asyncjobs.Router()

    @router.handler("bad")
    async def handle(task: asyncjobs.Task) -> None:
        raise asyncjobs.TerminateTask("invalid task payload")

    task = await client.enqueue(asyncjobs.Task("bad"))
    async with running(client, router):
        done = await wait_state(client, task.id, TaskState.TERMINATED)
    assert done.last_err == "invalid task payload: terminate task"
    assert done.tries == 1
    await eventually(lambda: acks.bodies == [b"+TERM"])
    await eventually(lambda: _items(client, "T"), message="queue empty")


async def _items(client: asyncjobs.Client, queue: str) -> bool:
    return (await client.admin.queue_info(queue)).items == 0


async def test_task_max_tries_expires_with_final_state(make_client: ClientFactory, nc: NATS) -> None:
    acks = AckLog()
    await acks.watch(nc, "M")
    client = await make_client(queue="M")
    router = asyncjobs.Router()
    calls = 0

    @router.handler("fail")
    async def handle(task: asyncjobs.Task) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("nope")

    task = await client.enqueue(asyncjobs.Task("fail", max_tries=3))
    async with running(client, router):
        done = await wait_state(client, task.id, TaskState.EXPIRED)
    assert done.tries == 3 and calls == 3
    assert done.last_err == "RuntimeError: nope"
    await eventually(lambda: acks.count(b"+TERM") == 1 and acks.count(b"-NAK") == 2)
    await eventually(lambda: _items(client, "M"), message="no dead item left in the queue")


async def test_queue_max_tries_gives_final_state(make_client: ClientFactory) -> None:
    client = await make_client(queue=asyncjobs.Queue("QM", max_tries=2))
    router = asyncjobs.Router()

    @router.handler("fail")
    async def handle(task: asyncjobs.Task) -> None:
        raise RuntimeError("still failing")

    task = await client.enqueue(asyncjobs.Task("fail", max_tries=0))
    async with running(client, router):
        done = await wait_state(client, task.id, TaskState.EXPIRED)
    assert done.tries == 2
    await eventually(lambda: _items(client, "QM"), message="no dead item left in the queue")


async def test_past_deadline_expires_without_running(make_client: ClientFactory, nc: NATS) -> None:
    acks = AckLog()
    await acks.watch(nc, "D")
    client = await make_client(queue="D")
    router = asyncjobs.Router()
    ran = False

    @router.handler("late")
    async def handle(task: asyncjobs.Task) -> None:
        nonlocal ran
        ran = True

    deadline = datetime.now(UTC) + timedelta(milliseconds=50)
    task = await client.enqueue(asyncjobs.Task("late", deadline=deadline))
    await asyncio.sleep(0.1)  # let the deadline pass before any worker exists
    async with running(client, router):
        done = await wait_state(client, task.id, TaskState.EXPIRED)
    assert not ran and done.tries == 0
    assert done.deadline is not None
    await eventually(lambda: acks.bodies == [b"+ACK"], message="expired item acked at once")


async def test_unrouted_task_is_retried_without_middleware(make_client: ClientFactory) -> None:
    client = await make_client(queue="U", retry_policy=asyncjobs.LinearPolicy(steps=1, jitter=0, min_s=30, max_s=31))
    router = asyncjobs.Router()
    wrapped: list[str] = []

    def mw(next_handler: asyncjobs.Handler) -> asyncjobs.Handler:
        async def inner(task: asyncjobs.Task) -> Any:
            wrapped.append(task.type)
            return await next_handler(task)

        return inner

    router.use(mw)

    @router.handler("known")
    async def handle(task: asyncjobs.Task) -> None:
        return None

    task = await client.enqueue(asyncjobs.Task("unknown"))
    async with running(client, router):
        failed = await wait_state(client, task.id, TaskState.RETRY)
    assert failed.last_err == 'no handler for task type "unknown"'
    assert wrapped == []


async def test_max_run_time_cancels_handler(make_client: ClientFactory) -> None:
    client = await make_client(queue=asyncjobs.Queue("MRT", max_run_time=0.5), concurrency=1)
    router = asyncjobs.Router()
    cancelled = asyncio.Event()

    @router.handler("slow")
    async def handle(task: asyncjobs.Task) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = await client.enqueue(asyncjobs.Task("slow", max_tries=1))
    async with running(client, router):
        done = await wait_state(client, task.id, TaskState.EXPIRED)
    assert cancelled.is_set()
    assert "max run time of 0.5s" in done.last_err


async def test_mark_in_progress_extends_the_deadline(make_client: ClientFactory, nc: NATS) -> None:
    acks = AckLog()
    await acks.watch(nc, "WPI")
    client = await make_client(queue=asyncjobs.Queue("WPI", max_run_time=1.0))
    router = asyncjobs.Router()

    @router.handler("long")
    async def handle(task: asyncjobs.Task) -> str:
        # 1.6 s in all, past the 1 s run time: only the extensions keep it alive.
        for _ in range(4):
            await asyncio.sleep(0.4)
            await task.mark_in_progress()
        return "finished"

    task = await client.enqueue(asyncjobs.Task("long"))
    async with running(client, router):
        done = await wait_state(client, task.id, TaskState.COMPLETED)
    assert done.tries == 1
    assert acks.count(b"+WPI") == 4
    await eventually(lambda: acks.bodies[-1] == b"+ACK")


async def test_mark_in_progress_outside_a_handler() -> None:
    task = asyncjobs.Task("x")
    try:
        await task.mark_in_progress()
    except asyncjobs.HandlerNotSupported as exc:
        assert "inside" in str(exc)
    else:
        raise AssertionError("mark_in_progress outside a handler must fail")


async def test_discarded_states_are_deleted(make_client: ClientFactory) -> None:
    client = await make_client(queue="DS", discard=["completed"])
    router = asyncjobs.Router()

    @router.handler("x")
    async def handle(task: asyncjobs.Task) -> None:
        return None

    events: list[asyncjobs.Event] = []
    task = asyncjobs.Task("x")

    async def collect() -> None:
        async for event in client.events(task.id):
            events.append(event)

    collector = asyncio.create_task(collect())
    await asyncio.sleep(0.05)
    await client.enqueue(task)
    async with running(client, router):

        async def gone() -> bool:
            try:
                await client.get_task(task.id)
            except asyncjobs.TaskNotFound:
                return True
            return False

        await eventually(gone, message="completed task discarded")
    await eventually(lambda: [getattr(e, "state", None) for e in events] == ["new", "active", "complete"])
    collector.cancel()


async def test_unknown_task_and_corrupt_items_are_terminated(make_client: ClientFactory, nc: NATS) -> None:
    acks = AckLog()
    await acks.watch(nc, "C")
    client = await make_client(queue="C")
    router = asyncjobs.Router()

    @router.handler("")
    async def handle(task: asyncjobs.Task) -> None:
        return None

    js = nc.jetstream()
    await js.publish("CHORIA_AJ.Q.C.missing", b'{"kind":0,"job":"3GqtCeloEv8f4pnECKClET4Svy0"}')
    await js.publish("CHORIA_AJ.Q.C.empty", b"")
    await js.publish("CHORIA_AJ.Q.C.garbage", b"{not json")
    await js.publish("CHORIA_AJ.Q.C.nojob", b'{"kind":0,"job":""}')
    async with running(client, router):
        await eventually(lambda: acks.count(b"+TERM") == 4, message="four items terminated")
        await eventually(lambda: _items(client, "C"), message="queue empty")


async def test_shutdown_hands_running_task_back(make_client: ClientFactory) -> None:
    client = await make_client(queue="SD", shutdown_grace=0.1)
    router = asyncjobs.Router()
    started = asyncio.Event()

    @router.handler("stuck")
    async def handle(task: asyncjobs.Task) -> None:
        started.set()
        await asyncio.sleep(30)

    task = await client.enqueue(asyncjobs.Task("stuck"))
    async with running(client, router):
        await asyncio.wait_for(started.wait(), 10)
    stored = await client.get_task(task.id)
    assert stored.state == TaskState.RETRY
    assert stored.last_err == "worker stopped before the handler finished"

    other = await make_client(queue="SD")
    finish = asyncjobs.Router()

    @finish.handler("stuck")
    async def quick(task: asyncjobs.Task) -> str:
        return "done"

    async with running(other, finish):
        done = await wait_state(other, task.id, TaskState.COMPLETED)
    assert done.tries == 1  # the run cut short by the shutdown is not counted as a try


async def test_close_stops_run(make_client: ClientFactory) -> None:
    client = await make_client(queue="CL")
    router = asyncjobs.Router()

    @router.handler("x")
    async def handle(task: asyncjobs.Task) -> None:
        return None

    runner = asyncio.create_task(client.run(router))
    await asyncio.sleep(0.1)
    await client.close()
    await asyncio.wait_for(runner, 5)
    assert runner.done() and not runner.cancelled()
    assert client.closed
    try:
        await client.enqueue(asyncjobs.Task("x"))
    except asyncjobs.ClientClosedError:
        pass
    else:
        raise AssertionError("a closed client must refuse work")


async def test_concurrency_limit_is_respected(make_client: ClientFactory) -> None:
    client = await make_client(queue="CC", concurrency=3)
    router = asyncjobs.Router()
    active = 0
    peak = 0

    @router.handler("x")
    async def handle(task: asyncjobs.Task) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.02)
        active -= 1

    tasks = [asyncjobs.Task("x") for _ in range(30)]
    await client.enqueue_many(tasks)
    async with running(client, router):
        await wait_state(client, tasks[-1].id, TaskState.COMPLETED)
        await eventually(lambda: _items(client, "CC"), message="all done")
    assert peak == 3


async def test_close_while_busy_always_returns(make_client: ClientFactory) -> None:
    # A cancellation arriving while a handler finishes must not be lost (it was, with wait_for on Python 3.11).
    for attempt in range(5):
        client = await make_client(queue=f"BUSY{attempt}", concurrency=20)
        router = asyncjobs.Router()

        @router.handler("x")
        async def handle(task: asyncjobs.Task) -> None:
            await asyncio.sleep(0.002)

        await client.enqueue_many([asyncjobs.Task("x") for _ in range(400)])
        runner = asyncio.create_task(client.run(router))
        await asyncio.sleep(0.1 + attempt * 0.03)
        await asyncio.wait_for(client.close(), 10)
        await asyncio.wait_for(runner, 1)


async def test_worker_recovers_when_its_queue_is_recreated(make_client: ClientFactory, nats_url: str) -> None:
    client = await make_client(queue="GONE2")
    router = asyncjobs.Router()

    @router.handler("x")
    async def handle(task: asyncjobs.Task) -> str:
        return "ok"

    async with running(client, router):
        first = await client.enqueue(asyncjobs.Task("x"))
        await wait_state(client, first.id, TaskState.COMPLETED)
        await client.admin.delete_queue("GONE2")
        await asyncio.sleep(1.5)  # the worker's pulls now find no consumer
        again = await make_client(queue="GONE2")  # recreates stream and consumer
        second = await again.enqueue(asyncjobs.Task("x"))
        await wait_state(client, second.id, TaskState.COMPLETED, timeout=20)


async def test_custom_retry_policy_gets_the_delivery_count(make_client: ClientFactory, nc: NATS) -> None:
    acks = AckLog()
    await acks.watch(nc, "CUSTOM")

    class Recording:
        def __init__(self) -> None:
            self.asked: list[int] = []

        def delay(self, tries: int) -> float:
            self.asked.append(tries)
            return 0.01 * tries

    policy = Recording()
    client = await make_client(queue="CUSTOM", retry_policy=policy)
    router = asyncjobs.Router()

    @router.handler("x")
    async def handle(task: asyncjobs.Task) -> str:
        if task.tries < 3:
            raise RuntimeError("again")
        return "ok"

    task = await client.enqueue(asyncjobs.Task("x"))
    async with running(client, router):
        await wait_state(client, task.id, TaskState.COMPLETED)
    assert policy.asked == [1, 2]
    assert [b for b in acks.bodies if b.startswith(b"-NAK")] == [
        b'-NAK {"delay": 10000000}',
        b'-NAK {"delay": 20000000}',
    ]
