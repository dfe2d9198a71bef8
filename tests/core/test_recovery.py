"""Enqueue that is safe to cancel and to repeat, the reconciler, transient-failure retries, wait() and until_idle."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import nats
import orjson
import pytest
from nats.aio.client import Client as NATS

import asyncjobs
from asyncjobs import TaskState
from asyncjobs.metrics import METRICS
from asyncjobs.reconciler import LOST_ON_LAST_DELIVERY, Reconciler
from asyncjobs.server import NatsServer
from asyncjobs.testing import eventually
from tests.core.conftest import ClientFactory, queued_items, recording_router, running, wait_state

HOUR_NS = 3600 * 1_000_000_000


def _later(ns: int = HOUR_NS) -> Callable[[], int]:
    """A clock an hour ahead, so every task looks past the reconciler's grace without waiting for it."""
    return lambda: time.time_ns() + ns


def _reconciler(client: asyncjobs.Client, clock: Callable[[], int] | None = None) -> Reconciler:
    return Reconciler(client._storage, client.queue, interval=60, grace=60, clock=clock or _later())


async def _delete_item(client: asyncjobs.Client, task_id: str) -> None:
    queue = client.queue
    item = await client._storage.js.get_last(queue.stream, queue.subject_prefix + task_id, "finding the item")
    await client._storage.js.api(f"STREAM.MSG.DELETE.{queue.stream}", {"seq": item.seq}, "deleting the item")


async def test_cancelled_enqueue_still_completes(make_client: ClientFactory) -> None:
    client = await make_client(queue="CANCEL")
    tasks = [asyncjobs.Task("x") for _ in range(50)]
    calls = [asyncio.create_task(client.enqueue(task)) for task in tasks]
    await asyncio.sleep(0)  # every call has started
    for call in calls:
        call.cancel()
    await asyncio.gather(*calls, return_exceptions=True)
    await eventually(lambda: _all_stored_withqueued_items(client, tasks), message="every cancelled enqueue finished")


async def test_an_enqueue_cancelled_between_its_two_writes_is_finished_once(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cancellation lands after the task is stored and before its item is published: the enqueue finishes in the
    # background with one stored task and one item, and the caller sees its cancellation at once.
    client = await make_client(queue="BETWEEN")
    storage = client._storage
    publish_item = storage.publish_item
    cancelled: list[str] = []

    async def cancel_first(task: asyncjobs.Task, *args: object, **kwargs: object) -> None:
        me = asyncio.current_task()
        if not cancelled and me is not None:
            cancelled.append(task.id)
            me.cancel()
            await asyncio.sleep(0)  # the cancellation lands here
        await publish_item(task, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(storage, "publish_item", cancel_first)
    task = asyncjobs.Task("x")
    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(client.enqueue(task))
    assert cancelled == [task.id]
    await eventually(lambda: _all_stored_withqueued_items(client, [task]), message="the enqueue finished")
    await client.close()  # waits for the finishing enqueue
    fresh = await make_client(queue="BETWEEN")
    stored = await fresh.get_task(task.id)
    assert (stored.state, stored.queue) == (TaskState.NEW, "BETWEEN")
    assert await queued_items(fresh) == 1


async def test_a_cancelled_enqueue_that_fails_says_so_in_the_log(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # The caller is gone, so the log is the only place its failure can show.
    client = await make_client(queue="CANCELFAIL")
    await client.admin.delete_queue("CANCELFAIL")
    call = asyncio.create_task(client.enqueue(asyncjobs.Task("x")))
    await asyncio.sleep(0)  # the call has started
    call.cancel()
    await asyncio.gather(call, return_exceptions=True)
    assert call.cancelled()

    def reported() -> bool:
        return any(
            "an enqueue whose caller was cancelled failed" in r.getMessage() and "not found" in r.getMessage()
            for r in caplog.records
            if r.levelname == "WARNING"
        )

    await eventually(reported, message="the failure logged at WARNING")


async def _all_stored_withqueued_items(client: asyncjobs.Client, tasks: list[asyncjobs.Task]) -> bool:
    for task in tasks:
        try:
            stored = await client.get_task(task.id)
        except asyncjobs.TaskNotFound:
            return False
        assert stored.state == TaskState.NEW
    return await queued_items(client) == len(tasks)


async def test_enqueue_is_idempotent_for_the_same_task(make_client: ClientFactory) -> None:
    client = await make_client(queue="IDEM")
    task = asyncjobs.Task("x", {"n": 1})
    # The first call is interrupted after the task is saved and before its item is published.
    await client._storage.save_for_enqueue(task, client.queue)
    assert await queued_items(client) == 0
    again = asyncjobs.Task.__new__(asyncjobs.Task)  # the caller retries with the same task (same content)
    for name in asyncjobs.Task.__slots__:
        setattr(again, name, getattr(task, name))
    again.seq = 0
    await client.enqueue(again)
    await client.enqueue(again)
    assert await queued_items(client) == 1
    runs: list[str] = []
    async with running(client, recording_router(runs)):
        await wait_state(client, task.id, TaskState.COMPLETED)
        await client.enqueue(again)  # after it ran: nothing new is queued, it does not run twice
        await asyncio.sleep(0.3)
    assert runs == [task.id]
    assert await queued_items(client) == 0
    with pytest.raises(asyncjobs.DuplicateTaskError, match="already exists"):
        await client.enqueue(asyncjobs.Task("x", {"n": 2}, id=task.id))


async def test_reconciler_republishes_a_task_left_without_an_item(make_client: ClientFactory) -> None:
    client = await make_client(queue="STRANDED", reconcile_interval=None)
    stranded = asyncjobs.Task("x")
    await client._storage.save_for_enqueue(stranded, client.queue)  # a crash between the two writes
    waiting = await client.enqueue(asyncjobs.Task("x"))
    fresh = asyncjobs.Task("x")
    await client._storage.save_for_enqueue(fresh, client.queue)
    repaired = METRICS.reconciler_repaired_total.value("STRANDED", "republish", "new")
    # Within the grace period nothing is touched: the enqueue may still be under way.
    report = await _reconciler(client, clock=time.time_ns).reconcile()
    assert report.republished == [] and report.scanned == 3
    # Two reconcilers (in two workers) repairing the same stored versions publish one item each between them.
    first, second = await asyncio.gather(_reconciler(client).reconcile(), _reconciler(client).reconcile())
    # Each task is repaired by one of them, never twice: the other finds the new item or is deduplicated.
    assert sorted(first.republished + second.republished) == sorted([stranded.id, fresh.id])
    assert await queued_items(client) == 3
    # Each repair is counted, by queue, action and the state the task was found in.
    counted = len(first.republished) + len(second.republished)
    assert METRICS.reconciler_repaired_total.value("STRANDED", "republish", "new") == repaired + counted
    runs: list[str] = []
    async with running(client, recording_router(runs)):
        for task in (stranded, waiting, fresh):
            await wait_state(client, task.id, TaskState.COMPLETED)
    assert sorted(runs) == sorted([stranded.id, waiting.id, fresh.id])


async def test_reconciler_reruns_an_active_task_whose_item_was_lost(make_client: ClientFactory) -> None:
    client = await make_client(queue=asyncjobs.Queue("LOSTACK", max_run_time=1), reconcile_interval=None)
    task = await client.enqueue(asyncjobs.Task("x"))
    stored = await client.get_task(task.id)
    stored.state, stored.tries, stored.tried_at = TaskState.ACTIVE, 1, stored.created_at
    await client._storage.save_task(stored)
    await _delete_item(client, task.id)  # the item was acked but the outcome never stored
    report = await _reconciler(client).reconcile()
    assert report.republished == [task.id]
    runs: list[str] = []
    async with running(client, recording_router(runs)):
        done = await wait_state(client, task.id, TaskState.COMPLETED)
    assert runs == [task.id] and done.tries == 2


async def test_a_worker_repairs_items_the_consumer_gave_up_on(make_client: ClientFactory, nc: NATS) -> None:
    # A worker took an item on its last permitted delivery, set the task active, and died; another took the item of
    # a waiting task and died before setting it active. Both items are dead: the consumer never delivers them again.
    queue = asyncjobs.Queue("DEAD", max_run_time=1, max_tries=1)
    client = await make_client(queue=queue)
    active = await client.enqueue(asyncjobs.Task("x"))
    waiting = await client.enqueue(asyncjobs.Task("x"))
    reply = await nc.request(
        "$JS.API.CONSUMER.MSG.NEXT.CHORIA_AJ_Q_DEAD.WORKERS",
        orjson.dumps({"batch": 2, "expires": 2_000_000_000}),
        old_style=True,
    )
    assert reply.data == b'{"kind":0,"job":"' + active.id.encode() + b'"}'
    stored = await client.get_task(active.id)
    stored.state, stored.tries, stored.tried_at = TaskState.ACTIVE, 1, stored.created_at
    await client._storage.save_task(stored)
    runs: list[str] = []
    # The worker starts before the ack wait runs out, so it hears the server's max-deliveries advisories.
    async with running(client, recording_router(runs)):
        expired = await wait_state(client, active.id, TaskState.EXPIRED)
        await wait_state(client, waiting.id, TaskState.COMPLETED)
        await eventually(lambda: _items_are(client, 0), message="the dead items gone")
    assert expired.last_err == LOST_ON_LAST_DELIVERY
    assert runs == [waiting.id]


async def _items_are(client: asyncjobs.Client, count: int) -> bool:
    return await queued_items(client) == count


async def test_reconciler_replaces_a_delivery_that_never_reached_a_worker(make_client: ClientFactory, nc: NATS) -> None:
    # The consumer delivered the item (to a connection that then died): it waits out its ack wait of 5 minutes
    # unless the reconciler notices that the task never became active.
    client = await make_client(queue=asyncjobs.Queue("LOSTMSG", max_run_time=300), reconcile_interval=None)
    task = await client.enqueue(asyncjobs.Task("x"))
    undelivered = await client.enqueue(asyncjobs.Task("x"))
    await nc.request(
        "$JS.API.CONSUMER.MSG.NEXT.CHORIA_AJ_Q_LOSTMSG.WORKERS",
        orjson.dumps({"batch": 1, "expires": 2_000_000_000}),
        old_style=True,
    )
    report = await _reconciler(client, clock=time.time_ns).reconcile()
    assert report.republished == []  # a fresh delivery: the worker may be about to set it active
    report = await _reconciler(client, clock=_later(11 * 1_000_000_000)).reconcile()
    assert report.republished == [task.id]  # the other item was never delivered: it just waits its turn
    runs: list[str] = []
    async with running(client, recording_router(runs)):
        await wait_state(client, task.id, TaskState.COMPLETED)
        await wait_state(client, undelivered.id, TaskState.COMPLETED)
    assert sorted(runs) == sorted([task.id, undelivered.id])


async def test_reconciler_ends_tasks_whose_items_were_removed_on_purpose(make_client: ClientFactory) -> None:
    client = await make_client(queue="PURGED", reconcile_interval=None)
    purged = await client.enqueue(asyncjobs.Task("x"))
    await client.admin.purge_queue("PURGED")
    later = asyncjobs.Task("x")
    await client._storage.save_for_enqueue(later, client.queue)  # after the purge: lost, not dropped
    report = await _reconciler(client).reconcile()
    assert report.expired == [purged.id] and report.republished == [later.id]
    ended = await client.get_task(purged.id)
    assert ended.state == TaskState.EXPIRED
    assert ended.last_err.startswith("its work item was removed when queue PURGED was purged at ")


@pytest.mark.parametrize(
    ("queue", "age_s", "reason"),
    [
        (asyncjobs.Queue("A"), 10**6, ""),
        (asyncjobs.Queue("A", max_age=60), 30, ""),
        (asyncjobs.Queue("A", max_age=60), 90, "dropped after the queue's max_age of 60s"),
        (asyncjobs.Queue("A", max_entries=10), 10**6, ""),
        (asyncjobs.Queue("A", max_entries=10, discard_old=True), 1, "dropped from the full queue (max_entries 10"),
    ],
)
def test_items_dropped_by_the_queue_limits(queue: asyncjobs.Queue, age_s: int, reason: str) -> None:
    task = asyncjobs.Task("x")
    now = task.created_at.unix_ns + age_s * 1_000_000_000
    reconciler = Reconciler(None, queue, interval=60, grace=60, clock=lambda: now)  # type: ignore[arg-type]
    found = reconciler._dropped_on_purpose(task, purged_ns=0)
    assert (reason in found) if reason else found == ""


async def test_reconciler_runs_inside_workers(make_client: ClientFactory) -> None:
    client = await make_client(queue="INSIDE", reconcile_interval=0.2, reconcile_grace=0.5)
    stranded = asyncjobs.Task("x")
    await client._storage.save_for_enqueue(stranded, client.queue)
    runs: list[str] = []
    async with running(client, recording_router(runs)):
        await wait_state(client, stranded.id, TaskState.COMPLETED, timeout=15)
    assert runs == [stranded.id]


async def test_wait_returns_the_final_task(make_client: ClientFactory) -> None:
    client = await make_client(queue="WAIT")
    router = asyncjobs.Router()

    @router.handler("ok")
    async def ok(task: asyncjobs.Task) -> str:
        await asyncio.sleep(0.2)
        return "fine"

    @router.handler("bad")
    async def bad(task: asyncjobs.Task) -> None:
        raise asyncjobs.TerminateTask("no")

    good = await client.enqueue(asyncjobs.Task("ok"))
    failing = await client.enqueue(asyncjobs.Task("bad"))
    with pytest.raises(asyncjobs.WaitTimeout, match=r"did not reach a final state within 0\.2s"):
        await client.wait(good.id, timeout=0.2)
    async with running(client, router):
        done, terminated = await asyncio.gather(client.wait(good.id, timeout=10), client.wait(failing.id))
        assert done.state == TaskState.COMPLETED and done.result is not None and done.result.payload == "fine"
        assert terminated.state == TaskState.TERMINATED
        # Already final: returns at once from the store.
        assert (await client.wait(good.id, timeout=1)).state == TaskState.COMPLETED
    with pytest.raises(asyncjobs.TaskNotFound):
        await client.wait("nope", timeout=1)


async def test_run_until_idle_returns_when_the_queue_is_drained(make_client: ClientFactory) -> None:
    client = await make_client(queue="IDLE")
    router = asyncjobs.Router()
    done: list[int] = []

    @router.handler("x")
    async def handle(task: asyncjobs.Task) -> None:
        done.append(task.tries)
        if task.tries == 1 and len(done) % 3 == 0:
            raise RuntimeError("once more")  # a retry due later still counts as work

    await client.enqueue_many([asyncjobs.Task("x") for _ in range(30)])
    await asyncio.wait_for(client.run(router, until_idle=True), 30)
    assert await queued_items(client) == 0
    stored = [t async for t in client.admin.tasks(queue="IDLE")]
    assert len(stored) == 30 and all(t.state == TaskState.COMPLETED for t in stored)


@pytest.mark.slow
async def test_enqueue_and_work_ride_out_a_server_restart(tmp_path: object) -> None:
    async with NatsServer() as server:
        client = await asyncjobs.connect(server.url, queue="RIDE", retry_window=30)
        producer = await asyncjobs.connect(server.url, queue="RIDE", retry_window=30)
        runs: list[str] = []
        try:
            async with running(client, recording_router(runs)):
                first = await producer.enqueue(asyncjobs.Task("x"))
                await client.wait(first.id, timeout=10)
                server.kill()
                # Enqueued while the server is down: the call waits and lands once it is back.
                pending = asyncio.create_task(producer.enqueue(asyncjobs.Task("x")))
                await asyncio.sleep(2)
                assert not pending.done()
                await server.restart()
                second = await asyncio.wait_for(pending, 40)
                done = await client.wait(second.id, timeout=40)
                assert done.state == TaskState.COMPLETED
            assert sorted(runs) == sorted([first.id, second.id])
        finally:
            await producer.close()
            await client.close()


async def test_transient_errors_are_retried_then_reported(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = asyncjobs.jsapi.JetStream(nc, timeout=0.2, retry_window=1.0)

        async def silent(msg: object) -> None:
            return None

        await nc.subscribe("silent.service", cb=silent)
        started = time.monotonic()
        with pytest.raises(asyncjobs.RequestTimeout, match=r"still failing after .* attempts over 1s") as failed:
            await js.request("silent.service", b"", "asking a silent service")
        assert failed.value.attempts >= 3
        assert 1.0 <= time.monotonic() - started < 3.0
        # A publish to a stream that does not exist fails at once, not after the retry window.
        started = time.monotonic()
        with pytest.raises(asyncjobs.QueueNotFound, match="stream CHORIA_AJ_Q_NONE does not exist"):
            await js.publish("CHORIA_AJ.Q.NONE.x", b"{}", "publishing", stream="CHORIA_AJ_Q_NONE")
        assert time.monotonic() - started < 0.9
    finally:
        await nc.close()


async def test_a_large_store_is_swept_over_several_bounded_passes(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncjobs.reconciler as reconciler_module

    monkeypatch.setattr(reconciler_module, "MAX_SCAN_PER_PASS", 100)
    other = await make_client(queue="OTHERQ")
    await other.enqueue_many([asyncjobs.Task("x") for _ in range(300)])  # not this queue's: read, then skipped
    client = await make_client(queue="SWEPT", reconcile_interval=None)
    stranded = asyncjobs.Task("x")
    await client._storage.save_for_enqueue(stranded, client.queue)
    reconciler = _reconciler(client)
    reports = [await reconciler.reconcile() for _ in range(3)]
    # 301 stored tasks, read a batch of 256 at a time: the first pass stops short of the stranded task ...
    assert (reports[0].scanned, reports[0].republished) == (0, [])
    # ... the second goes on from there, finds it and ends the sweep ...
    assert (reports[1].scanned, reports[1].republished) == (1, [stranded.id])
    # ... and the next sweep starts at the oldest task still waiting: the others are not read again.
    assert (reports[2].scanned, reports[2].republished) == (1, [])
    assert reconciler.cursor == stranded.seq - 1


async def test_a_failing_pass_does_not_stop_the_reconciler(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await make_client(queue="FLAKY", reconcile_interval=None)
    reconciler = Reconciler(client._storage, client.queue, interval=0.01, grace=60)
    calls: list[int] = []

    async def flaky() -> object:
        calls.append(1)
        if len(calls) == 1:
            raise TimeoutError("a bare timeout from deep inside nats-py")
        return None

    monkeypatch.setattr(reconciler, "reconcile", flaky)
    runner = asyncio.create_task(reconciler.run())
    await eventually(lambda: len(calls) >= 3, message="passes go on after a failed one")
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
