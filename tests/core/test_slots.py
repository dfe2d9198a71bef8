"""How a worker uses its slots: a small prefetch ahead of the free slots, and outcomes settled off the slot."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

import asyncjobs
from asyncjobs import TaskState
from asyncjobs.puller import prefetch_for
from asyncjobs.settle import Settler
from asyncjobs.task import Task
from asyncjobs.testing import eventually
from asyncjobs.worker import Worker
from tests.core.conftest import ClientFactory, recording_router, running, wait_state


@pytest.mark.parametrize(
    ("concurrency", "prefetch"),
    [(1, 0), (9, 0), (10, 1), (19, 1), (20, 2), (50, 5), (100, 10), (1000, 100)],
)
def test_prefetch_is_a_tenth_of_the_slots(concurrency: int, prefetch: int) -> None:
    assert prefetch_for(concurrency) == prefetch


def _in_flight(client: asyncjobs.Client, queue: str, expect: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await client.admin.queue_info(queue)).in_flight == expect

    return check


async def test_prefetched_items_wait_for_a_slot_and_go_back_on_stop(make_client: ClientFactory) -> None:
    client = await make_client(queue="PF", concurrency=20)
    router = asyncjobs.Router()
    release = asyncio.Event()
    started: list[str] = []

    @router.handler("x")
    async def handle(task: asyncjobs.Task) -> None:
        started.append(task.id)
        await release.wait()

    tasks = [asyncjobs.Task("x") for _ in range(40)]
    await client.enqueue_many(tasks)
    async with running(client, router):
        await eventually(lambda: len(started) == 20, message="every slot busy")
        # 20 running and 2 prefetched, delivered to this worker and waiting for a slot.
        await eventually(_in_flight(client, "PF", 22), message="slots plus prefetch in flight")
        assert len(started) == 20
    # Stopped with the handlers still blocked: the running tasks and the prefetched items were handed back, so
    # another worker runs every one of them at once (not after the 300 s ack wait), each counted as one try.
    other = await make_client(queue="PF")
    finish = asyncjobs.Router()

    @finish.handler("x")
    async def quick(task: asyncjobs.Task) -> None:
        return None

    async with running(other, finish):
        for task in tasks:
            done = await wait_state(other, task.id, TaskState.COMPLETED)
            assert done.tries == 1
    assert (await other.admin.queue_info("PF")).items == 0


@pytest.fixture
def slow_settle(monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, list[str]]:
    """Hold every completed outcome until the event is set; record the order outcomes were stored in."""
    gate = asyncio.Event()
    stored: list[str] = []
    original = Settler.settle

    async def settle(self: Settler, msg: Any, delivered: int, task: Task | None, ack: bytes, **kwargs: Any) -> None:
        if kwargs.get("state") is TaskState.COMPLETED and task is not None:
            await gate.wait()
            stored.append(task.id)
        await original(self, msg, delivered, task, ack, **kwargs)

    monkeypatch.setattr(Settler, "settle", settle)
    return gate, stored


async def test_a_slot_takes_the_next_item_while_the_outcome_is_stored(
    make_client: ClientFactory, slow_settle: tuple[asyncio.Event, list[str]]
) -> None:
    gate, stored = slow_settle
    client = await make_client(queue="OFF", concurrency=1)
    router = asyncjobs.Router()
    ran: list[str] = []

    @router.handler("x")
    async def handle(task: asyncjobs.Task) -> str:
        ran.append(task.id)
        return task.id

    first, second = asyncjobs.Task("x"), asyncjobs.Task("x")
    await client.enqueue(first)
    await client.enqueue(second)
    async with running(client, router):
        # One slot: the second handler runs while the first outcome is still being stored.
        await eventually(lambda: ran == [first.id, second.id], message="both handlers ran")
        assert stored == []
        assert (await client.get_task(first.id)).state == TaskState.ACTIVE
        gate.set()
        for task in (first, second):
            done = await wait_state(client, task.id, TaskState.COMPLETED)
            assert done.result is not None and done.result.payload == task.id
    assert sorted(stored) == sorted([first.id, second.id])
    assert (await client.admin.queue_info("OFF")).items == 0


async def test_settling_is_bounded_by_the_concurrency(
    make_client: ClientFactory, slow_settle: tuple[asyncio.Event, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, _ = slow_settle
    peak = 0
    original = Worker.conclude

    async def conclude(self: Worker, task: Task, settling: Coroutine[Any, Any, None]) -> None:
        nonlocal peak
        peak = max(peak, len(self.settling))
        await original(self, task, settling)

    monkeypatch.setattr(Worker, "conclude", conclude)
    client = await make_client(queue="BOUND", concurrency=2)
    ran: list[str] = []
    router = recording_router(ran)

    tasks = [asyncjobs.Task("x") for _ in range(8)]
    await client.enqueue_many(tasks)
    async with running(client, router):
        # Two outcomes settle in the background, then each slot settles its own: two more handlers, then none.
        await eventually(lambda: len(ran) == 4, message="four handlers ran")
        await asyncio.sleep(0.2)  # nothing can progress until the gate opens; give it the chance to be wrong
        assert len(ran) == 4
        assert peak == 2
        gate.set()
        for task in tasks:
            await wait_state(client, task.id, TaskState.COMPLETED)


async def test_stopping_waits_for_outcomes_being_stored(
    make_client: ClientFactory, slow_settle: tuple[asyncio.Event, list[str]]
) -> None:
    gate, stored = slow_settle
    client = await make_client(queue="STOPSET", concurrency=4)
    ran: list[str] = []
    router = recording_router(ran)

    task = await client.enqueue(asyncjobs.Task("x"))
    worker = asyncio.create_task(client.run(router))
    await eventually(lambda: ran == [task.id], message="the handler ran")
    worker.cancel()
    await asyncio.sleep(0.1)
    assert not worker.done()  # still storing the outcome
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(worker, 10)
    assert stored == [task.id]
    assert (await client.get_task(task.id)).state == TaskState.COMPLETED


async def test_an_outcome_cut_off_by_the_stop_is_handed_back_with_a_warning(
    make_client: ClientFactory, slow_settle: tuple[asyncio.Event, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    gate, stored = slow_settle  # the store does not answer until the first worker has stopped
    client = await make_client(queue=asyncjobs.Queue("CUT", max_run_time=3), shutdown_grace=0.2)
    ran: list[str] = []
    router = recording_router(ran)

    task = await client.enqueue(asyncjobs.Task("x"))
    worker = asyncio.create_task(client.run(router))
    await eventually(lambda: ran == [task.id], message="the handler ran")
    worker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(worker, 20)
    assert stored == []
    assert any(
        f"stopped before the outcome of task {task.id} was stored; handing it back" in record.getMessage()
        and record.levelname == "WARNING"
        for record in caplog.records
    )
    # Handed back at once: another worker has it now, and runs it again once the first run's max run time is over
    # (the task is still stored active: nothing proves that run ended).
    gate.set()
    other = await make_client(queue="CUT")
    async with running(other, recording_router(ran)):
        done = await wait_state(other, task.id, TaskState.COMPLETED, timeout=15)
    assert ran == [task.id, task.id] and done.tries == 2


async def test_a_prefetched_item_that_waited_is_kept_alive(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # Ten slots busy for 1.5 s of a 2 s ack wait; the prefetched eleventh item starts after waiting 1.5 s and runs
    # 1 s: without a +WPI as it starts, the server would deliver it again at 2 s while it runs.
    queue = asyncjobs.Queue("WAITED", max_run_time=2)
    client = await make_client(queue=queue, concurrency=10)
    router = asyncjobs.Router()

    @router.handler("long")
    async def long(task: asyncjobs.Task) -> None:
        await asyncio.sleep(1.5)

    @router.handler("short")
    async def short(task: asyncjobs.Task) -> None:
        await asyncio.sleep(1.0)

    await client.enqueue_many([asyncjobs.Task("long") for _ in range(10)])
    late = await client.enqueue(asyncjobs.Task("short"))
    async with running(client, router):
        done = await wait_state(client, late.id, TaskState.COMPLETED)
    assert done.tries == 1
    assert not [r for r in caplog.records if "not starting it twice" in r.getMessage()]
    assert (await client.admin.queue_info("WAITED")).redelivered == 0
