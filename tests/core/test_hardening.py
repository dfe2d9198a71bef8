"""What hostile handlers, callers and connections do to a worker: every path ends final or safely retried."""

from __future__ import annotations

import asyncio
import logging
import os
import time

import nats
import pytest
from nats.aio.client import Client as NATS

import asyncjobs
import asyncjobs.wiretime
from asyncjobs import TaskState
from asyncjobs.testing import eventually
from tests.core.conftest import ClientFactory, running, wait_state

HOSTILE: list[tuple[str, type[BaseException]]] = [
    ("cancelled", asyncio.CancelledError),
    ("system-exit", SystemExit),
    ("keyboard", KeyboardInterrupt),
    ("generator-exit", GeneratorExit),
    ("base", BaseException),
]


@pytest.mark.parametrize(("kind", "exc_type"), HOSTILE)
async def test_base_exceptions_from_a_handler_are_failed_tries(
    make_client: ClientFactory, kind: str, exc_type: type[BaseException]
) -> None:
    # With one slot, a slot lost to the first task would leave the second one waiting forever.
    client = await make_client(queue="HOSTILE", concurrency=1)
    router = asyncjobs.Router()
    runs: dict[str, int] = {}

    @router.handler("")
    async def handle(task: asyncjobs.Task) -> str:
        runs[task.type] = runs.get(task.type, 0) + 1
        if task.type == "bad" and runs["bad"] == 1:
            raise exc_type("from the handler")
        return "ok"

    bad = await client.enqueue(asyncjobs.Task("bad"))
    good = await client.enqueue(asyncjobs.Task("good"))
    async with running(client, router) as worker:
        done_bad = await wait_state(client, bad.id, TaskState.COMPLETED)
        await wait_state(client, good.id, TaskState.COMPLETED)
        assert not worker.done()
    assert runs == {"bad": 2, "good": 1}
    assert done_bad.tries == 2


async def test_awaiting_a_cancelled_future_is_a_failure_not_a_shutdown(make_client: ClientFactory) -> None:
    client = await make_client(queue="CANCELLED", concurrency=1)
    router = asyncjobs.Router()
    attempts: list[int] = []

    @router.handler("x")
    async def handle(task: asyncjobs.Task) -> None:
        attempts.append(task.tries)
        if len(attempts) == 1:
            other: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            other.cancel()
            await other  # raises CancelledError inside the handler, nobody cancelled the worker

    task = await client.enqueue(asyncjobs.Task("x", max_tries=1))
    async with running(client, router):
        done = await wait_state(client, task.id, TaskState.EXPIRED)
    assert attempts == [1]
    assert done.last_err == "CancelledError"


async def test_handler_failures_are_logged_with_traceback(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client(queue="LOGGED")
    router = asyncjobs.Router()

    @router.handler("email:new")
    async def handle(task: asyncjobs.Task) -> None:
        raise KeyError("email")

    caplog.set_level(logging.WARNING, logger="asyncjobs")
    task = await client.enqueue(asyncjobs.Task("email:new", max_tries=1))
    async with running(client, router):
        done = await wait_state(client, task.id, TaskState.EXPIRED)
    assert done.last_err == "KeyError: 'email'"
    record = next(r for r in caplog.records if task.id in r.getMessage())
    assert record.levelno == logging.WARNING
    assert "email:new" in record.getMessage() and "try 1" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is KeyError


async def test_results_that_cannot_be_stored_terminate(make_client: ClientFactory) -> None:
    client = await make_client(queue="UNSTORABLE")
    router = asyncjobs.Router()
    calls: list[str] = []

    @router.handler("big-int")
    async def big(task: asyncjobs.Task) -> int:
        calls.append(task.type)
        return 2**70

    @router.handler("huge")
    async def huge(task: asyncjobs.Task) -> str:
        calls.append(task.type)
        return "x" * (client.nc.max_payload + 10)

    @router.handler("surrogate")
    async def surrogate(task: asyncjobs.Task) -> None:
        calls.append(task.type)
        name = os.fsdecode(b"report-\xff.pdf")
        raise OSError(f"cannot open {name}")

    ids = [(await client.enqueue(asyncjobs.Task(kind, max_tries=1))).id for kind in ("big-int", "huge", "surrogate")]
    async with running(client, router):
        big_int = await wait_state(client, ids[0], TaskState.TERMINATED)
        too_big = await wait_state(client, ids[1], TaskState.TERMINATED)
        bad_text = await wait_state(client, ids[2], TaskState.EXPIRED)
    assert big_int.last_err.startswith("the handler's result cannot be stored")
    assert "max_payload" in too_big.last_err and too_big.result is None
    assert bad_text.last_err == "OSError: cannot open report-\\udcff.pdf"
    assert sorted(calls) == ["big-int", "huge", "surrogate"]  # each ran once


async def test_shutdown_on_the_last_permitted_delivery_requeues(make_client: ClientFactory) -> None:
    queue = asyncjobs.Queue("LASTONE", max_tries=1)
    first = await make_client(queue=queue, shutdown_grace=0)
    started = asyncio.Event()
    router = asyncjobs.Router()

    @router.handler("x")
    async def hang(task: asyncjobs.Task) -> None:
        started.set()
        await asyncio.sleep(3600)

    task = await first.enqueue(asyncjobs.Task("x"))
    worker = asyncio.create_task(first.run(router))
    await asyncio.wait_for(started.wait(), 10)
    await first.close()
    await worker
    handed_back = await (await make_client(queue=queue)).get_task(task.id)
    assert handed_back.state == TaskState.RETRY
    # The first (and only permitted) delivery is used up, but the task gets a fresh item: another worker runs it.
    second = await make_client(queue=queue)
    finisher = asyncjobs.Router()

    @finisher.handler("x")
    async def finish(task: asyncjobs.Task) -> str:
        return "done"

    async with running(second, finisher):
        done = await wait_state(second, task.id, TaskState.COMPLETED)
    assert done.tries == 1  # the run cut short by the shutdown is not counted as a try
    assert (await second.admin.queue_info("LASTONE")).items == 0


async def test_an_outcome_that_cannot_be_stored_keeps_its_item(make_client: ClientFactory, nc: NATS) -> None:
    # The store rejects every save while the handler runs: the completion is not lost with an +ACK, the item is
    # handed back, and a later delivery runs the task to a stored outcome.
    client = await make_client(queue=asyncjobs.Queue("NOSAVE", max_run_time=1))
    js = nc.jetstream()
    runs: list[int] = []
    router = asyncjobs.Router()

    @router.handler("x")
    async def handle(task: asyncjobs.Task) -> str:
        runs.append(task.tries)
        if len(runs) == 1:
            info = await js.stream_info("CHORIA_AJ_TASKS")
            info.config.max_msg_size = 16
            await js.update_stream(info.config)
        return "done"

    task = await client.enqueue(asyncjobs.Task("x"))
    async with running(client, router):
        await eventually(lambda: len(runs) == 1, message="the first run")
        await eventually(lambda: _stored_state(client, task.id, TaskState.ACTIVE), message="stuck at active")
        info = await js.stream_info("CHORIA_AJ_TASKS")
        info.config.max_msg_size = -1
        await js.update_stream(info.config)
        done = await wait_state(client, task.id, TaskState.COMPLETED, timeout=30)
    assert runs == [1, 2] and done.tries == 2
    assert (await client.admin.queue_info("NOSAVE")).items == 0


async def _stored_state(client: asyncjobs.Client, task_id: str, state: TaskState) -> bool:
    return (await client.get_task(task_id)).state == state


async def test_retry_task_refuses_a_running_task_unless_forced(make_client: ClientFactory) -> None:
    client = await make_client(queue="RUNNING")
    release = asyncio.Event()
    starts: list[int] = []
    router = asyncjobs.Router()

    @router.handler("x")
    async def handle(task: asyncjobs.Task) -> str:
        starts.append(task.tries)
        await release.wait()
        return "done"

    task = await client.enqueue(asyncjobs.Task("x"))
    async with running(client, router):
        await wait_state(client, task.id, TaskState.ACTIVE)
        with pytest.raises(asyncjobs.InvalidTaskStateError, match=r"is active .* force=True"):
            await client.retry_task(task.id)
        assert starts == [1]
        forced = await client.retry_task(task.id, force=True)
        assert forced.state == TaskState.RETRY
        release.set()
        done = await wait_state(client, task.id, TaskState.COMPLETED)
    assert done.result is not None


async def test_blocking_handler_runs_once_and_is_reported(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client(queue=asyncjobs.Queue("BLOCKING", max_run_time=1), concurrency=4)
    runs: list[float] = []
    router = asyncjobs.Router()

    @router.handler("x")
    async def handle(task: asyncjobs.Task) -> str:
        runs.append(time.monotonic())
        if len(runs) == 1:
            time.sleep(3)  # noqa: ASYNC251 - the point of the test: a handler that blocks the event loop
        return "done"

    caplog.set_level(logging.WARNING, logger="asyncjobs")
    task = await client.enqueue(asyncjobs.Task("x"))
    async with running(client, router):
        await wait_state(client, task.id, TaskState.COMPLETED)
        await asyncio.sleep(1.5)  # let the redeliveries received during the block be processed
    assert len(runs) == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("event loop was blocked" in m and "asyncio.to_thread" in m for m in messages)


async def test_closed_connection_ends_run(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    client = await asyncjobs.connect(nc, queue="CLOSING")
    router = asyncjobs.Router()

    @router.handler("x")
    async def handle(task: asyncjobs.Task) -> None:
        return None

    worker = asyncio.create_task(client.run(router))
    await asyncio.sleep(0.2)
    await nc.close()
    with pytest.raises(asyncjobs.ClientClosedError, match="connection was closed"):
        await asyncio.wait_for(worker, 10)
    assert client.closed
    with pytest.raises(asyncjobs.ClientClosedError):
        await client.enqueue(asyncjobs.Task("x"))
    await client.close()


async def test_queue_error_tasks_do_not_run(make_client: ClientFactory, nc: NATS) -> None:
    client = await make_client(queue="QERR")
    task = await client.enqueue(asyncjobs.Task("x"))
    stored = await client.get_task(task.id)
    stored.state = TaskState.QUEUE_ERROR
    await client._storage.save_task(stored)
    await _settled_without_running(client)
    assert (await client.get_task(task.id)).state == TaskState.QUEUE_ERROR


async def _settled_without_running(client: asyncjobs.Client) -> None:
    """Run a worker until the client's queue is empty, and check that no handler ran."""
    runs: list[str] = []
    router = asyncjobs.Router()

    @router.handler("")
    async def handle(task: asyncjobs.Task) -> None:
        runs.append(task.id)

    async def queue_empty() -> bool:
        return (await client.admin.queue_info(client.queue.name)).items == 0

    async with running(client, router):
        await eventually(queue_empty, message="the item settled")
    assert runs == []


async def test_last_delivery_of_a_task_running_elsewhere_leaves_it_to_that_run(make_client: ClientFactory) -> None:
    # Another worker runs the task (stored active, started just now) and this delivery is the queue's last one:
    # the item is dropped rather than expiring a task whose handler is still working on it.
    client = await make_client(queue=asyncjobs.Queue("YIELD", max_tries=1, max_run_time=60))
    task = await client.enqueue(asyncjobs.Task("x"))
    stored = await client.get_task(task.id)
    stored.state, stored.tries, stored.tried_at = TaskState.ACTIVE, 1, asyncjobs.wiretime.WireTime.now()
    await client._storage.save_task(stored)
    await _settled_without_running(client)
    assert (await client.get_task(task.id)).state == TaskState.ACTIVE


async def test_oversized_task_is_refused_with_the_limit(make_client: ClientFactory) -> None:
    client = await make_client(queue="HUGE")
    limit = client.nc.max_payload
    with pytest.raises(asyncjobs.ConfigurationError, match=rf"over the NATS server's max_payload of {limit} bytes"):
        await client.enqueue(asyncjobs.Task("x", b"x" * limit))
    assert (await client.admin.queue_info("HUGE")).items == 0


async def test_item_with_an_invalid_job_id_is_terminated_not_retried(make_client: ClientFactory, nc: NATS) -> None:
    client = await make_client(queue="BADJOB")
    await nc.jetstream().publish("CHORIA_AJ.Q.BADJOB.x", b'{"kind":0,"job":"no spaces allowed"}')
    await _settled_without_running(client)


async def test_keep_alive_sends_wpi_for_deliveries_still_in_process(make_client: ClientFactory, nc: NATS) -> None:
    # Recording an outcome through a store outage can outlast the ack wait: the worker keeps the item meanwhile.
    from nats.aio.msg import Msg

    from asyncjobs.upkeep import InProcess
    from asyncjobs.worker import Worker

    client = await make_client(queue=asyncjobs.Queue("ALIVE", max_run_time=2))
    beats: list[str] = []

    async def record(msg: Msg) -> None:
        beats.append(msg.subject if msg.data == b"+WPI" else "other")

    await nc.subscribe("wpi.>", cb=record)
    await nc.flush()
    worker = Worker(
        client._storage,
        client.queue,
        asyncjobs.Router(),
        concurrency=2,
        retry_policy=asyncjobs.RETRY_DEFAULT,
        shutdown_grace=0,
        api_prefix="$JS.API",
    )
    task = asyncjobs.Task("x")
    worker.running = {
        "old": InProcess(task, Msg(_client=client.nc, reply="wpi.old"), since=100.0),
        "new": InProcess(task, Msg(_client=client.nc, reply="wpi.new"), since=100.9),
    }
    assert worker.upkeep.send_keep_alives(101.0, every=1.0) == 1
    assert worker.upkeep.send_keep_alives(101.5, every=1.0) == 0  # the old one was just refreshed
    assert worker.upkeep.send_keep_alives(102.0, every=1.0) == 2
    # The beats are sent by tasks of their own: wait for them, then for the bytes to leave and come back.
    await asyncio.gather(*list(worker.upkeep._beats))
    await client.nc.flush()
    await nc.flush()

    def three() -> bool:
        # An assertion, so a failure shows what did arrive (this once failed under a loaded CI run, cause unknown).
        assert sorted(beats) == ["wpi.new", "wpi.old", "wpi.old"], beats
        return True

    await eventually(three, message="three +WPI")


@pytest.mark.parametrize(
    ("hand_back", "max_tries", "state_after", "items_after", "undelivered"),
    [
        ("retry", 1, TaskState.EXPIRED, 0, 0),  # the task failed: a final state, the item terminated
        ("requeue", 1, TaskState.NEW, 1, 1),  # not its fault (load or store failure, shutdown): a fresh item
        # Another handler owns it: a fresh item, since that handler's -NAK could go to the old one ...
        ("yield", 2, TaskState.NEW, 1, 1),
        # ... unless one delivery is all the queue permits: that handler's own settle then ends the task.
        ("yield", 1, TaskState.NEW, 0, 0),
    ],
)
async def test_a_hand_back_on_the_last_permitted_delivery(
    make_client: ClientFactory,
    nc: NATS,
    hand_back: str,
    max_tries: int,
    state_after: TaskState,
    items_after: int,
    undelivered: int,
) -> None:
    from nats.aio.msg import Msg

    from asyncjobs.delivery import delivery_count, nak
    from asyncjobs.settle import HandBack, Settler

    queue = f"LAST{hand_back.upper()}{max_tries}"
    client = await make_client(queue=asyncjobs.Queue(queue, max_tries=max_tries))
    task = await client.enqueue(asyncjobs.Task("x"))
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.CHORIA_AJ_Q_{queue}.WORKERS", b'{"batch": 1}', reply=inbox)
    msg: Msg = await sub.next_msg(timeout=5)
    assert delivery_count(msg.reply) == 1
    settler = Settler(client._storage, client.queue)
    stored = await client.get_task(task.id)
    # Settled as the queue's last permitted delivery.
    kind = HandBack(hand_back)
    await settler.settle(msg, max_tries, stored, nak(1_000_000_000), reason="lost a race", hand_back=kind)
    await nc.flush()

    async def settled() -> bool:
        info = await client.admin.queue_info(queue)
        return (info.items, info.pending) == (items_after, undelivered) and info.in_flight == 0

    await eventually(settled, message=f"the item after a {hand_back} hand-back")
    after = await client.get_task(task.id)
    assert after.state == state_after
    if state_after == TaskState.EXPIRED:
        assert after.last_err == "lost a race; the queue's max_tries (1 delivery) is used up"


async def test_a_second_item_for_a_running_task_is_dropped_without_a_loop(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # One permitted delivery: handing the duplicate back would republish it again and again while the handler runs.
    client = await make_client(queue=asyncjobs.Queue("DUPONE", max_tries=1))
    release = asyncio.Event()
    runs: list[int] = []
    router = asyncjobs.Router()

    @router.handler("x")
    async def handle(task: asyncjobs.Task) -> str:
        runs.append(task.tries)
        if len(runs) == 1:
            await release.wait()
            raise RuntimeError("failed after a forced retry")
        return "done"

    task = await client.enqueue(asyncjobs.Task("x"))
    async with running(client, router):
        await wait_state(client, task.id, TaskState.ACTIVE)
        await client.retry_task(task.id, force=True)  # a second item while the first run goes on
        await eventually(lambda: "delivered again" in caplog.text, message="the duplicate delivery dropped")
        await asyncio.sleep(0.5)
        release.set()
        done = await wait_state(client, task.id, TaskState.COMPLETED)
    assert caplog.text.count("delivered again") == 1
    assert "a second item: forced retry_task" in caplog.text
    assert done.result is not None and runs == [1, 1]
