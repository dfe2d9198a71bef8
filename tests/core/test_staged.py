"""``client.staged``: tasks stored without a work item, changed with compare-and-set, released and withdrawn
(docs/concepts.md, Staged tasks; docs/protocol.md, Staging and releasing)."""

from __future__ import annotations

import base64
import copy
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

import asyncjobs
from asyncjobs import TaskState
from asyncjobs.codec import decode_event
from asyncjobs.errors import InvalidSignature
from asyncjobs.reconciler import Reconciler
from asyncjobs.signing import TaskVerifier
from asyncjobs.wiretime import WireTime
from tests.core.conftest import ClientFactory, running, wait_state

SEED = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
PUBLIC_KEY = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
EVENT_TIMEOUT_S = 5.0


async def _items(client: asyncjobs.Client, queue: str | None = None) -> int:
    """How many work items a queue (the client's by default) holds."""
    return (await client.admin.queue_info(queue or client.queue.name)).items


async def _raw_item(client: asyncjobs.Client, task_id: str) -> dict[str, Any]:
    """The task's work item in the DEFAULT queue, read with the raw JetStream API (headers included)."""
    reply = await client.nc.request(
        "$JS.API.STREAM.MSG.GET.CHORIA_AJ_Q_DEFAULT",
        orjson.dumps({"last_by_subj": f"CHORIA_AJ.Q.DEFAULT.{task_id}"}),
        timeout=EVENT_TIMEOUT_S,
    )
    message: dict[str, Any] = orjson.loads(reply.data)["message"]
    return message


def _headers(message: dict[str, Any]) -> dict[str, str]:
    block = base64.b64decode(message.get("hdrs", "")).decode()
    lines = block.split("\r\n")[1:]  # after the NATS/1.0 status line
    return dict(line.split(": ", 1) for line in lines if line)


# ---- stage ------------------------------------------------------------------------------------------------------


async def test_stage_many_stores_tasks_without_items(make_client: ClientFactory) -> None:
    client = await make_client(queue="STAGE")
    first = asyncjobs.Task("etl:extract", {"day": 1})
    child = asyncjobs.Task("etl:load", dependencies=[first.id])
    staged = await client.staged.stage_many([first, child])
    assert staged == [first, child]
    assert await _items(client) == 0
    stored_first, stored_child = await client.get_task(first.id), await client.get_task(child.id)
    assert (stored_first.state, stored_child.state) == (TaskState.NEW, TaskState.BLOCKED)
    # On no queue until released, so no worker's reconciler takes them for tasks whose items were lost.
    assert stored_first.queue == stored_child.queue == first.queue == ""
    assert stored_child.dependencies == [first.id]
    assert (stored_first.seq, stored_child.seq) == (first.seq, child.seq)
    assert not await client.staged.queued(first.id)


async def test_staging_again_adopts_the_stored_tasks(make_client: ClientFactory) -> None:
    client = await make_client()
    tasks = [asyncjobs.Task("a", {"n": 1}), asyncjobs.Task("b", {"n": 2})]
    await client.staged.stage_many(tasks)
    # Copies as a process that restarts would build them again: same fields, never saved (seq 0).
    again = [copy.copy(task) for task in tasks]
    for task in again:
        task.seq = 0
    assert await client.staged.stage_many(again) == again
    assert [task.seq for task in again] == [task.seq for task in tasks]
    # Staging the very same objects again does not fail and leaves them as stored.
    assert await client.staged.stage_many(tasks) == tasks
    for task in tasks:
        stored = await client.get_task(task.id)
        assert (stored.state, stored.seq, stored.payload) == (TaskState.NEW, task.seq, task.payload)
    assert await _items(client) == 0


async def test_another_task_with_the_same_id_is_a_duplicate(make_client: ClientFactory) -> None:
    client = await make_client()
    original = await client.staged.stage(asyncjobs.Task("a", id="order-17"))
    other = asyncjobs.Task("b", id="order-17")
    fresh = asyncjobs.Task("c")
    outcomes = await client.staged.stage_many([other, fresh], return_exceptions=True)
    assert isinstance(outcomes[0], asyncjobs.DuplicateTaskError)
    assert outcomes[1] is fresh
    with pytest.raises(ExceptionGroup) as caught:
        await client.staged.stage_many([asyncjobs.Task("b", id="order-17")])
    assert [type(exc) for exc in caught.value.exceptions] == [asyncjobs.DuplicateTaskError]
    with pytest.raises(asyncjobs.DuplicateTaskError, match="order-17 already exists"):
        await client.staged.stage(asyncjobs.Task("b", id="order-17"))
    assert (await client.get_task("order-17")).type == original.type


@pytest.mark.parametrize("state", [TaskState.ACTIVE, TaskState.COMPLETED, TaskState.EXPIRED, TaskState.TERMINATED])
async def test_stage_refuses_a_task_that_cannot_wait(make_client: ClientFactory, state: TaskState) -> None:
    client = await make_client()
    task = asyncjobs.Task("a")
    task.state = state
    with pytest.raises(asyncjobs.InvalidTaskStateError, match="cannot enqueue a task in state"):
        await client.staged.stage(task)
    with pytest.raises(asyncjobs.TaskNotFound):
        await client.get_task(task.id)


async def test_a_closed_client_refuses_to_stage(make_client: ClientFactory) -> None:
    client = await make_client()
    await client.close()
    with pytest.raises(asyncjobs.ClientClosedError):
        await client.staged.stage(asyncjobs.Task("a"))


# ---- update -----------------------------------------------------------------------------------------------------


async def test_update_is_compare_and_set(make_client: ClientFactory) -> None:
    client = await make_client()
    task = await client.staged.stage(asyncjobs.Task("a", dependencies=["parent-1"]))
    first, second = await client.get_task(task.id), await client.get_task(task.id)
    first.state = TaskState.NEW
    await client.staged.update(first)
    assert first.seq > task.seq
    second.state = TaskState.TERMINATED
    second.last_err = "decided by a slower process"
    with pytest.raises(asyncjobs.TaskConflict):
        await client.staged.update(second)
    stored = await client.get_task(task.id)
    assert (stored.state, stored.seq, stored.last_err) == (TaskState.NEW, first.seq, "")


async def test_update_publishes_the_task_event(make_client: ClientFactory) -> None:
    client = await make_client()
    task = await client.staged.stage(asyncjobs.Task("a", dependencies=["parent-1"]))
    loaded = await client.get_task(task.id)
    sub = await client.nc.subscribe(f"CHORIA_AJ.E.task_state.{task.id}")
    await client.nc.flush()
    loaded.state = TaskState.NEW
    await client.staged.update(loaded)
    msg = await sub.next_msg(timeout=EVENT_TIMEOUT_S)
    await sub.unsubscribe()
    event = decode_event(msg.data)
    assert isinstance(event, asyncjobs.TaskStateEvent)
    assert (event.task_id, event.state, event.task_type) == (task.id, TaskState.NEW, "a")


async def test_update_signs_again_so_a_changed_deadline_verifies(make_client: ClientFactory) -> None:
    producer = await make_client(queue="SIGNED", signing_seed=SEED, reconcile_interval=None)
    worker = await make_client(queue="SIGNED", verification_key=PUBLIC_KEY, reconcile_interval=None)
    task = await producer.staged.stage(asyncjobs.Task("signed", deadline=timedelta(minutes=1)))
    loaded = await producer.get_task(task.id)
    old_signature = loaded.signature
    loaded.deadline_at = WireTime.from_datetime(datetime.now(UTC) + timedelta(hours=2))
    await producer.staged.update(loaded)
    verifier = TaskVerifier.from_public_key(PUBLIC_KEY)
    assert loaded.signature != old_signature
    verifier.verify(loaded.signature_envelope(), loaded.signature)
    with pytest.raises(InvalidSignature):
        verifier.verify(loaded.signature_envelope(), old_signature)
    assert await producer.staged.release(loaded)
    router = asyncjobs.Router()

    @router.handler("signed")
    async def handle(task: asyncjobs.Task) -> str:
        return "trusted"

    async with running(worker, router):
        done = await wait_state(worker, task.id, TaskState.COMPLETED)
    assert done.result is not None and done.result.payload == "trusted"
    assert done.deadline == loaded.deadline


# ---- release ----------------------------------------------------------------------------------------------------


async def test_release_publishes_one_item_per_stored_version(make_client: ClientFactory) -> None:
    client = await make_client()
    task = await client.staged.stage(asyncjobs.Task("a"))
    staged_seq = task.seq
    assert await client.staged.release(task)
    # The queue is recorded first (compare-and-set), then the item is published under the new version.
    assert task.seq > staged_seq
    stored = await client.get_task(task.id)
    assert (stored.queue, stored.seq, stored.state) == ("DEFAULT", task.seq, TaskState.NEW)
    message = await _raw_item(client, task.id)
    assert _headers(message)["Nats-Msg-Id"] == f"{task.id}:r{task.seq}"
    assert orjson.loads(base64.b64decode(message["data"])) == {"kind": 0, "job": task.id}
    assert await client.staged.queued(task.id)
    # A second release of the same version (another decider, a retry) is dropped by the server.
    assert not await client.staged.release(task)
    assert not await client.staged.release(await client.get_task(task.id))
    assert await _items(client) == 1


async def test_release_with_a_caller_message_id(make_client: ClientFactory) -> None:
    client = await make_client()
    task = await client.staged.stage(asyncjobs.Task("a"))
    assert await client.staged.release(task, msg_id="approval-42")
    assert _headers(await _raw_item(client, task.id))["Nats-Msg-Id"] == "approval-42"
    assert not await client.staged.release(task, msg_id="approval-42")


@pytest.mark.parametrize("state", [TaskState.ACTIVE, TaskState.COMPLETED, TaskState.TERMINATED])
async def test_release_refuses_a_task_that_cannot_wait(make_client: ClientFactory, state: TaskState) -> None:
    client = await make_client()
    task = await client.staged.stage(asyncjobs.Task("a"))
    loaded = await client.get_task(task.id)
    loaded.state = state
    await client.staged.update(loaded)
    with pytest.raises(asyncjobs.InvalidTaskStateError, match=f"cannot release task {task.id} in state"):
        await client.staged.release(await client.get_task(task.id))
    assert await _items(client) == 0


async def test_a_release_that_loses_the_race_raises_and_publishes_nothing(make_client: ClientFactory) -> None:
    client = await make_client()
    task = await client.staged.stage(asyncjobs.Task("a"))
    first, second = await client.get_task(task.id), await client.get_task(task.id)
    assert await client.staged.release(first)
    assert await _items(client) == 1
    with pytest.raises(asyncjobs.TaskConflict):
        await client.staged.release(second)
    # The losing copy is left as it was read: releasing it again records the queue again (and conflicts again)
    # instead of publishing an item for a version that was never stored.
    assert (second.queue, second.seq) == ("", task.seq)
    with pytest.raises(asyncjobs.TaskConflict):
        await client.staged.release(second)
    assert await _items(client) == 1


async def test_release_goes_to_the_named_queue_or_the_tasks_own(make_client: ClientFactory) -> None:
    other = await make_client(queue="OTHER")
    releaser = await make_client()
    staged = await releaser.staged.stage(asyncjobs.Task("a"))
    assert await releaser.staged.release(staged, queue="OTHER")
    assert (await releaser.get_task(staged.id)).queue == "OTHER"
    assert (await _items(releaser, "OTHER"), await _items(releaser)) == (1, 0)
    assert await releaser.staged.queued(staged.id, queue="OTHER")
    assert not await releaser.staged.queued(staged.id)
    # A task already on a queue keeps it, whichever client releases it and whatever queue= says.
    enqueued = await other.enqueue(asyncjobs.Task("b"))
    assert await releaser.staged.withdraw(enqueued.id, queue="OTHER")
    loaded = await releaser.get_task(enqueued.id)
    assert loaded.queue == "OTHER"
    assert await releaser.staged.release(loaded, queue="DEFAULT")
    assert (await _items(releaser, "OTHER"), await _items(releaser)) == (2, 0)


async def test_a_missing_queue_is_reported(make_client: ClientFactory) -> None:
    client = await make_client()
    task = await client.staged.stage(asyncjobs.Task("a"))
    with pytest.raises(asyncjobs.QueueNotFound):
        await client.staged.release(task, queue="NOWHERE")
    # The queue was recorded before the item failed: the task stays on it, and a retry goes there again.
    assert (await client.get_task(task.id)).queue == task.queue == "NOWHERE"
    with pytest.raises(asyncjobs.QueueNotFound):
        await client.staged.release(task, queue="DEFAULT")
    with pytest.raises(asyncjobs.QueueNotFound):
        await client.staged.queued(task.id, queue="NOWHERE")
    with pytest.raises(asyncjobs.QueueNotFound):
        await client.staged.withdraw(task.id, queue="NOWHERE")


async def test_a_released_new_task_runs_without_its_parents_being_checked(make_client: ClientFactory) -> None:
    # The releaser decides: a task saved `new` runs even though its parent never completed (the core checks the
    # parents of `blocked` tasks only), which is what lets a workflow run a clean-up step after a failure.
    client = await make_client(queue="GATE", reconcile_interval=None)
    parent = asyncjobs.Task("parent")
    child = asyncjobs.Task("child", dependencies=[parent.id])
    await client.staged.stage_many([parent, child])
    decided = await client.get_task(child.id)
    decided.state = TaskState.NEW
    await client.staged.update(decided)
    assert await client.staged.release(decided)
    ran: list[str] = []
    router = asyncjobs.Router()

    @router.handler("child")
    async def handle(task: asyncjobs.Task) -> str:
        ran.append(task.id)
        return "ran"

    async with running(client, router):
        done = await wait_state(client, child.id, TaskState.COMPLETED)
    assert ran == [child.id]
    assert done.tries == 1 and done.last_err == ""
    assert (await client.get_task(parent.id)).state == TaskState.NEW


# ---- withdraw ---------------------------------------------------------------------------------------------------


async def test_withdraw_removes_the_item_before_a_worker_sees_it(make_client: ClientFactory) -> None:
    client = await make_client(queue="WITHDRAW", reconcile_interval=None)
    task = await client.staged.stage(asyncjobs.Task("gated"))
    assert not await client.staged.withdraw(task.id)  # never released
    assert await client.staged.release(task)
    assert await client.staged.withdraw(task.id)
    assert not await client.staged.withdraw(task.id)
    assert not await client.staged.queued(task.id)
    assert await _items(client) == 0
    ran: list[str] = []
    router = asyncjobs.Router()

    @router.handler("")
    async def handle(task: asyncjobs.Task) -> None:
        ran.append(task.id)

    # A task enqueued after the withdrawal runs; the queue is FIFO, so the withdrawn item would have come first.
    marker = await client.enqueue(asyncjobs.Task("marker"))
    async with running(client, router):
        await wait_state(client, marker.id, TaskState.COMPLETED)
    assert ran == [marker.id]
    assert (await client.get_task(task.id)).state == TaskState.NEW


async def test_releasing_again_after_a_withdrawal_needs_another_message_id(make_client: ClientFactory) -> None:
    client = await make_client()
    task = await client.staged.stage(asyncjobs.Task("gated"))
    assert await client.staged.release(task)
    assert await client.staged.withdraw(task.id)
    # The same stored version within the duplicate window: the server drops the item as the first one's duplicate.
    assert not await client.staged.release(task)
    assert not await client.staged.queued(task.id)
    assert await client.staged.release(task, msg_id=f"{task.id}:again")
    assert await client.staged.queued(task.id)


# ---- the reconciler ---------------------------------------------------------------------------------------------


async def test_the_reconciler_leaves_staged_tasks_alone(make_client: ClientFactory) -> None:
    client = await make_client(queue="RECON")
    parent = asyncjobs.Task("parent")
    await client.staged.stage_many([parent, asyncjobs.Task("child", dependencies=[parent.id])])
    later = time.time_ns() + 3600 * 1_000_000_000  # every task looks stuck for an hour
    reconciler = Reconciler(client._storage, client.queue, interval=60, grace=120, clock=lambda: later)
    report = await reconciler.reconcile()
    assert (report.scanned, report.republished) == (0, [])
    assert await _items(client) == 0
    # Once released the task is the queue's, and a lost item would be repaired like any other.
    assert await client.staged.release(parent)
    assert await client.staged.withdraw(parent.id)
    report = await reconciler.reconcile()
    assert report.republished == [parent.id]
    assert await client.staged.queued(parent.id)
