"""Pipelined enqueue (``pipeline_enqueue=True``) and the worker's grace for an item that arrives before its task."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any

import orjson
import pytest

import asyncjobs
from asyncjobs import TaskState, codec, delivery
from asyncjobs.constants import HDR_AJ_PIPELINED, HDR_MSG_ID, TASKS_STREAM
from asyncjobs.delivery import orphan_delay_ns, stored_at_ns
from asyncjobs.errors import JetStreamError, RequestTimeout
from asyncjobs.metrics import METRICS
from asyncjobs.options import ClientOptions
from asyncjobs.storage import NO_RESPONDERS_TEXT
from asyncjobs.testing import eventually
from tests.core.conftest import ClientFactory, queued_items, recording_router, running, wait_state

TS = 1_700_000_000_123_456_789
MS = 1_000_000
# Fields that differ between any two tasks enqueued one after the other.
PER_TASK_FIELDS = ("id", "created", "deadline")


# ---- the ack subject's timestamp, and the hand-back delay of an item whose task is missing ------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (f"$JS.ACK.CHORIA_AJ_Q_EMAIL.WORKERS.1.42.7.{TS}.0", TS),
        (f"$JS.ACK.CHORIA_AJ_Q_EMAIL.WORKERS.3.42.9.{TS}.15", TS),
        (f"$JS.ACK.hub.ACCOUNTHASH.CHORIA_AJ_Q_EMAIL.WORKERS.1.42.7.{TS}.0.randomtoken", TS),
        (f"$JS.ACK._.ACCOUNTHASH.CHORIA_AJ_Q_EMAIL.WORKERS.1.42.7.{TS}.0.randomtoken", TS),
        (f"$JS.ACK.hub.ACCOUNTHASH.CHORIA_AJ_Q_EMAIL.WORKERS.1.42.7.{TS}.0.randomtoken.future", TS),
        ("", None),
        ("_INBOX.abc.7", None),
        (f"$JS.ACK.CHORIA_AJ_Q_EMAIL.WORKERS.1.42.{TS}.0", None),  # 8 tokens
        (f"$JS.ACK.hub.CHORIA_AJ_Q_EMAIL.WORKERS.1.42.7.{TS}.0.x", None),  # 11 tokens
        ("$JS.ACK.CHORIA_AJ_Q_EMAIL.WORKERS.1.42.7.soon.0", None),
        ("$JS.ACK.CHORIA_AJ_Q_EMAIL.WORKERS.1.42.7.-5.0", None),
        ("$JS.ACK.CHORIA_AJ_Q_EMAIL.WORKERS.1.42.7.0.0", None),
        (f"$JS.NAK.CHORIA_AJ_Q_EMAIL.WORKERS.1.42.7.{TS}.0", None),
        (f"_INBOX.a.b.c.d.e.f.{TS}.0", None),
    ],
)
def test_stored_at_is_read_from_the_ack_subject(reply: str, expected: int | None) -> None:
    assert stored_at_ns(reply) == expected


def _reply(stamp: int, delivered: int = 1) -> str:
    return f"$JS.ACK.CHORIA_AJ_Q_EMAIL.WORKERS.{delivered}.42.7.{stamp}.0"


@pytest.mark.parametrize(
    ("age_ms", "delivered", "expected_ms"),
    [
        (0, 1, 50),  # just stored: look again in 50 ms
        (3, 1, 50),
        (60, 2, 100),  # doubling with each delivery
        (200, 3, 200),
        (1600, 6, 1000),  # capped at a second
        (4000, 9, 1000),
        (5000, 2, None),  # old enough: terminate
        (3_600_000, 1, None),
        (-3_600_000, 3, 200),  # a worker clock behind the server's: the earlier hand-backs count instead
        (-3_600_000, 10, None),  # ... and they add up to the grace
    ],
)
def test_orphan_delay_grows_and_ends_after_the_grace(age_ms: int, delivered: int, expected_ms: int | None) -> None:
    delay = orphan_delay_ns(_reply(TS, delivered), delivered, TS + age_ms * MS)
    assert delay == (None if expected_ms is None else expected_ms * MS)


def test_orphan_delay_without_a_timestamp_counts_deliveries() -> None:
    assert orphan_delay_ns("_INBOX.x", 1, TS) == 50 * MS
    assert orphan_delay_ns("_INBOX.x", 12, TS) is None
    assert orphan_delay_ns("_INBOX.x", 0, TS) is None  # no delivery count either: nothing would bound it


def test_orphan_grace_can_be_shortened(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "ORPHAN_GRACE_S", 0.5)
    assert orphan_delay_ns(_reply(TS), 1, TS + 400 * MS) == 50 * MS
    assert orphan_delay_ns(_reply(TS), 1, TS + 500 * MS) is None


# ---- the option ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1, "yes", None])
def test_pipeline_enqueue_must_be_a_bool(value: Any) -> None:
    with pytest.raises(asyncjobs.ConfigurationError, match=f"pipeline_enqueue must be True or False, not {value!r}"):
        ClientOptions(pipeline_enqueue=value)


async def test_connect_checks_pipeline_enqueue_before_connecting() -> None:
    # No server listens on port 1: the option error must come first.
    with pytest.raises(asyncjobs.ConfigurationError, match="pipeline_enqueue must be True or False"):
        await asyncjobs.connect("nats://127.0.0.1:1", pipeline_enqueue="on")


# ---- enqueue ------------------------------------------------------------------------------------------------------


async def _stored(client: asyncjobs.Client, task_id: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The stored task's JSON and headers, as a Go client would read them."""
    message = await client._js.get_last(TASKS_STREAM, "CHORIA_AJ.T." + task_id, "reading the task")
    return orjson.loads(message.data), message.headers


async def _item(client: asyncjobs.Client, task_id: str) -> tuple[bytes, dict[str, str]]:
    queue = client.queue
    message = await client._js.get_last(queue.stream, queue.subject_prefix + task_id, "reading the item")
    return message.data, message.headers


async def test_pipelined_enqueue_stores_what_the_sequential_one_does(make_client: ClientFactory) -> None:
    sequential = await make_client(queue="PIPE")
    pipelined = await make_client(queue="PIPE", pipeline_enqueue=True)
    assert pipelined.options.pipeline_enqueue and not sequential.options.pipeline_enqueue

    def make() -> asyncjobs.Task:
        return asyncjobs.Task("email:new", {"to": "a@example.net"}, max_tries=3, deadline=timedelta(hours=1))

    one = await sequential.enqueue(make())
    two = await pipelined.enqueue(make())
    assert two.state == TaskState.NEW and two.seq > one.seq
    (one_json, one_headers), (two_json, two_headers) = (
        await _stored(sequential, one.id),
        await _stored(pipelined, two.id),
    )
    assert one_json.keys() == two_json.keys()
    assert {k: v for k, v in one_json.items() if k not in PER_TASK_FIELDS} == {
        k: v for k, v in two_json.items() if k not in PER_TASK_FIELDS
    }
    assert one_headers.keys() == two_headers.keys()
    for task, client in ((one, sequential), (two, pipelined)):
        data, headers = await _item(client, task.id)
        assert data == codec.encode_item(task.id) and headers[HDR_MSG_ID] == task.id
        # Only the pipelined item is marked as possibly ahead of its task.
        assert headers.get(HDR_AJ_PIPELINED) == ("1" if client is pipelined else None)
    assert await queued_items(pipelined) == 2
    runs: list[str] = []
    async with running(sequential, recording_router(runs)):
        for task in (one, two):
            await wait_state(pipelined, task.id, TaskState.COMPLETED)
    assert sorted(runs) == sorted([one.id, two.id])


async def test_pipelined_enqueue_is_idempotent(make_client: ClientFactory) -> None:
    client = await make_client(queue="PIDEM", pipeline_enqueue=True)
    task = await client.enqueue(asyncjobs.Task("x", {"n": 1}))
    again = asyncjobs.Task.__new__(asyncjobs.Task)  # the caller retries with the same task (same content)
    for name in asyncjobs.Task.__slots__:
        setattr(again, name, getattr(task, name))
    again.seq = 0
    await client.enqueue(again)  # pipelined: the save conflicts, the stored copy is adopted, the item is a duplicate
    assert again.seq == task.seq and again.state == TaskState.NEW
    await client.enqueue(task)  # saved before (seq set): the sequential path
    assert (await client.get_task(task.id)).state == TaskState.NEW
    assert await queued_items(client) == 1
    runs: list[str] = []
    async with running(client, recording_router(runs)):
        await wait_state(client, task.id, TaskState.COMPLETED)
        late = asyncjobs.Task.__new__(asyncjobs.Task)
        for name in asyncjobs.Task.__slots__:
            setattr(late, name, getattr(again, name))
        late.seq, late.state = 0, TaskState.NEW
        await client.enqueue(late)  # after it ran: adopted as completed, its item a duplicate
        assert late.state == TaskState.COMPLETED
        await eventually(lambda: _items_are(client, 0), message="no item left")
    assert runs == [task.id]


async def _items_are(client: asyncjobs.Client, count: int) -> bool:
    return await queued_items(client) == count


async def test_pipelined_enqueue_of_a_retry_task_replaces_its_item(make_client: ClientFactory) -> None:
    client = await make_client(queue="PRETRY", pipeline_enqueue=True)
    task = asyncjobs.Task("x")
    task.state = TaskState.RETRY
    await client.enqueue(task)
    data, headers = await _item(client, task.id)
    assert data == codec.encode_item(task.id) and HDR_MSG_ID not in headers
    assert (await client.get_task(task.id)).state == TaskState.RETRY


def _as_generated(task: asyncjobs.Task) -> asyncjobs.Task:
    """Treat a custom id as one the library generated, so the pipelined path takes it (as if two ids collided)."""
    task._generated_id = task.id
    return task


async def test_a_custom_id_is_enqueued_in_order(make_client: ClientFactory) -> None:
    # A custom id may belong to another task: the item must not go out before the save has proved it is ours.
    client = await make_client(queue="PCUSTOM", pipeline_enqueue=True)
    await client.enqueue(asyncjobs.Task("x", id="invoice-7"))
    generated = await client.enqueue(asyncjobs.Task("x"))
    for task_id, marked in (("invoice-7", False), (generated.id, True)):
        _, headers = await _item(client, task_id)
        assert (headers.get(HDR_AJ_PIPELINED) == "1") is marked


async def test_pipelined_duplicate_id_fails_and_keeps_the_stored_task(make_client: ClientFactory) -> None:
    client = await make_client(queue="PDUP", pipeline_enqueue=True)
    first = await client.enqueue(_as_generated(asyncjobs.Task("x", {"n": 1}, id="order-42")))
    with pytest.raises(asyncjobs.DuplicateTaskError, match="task order-42 already exists"):
        await client.enqueue(_as_generated(asyncjobs.Task("x", {"n": 2}, id="order-42")))
    stored = await client.get_task("order-42")
    assert stored.payload_json() == {"n": 1} and stored.state == TaskState.NEW and stored.seq == first.seq
    _, headers = await _item(client, "order-42")  # the second item was dropped as a duplicate of the first
    assert headers[HDR_MSG_ID] == "order-42" and await queued_items(client) == 1


async def test_pipelined_duplicate_of_a_staged_task_withdraws_its_item(make_client: ClientFactory) -> None:
    # The staged task's id was never used for an item, so the server does not drop ours: it is withdrawn again, or
    # a worker of this queue would run a task that is waiting for its release.
    client = await make_client(queue="PSTAGE", pipeline_enqueue=True)
    staged = await client.staged.stage(asyncjobs.Task("x", {"n": 1}, id="gate-1"))
    with pytest.raises(asyncjobs.DuplicateTaskError, match="task gate-1 already exists"):
        await client.enqueue(_as_generated(asyncjobs.Task("x", {"n": 2}, id="gate-1")))
    assert await queued_items(client) == 0
    stored = await client.get_task("gate-1")
    assert stored.queue == "" and stored.seq == staged.seq and stored.payload_json() == {"n": 1}


async def test_pipelined_duplicate_of_a_waiting_task_keeps_the_item_standing_for_it(make_client: ClientFactory) -> None:
    # Released under its own message id, the waiting task's item is replaced by ours (one item per task in a
    # queue): ours is kept, so that task still runs, once.
    client = await make_client(queue="PREL", pipeline_enqueue=True)
    staged = await client.staged.stage(asyncjobs.Task("x", {"n": 1}, id="gate-2"))
    assert await client.staged.release(staged)
    with pytest.raises(asyncjobs.DuplicateTaskError, match="task gate-2 already exists"):
        await client.enqueue(_as_generated(asyncjobs.Task("x", {"n": 2}, id="gate-2")))
    _, headers = await _item(client, "gate-2")
    assert headers[HDR_MSG_ID] == "gate-2" and await queued_items(client) == 1
    runs: list[str] = []
    async with running(client, recording_router(runs)):
        done = await wait_state(client, "gate-2", TaskState.COMPLETED)
    assert runs == ["gate-2"] and done.payload_json() == {"n": 1}


async def test_pipelined_enqueue_to_a_deleted_queue_records_queue_error(make_client: ClientFactory) -> None:
    client = await make_client(queue="PGONE", pipeline_enqueue=True)
    await client.admin.delete_queue("PGONE")
    with pytest.raises(asyncjobs.EnqueueError, match="queue 'PGONE' not found"):
        await client.enqueue(task := asyncjobs.Task("x"))
    stored = await client.get_task(task.id)
    assert stored.state == TaskState.QUEUE_ERROR and stored.last_err == NO_RESPONDERS_TEXT


async def test_pipelined_enqueue_refuses_a_task_too_large_before_sending(make_client: ClientFactory) -> None:
    client = await make_client(queue="PBIG", pipeline_enqueue=True)
    with pytest.raises(asyncjobs.ConfigurationError, match="over the NATS server's max_payload"):
        await client.enqueue(task := asyncjobs.Task("x", "x" * client.nc.max_payload))
    assert await queued_items(client) == 0
    with pytest.raises(asyncjobs.TaskNotFound):
        await client.get_task(task.id)


async def test_a_save_refused_outright_withdraws_the_item(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await make_client(queue="PREFUSE", pipeline_enqueue=True)

    async def refuse(task: asyncjobs.Task, **_: Any) -> None:
        raise JetStreamError("saving the task: refused (err_code 10000)", err_code=10000)

    monkeypatch.setattr(client._storage, "save_task", refuse)
    with pytest.raises(JetStreamError, match="refused"):
        await client.enqueue(asyncjobs.Task("x"))
    assert await queued_items(client) == 0


async def test_a_save_that_timed_out_is_made_when_the_store_answers_again(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await make_client(queue="PLATE", pipeline_enqueue=True)
    storage = client._storage
    save = storage.save_task
    calls: list[int] = []

    async def time_out_once(task: asyncjobs.Task, **kwargs: Any) -> None:
        calls.append(task.seq)
        if len(calls) == 1:
            raise RequestTimeout("saving the task: timed out waiting for the NATS server")
        await save(task, **kwargs)

    monkeypatch.setattr(storage, "save_task", time_out_once)
    task = await client.enqueue(asyncjobs.Task("x"))
    assert calls == [0, 0]
    stored = await client.get_task(task.id)
    assert stored.state == TaskState.NEW and stored.seq == task.seq
    # The first item's message id may be spent (its item terminated as an orphan meanwhile): a fresh one stands in.
    _, headers = await _item(client, task.id)
    assert headers[HDR_MSG_ID] == f"{task.id}.{task.seq}" and await queued_items(client) == 1


async def test_a_store_that_stays_unreachable_is_reported_with_what_to_do(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await make_client(queue="PDOWN", pipeline_enqueue=True)
    storage = client._storage

    async def time_out(*_: Any, **__: Any) -> Any:
        raise RequestTimeout("timed out waiting for the NATS server")

    monkeypatch.setattr(storage, "save_task", time_out)
    monkeypatch.setattr(storage, "load_task", time_out)
    with pytest.raises(RequestTimeout, match="may be stored and its work item may be queued: enqueue the same task"):
        await client.enqueue(asyncjobs.Task("x"))
    assert await queued_items(client) == 1  # left for the worker: it may be the task's


# ---- the worker ---------------------------------------------------------------------------------------------------


def _handed_back(caplog: pytest.LogCaptureFixture, task_id: str) -> bool:
    return any(f"task {task_id} is not stored yet, handing its item back" in r.getMessage() for r in caplog.records)


async def test_an_item_ahead_of_its_task_waits_for_it(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncjobs")
    client = await make_client(queue="RACE")
    task = asyncjobs.Task("x")
    task.queue = client.queue.name
    await client._storage.send_item(task, client.queue, pipelined=True)  # the item lands first ...
    missing = METRICS.task_not_found_error_count.value("RACE")
    runs: list[str] = []
    async with running(client, recording_router(runs)):
        await eventually(
            lambda: _handed_back(caplog, task.id), message="the item handed back while its task is missing"
        )
        await client._storage.save_task(task)  # ... and its task a moment later
        await wait_state(client, task.id, TaskState.COMPLETED)
    assert runs == [task.id]
    assert METRICS.task_not_found_error_count.value("RACE") == missing
    assert await queued_items(client) == 0


async def test_an_orphan_item_is_terminated_after_the_grace(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "ORPHAN_GRACE_S", 0.5)
    caplog.set_level(logging.DEBUG, logger="asyncjobs")
    client = await make_client(queue="ORPHAN")
    orphan = asyncjobs.Task("x")
    await client._storage.send_item(orphan, client.queue, pipelined=True)
    missing = METRICS.task_not_found_error_count.value("ORPHAN")
    started = time.monotonic()
    async with running(client, recording_router([])):
        await eventually(lambda: _items_are(client, 0), message="the orphan item terminated")
    assert time.monotonic() - started >= 0.4
    assert _handed_back(caplog, orphan.id)
    assert any(f"task {orphan.id} does not exist, terminating its item" in r.getMessage() for r in caplog.records)
    assert METRICS.task_not_found_error_count.value("ORPHAN") == missing + 1


async def test_an_unmarked_item_without_its_task_is_terminated_at_once(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # Only a pipelined enqueue can store an item ahead of its task; any other item's missing task is gone for good.
    caplog.set_level(logging.DEBUG, logger="asyncjobs")
    client = await make_client(queue="UNMARKED")
    orphan = asyncjobs.Task("x")
    await client._storage.send_item(orphan, client.queue)
    async with running(client, recording_router([])):
        await eventually(lambda: _items_are(client, 0), message="the orphan item terminated", timeout=2)
    assert not _handed_back(caplog, orphan.id)
    assert any(f"task {orphan.id} does not exist, terminating its item" in r.getMessage() for r in caplog.records)


async def test_a_save_slower_than_the_grace_gives_the_task_a_fresh_item(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The item lands at once, the save 1.5 s later: the worker has given up on the item as an orphan by then, so the
    # enqueue, seeing how long its save took, gives the task a fresh item.
    monkeypatch.setattr(delivery, "ORPHAN_GRACE_S", 0.5)
    caplog.set_level(logging.INFO, logger="asyncjobs")
    client = await make_client(queue="SLOWSAVE", pipeline_enqueue=True)
    storage = client._storage
    save_task = storage.save_task

    async def slow_save(task: asyncjobs.Task, **kwargs: Any) -> None:
        await asyncio.sleep(1.5)  # a store that answers slowly (a leader election, say)
        await save_task(task, **kwargs)

    runs: list[str] = []
    async with running(client, recording_router(runs)):
        monkeypatch.setattr(storage, "save_task", slow_save)
        task = await client.enqueue(asyncjobs.Task("x"))
        monkeypatch.setattr(storage, "save_task", save_task)
        done = await wait_state(client, task.id, TaskState.COMPLETED)
    assert runs == [task.id] and done.tries == 1
    assert any(f"task {task.id} does not exist, terminating its item" in r.getMessage() for r in caplog.records)
    assert any("and the item is gone; publishing a fresh one" in r.getMessage() for r in caplog.records)
