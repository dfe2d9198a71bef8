"""The client: options, connecting, enqueue paths, task management, admin and events."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

import asyncjobs
from asyncjobs import TaskState
from asyncjobs.server import NatsServer
from asyncjobs.testing import eventually
from tests.core.conftest import ClientFactory, running, wait_state


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"replicas": 6}, "replicas"),
        ({"discard": ["retry"]}, "only states completed, expired or terminated"),
        ({"retry_policy": "2h"}, "unknown retry policy"),
        ({"queue": asyncjobs.Queue("Q")}, None),
        ({"bogus": 1}, "unknown option(s) bogus"),
        ({"signing_seed": "00", "signing_seed_file": "/nonexistent"}, "not both"),
        ({"task_retention": -1}, "task_retention"),
        ({"discard": ["nonsense"]}, "unknown task state"),
    ],
)
async def test_invalid_options_fail_before_connecting(options: dict[str, object], fragment: str | None) -> None:
    if fragment is None:
        return
    with pytest.raises(asyncjobs.ConfigurationError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        # Port 1 is never listened on: an error here must come from validation, not from connecting.
        await asyncjobs.connect("nats://127.0.0.1:1", **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"name": "bad name"}, "queue name is invalid"),
        ({"name": "Q", "max_run_time": 0}, "max_run_time"),
        ({"name": "Q", "max_tries": 0}, "max_tries"),
        ({"name": "Q", "max_concurrent": 0}, "max_concurrent"),
        ({"name": "Q", "max_entries": 0}, "max_entries"),
        ({"name": "Q", "max_age": -5}, "max_age"),
        ({"name": "Q", "max_tries": True}, "max_tries"),
        ({"name": "Q", "max_concurrent": True}, "max_concurrent must be an integer"),
        ({"name": "Q", "max_concurrent": "7"}, "max_concurrent must be an integer"),
        ({"name": "Q", "max_entries": True}, "max_entries must be an integer"),
        ({"name": "Q", "discard_old": 1}, "discard_old must be True or False"),
    ],
)
def test_invalid_queues(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(asyncjobs.ConfigurationError, match=fragment):
        asyncjobs.Queue(**kwargs)  # type: ignore[arg-type]


async def test_unreachable_server_fails_clearly() -> None:
    with pytest.raises(asyncjobs.JetStreamError, match=r"cannot connect to NATS at nats://127\.0\.0\.1:1"):
        await asyncio.wait_for(asyncjobs.connect("nats://127.0.0.1:1", connect_timeout=0.5), 20)


async def test_default_queue_and_server_settings_win(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client()
    assert client.queue.name == "DEFAULT"
    assert client.queue.max_run_time == 60 and client.queue.max_tries == 100
    created = await make_client(queue=asyncjobs.Queue("SET", max_run_time=120, max_concurrent=7))
    assert created.queue.max_concurrent == 7
    # An existing queue keeps its configuration whatever a later client asks for.
    later = await make_client(queue=asyncjobs.Queue("SET", max_run_time=5, max_concurrent=50))
    assert later.queue.max_run_time == 120 and later.queue.max_concurrent == 7
    # ... and says so, naming each ignored setting and the value the queue keeps.
    warning = next(r.getMessage() for r in caplog.records if "already exists" in r.getMessage())
    assert "max_run_time=5 (the queue has 120.0)" in warning and "max_concurrent=50 (the queue has 7)" in warning
    caplog.clear()
    await make_client(queue=asyncjobs.Queue("SET", max_run_time=120))
    assert not [r for r in caplog.records if "already exists" in r.getMessage()]


async def test_binding_a_missing_queue_fails_with_a_fix(make_client: ClientFactory) -> None:
    with pytest.raises(asyncjobs.QueueNotFound, match=r"queue 'NOPE' does not exist: create it first"):
        await make_client(queue=asyncjobs.Queue("NOPE", no_create=True))
    await make_client(queue="NOPE")
    bound = await make_client(queue=asyncjobs.Queue("NOPE", no_create=True))
    assert bound.queue.max_run_time == 300


async def test_existing_connection_is_not_closed(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        async with await asyncjobs.connect(nc, queue="OWN") as client:
            await client.enqueue(asyncjobs.Task("x"))
        assert nc.is_connected
    finally:
        await nc.close()


async def test_custom_ids_and_duplicates(make_client: ClientFactory) -> None:
    client = await make_client(queue="DUP")
    task = await client.enqueue(asyncjobs.Task("x", {"n": 1}, id="order-42"))
    assert task.id == "order-42"
    with pytest.raises(asyncjobs.DuplicateTaskError, match="task order-42 already exists"):
        await client.enqueue(asyncjobs.Task("x", {"n": 2}, id="order-42"))
    stored = await client.get_task("order-42")
    assert stored.payload_json() == {"n": 1}
    assert stored.state == TaskState.NEW
    # Enqueueing the same object again is idempotent: its item is still queued, so nothing changes.
    await client.enqueue(task)
    stored = await client.get_task("order-42")
    assert stored.state == TaskState.NEW
    assert (await client.admin.queue_info("DUP")).items == 1


async def test_duplicate_item_of_a_recreated_task_is_a_queue_error(make_client: ClientFactory) -> None:
    # A task is processed and deleted, and a new one takes its id within the server's duplicate window: the new
    # item is dropped as a duplicate and no item is queued, so the task is stored queue_error (as upstream).
    client = await make_client(queue="DUP2")
    first = await client.enqueue(asyncjobs.Task("x", id="order-7"))
    await client.admin.purge_queue("DUP2")
    await client.delete_task(first.id)
    with pytest.raises(asyncjobs.DuplicateTaskError, match="duplicate work queue item"):
        await client.enqueue(asyncjobs.Task("x", id="order-7"))
    stored = await client.get_task("order-7")
    assert stored.state == TaskState.QUEUE_ERROR and stored.last_err == "duplicate work queue item"


async def test_enqueue_refuses_finished_tasks(make_client: ClientFactory) -> None:
    client = await make_client(queue="FIN")
    task = asyncjobs.Task("x")
    task.state = TaskState.COMPLETED
    with pytest.raises(asyncjobs.InvalidTaskStateError, match="cannot enqueue a task in state 'complete'"):
        await client.enqueue(task)
    with pytest.raises(asyncjobs.TaskNotFound):
        await client.get_task(task.id)


async def test_enqueue_to_a_deleted_queue_records_queue_error(make_client: ClientFactory) -> None:
    client = await make_client(queue="GONE")
    await client.admin.delete_queue("GONE")
    with pytest.raises(asyncjobs.EnqueueError, match="queue 'GONE' not found"):
        await client.enqueue(task := asyncjobs.Task("x"))
    stored = await client.get_task(task.id)
    assert stored.state == TaskState.QUEUE_ERROR
    assert stored.last_err == "nats: no responders available for request"


async def test_enqueue_many_reports_each_outcome(make_client: ClientFactory) -> None:
    client = await make_client(queue="MANY")
    await client.enqueue(asyncjobs.Task("x", id="taken"))
    tasks = [asyncjobs.Task("x", {"i": i}) for i in range(1200)] + [asyncjobs.Task("x", id="taken")]
    outcomes = await client.enqueue_many(tasks, return_exceptions=True)
    assert sum(isinstance(o, asyncjobs.Task) for o in outcomes) == 1200
    assert isinstance(outcomes[-1], asyncjobs.DuplicateTaskError)
    assert (await client.admin.queue_info("MANY")).items == 1201
    with pytest.raises(ExceptionGroup) as caught:
        await client.enqueue_many([asyncjobs.Task("x", id="taken"), asyncjobs.Task("x")])
    assert len(caught.value.exceptions) == 1


async def test_retry_task_runs_it_again(make_client: ClientFactory) -> None:
    client = await make_client(queue="RT")
    router = asyncjobs.Router()
    runs = 0

    @router.handler("x")
    async def handle(task: asyncjobs.Task) -> int:
        nonlocal runs
        runs += 1
        return runs

    task = await client.enqueue(asyncjobs.Task("x", max_tries=1))
    async with running(client, router):
        await wait_state(client, task.id, TaskState.COMPLETED)
        retried = await client.retry_task(task.id)
        assert retried.state == TaskState.RETRY and retried.result is None
        done = await eventually(lambda: _completed_with(client, task.id, 2), message="second run stored", timeout=10)
    assert done.tries == 1  # tries restart, so a max_tries=1 task can run again
    with pytest.raises(asyncjobs.TaskNotFound):
        await client.retry_task("no-such-task")


async def _completed_with(client: asyncjobs.Client, task_id: str, value: int) -> asyncjobs.Task | None:
    task = await client.get_task(task_id)
    ok = task.state == TaskState.COMPLETED and task.result is not None and task.result.payload == value
    return task if ok else None


async def test_delete_task_and_admin(make_client: ClientFactory) -> None:
    client = await make_client(queue="ADM", task_retention=3600)
    other = await make_client(queue="ADM2")
    t1 = await client.enqueue(asyncjobs.Task("a:one"))
    await client.enqueue(asyncjobs.Task("b:two"))
    await other.enqueue(asyncjobs.Task("a:one"))
    assert await client.admin.queue_names() == ["ADM", "ADM2"]
    assert [q.queue.name for q in await client.admin.queues()] == ["ADM", "ADM2"]
    info = await client.admin.tasks_info()
    assert info.tasks == 3 and info.retention == 3600
    listed = [t async for t in client.admin.tasks(task_type="a:one")]
    assert len(listed) == 2
    assert [t.queue async for t in client.admin.tasks(queue="ADM2")] == ["ADM2"]
    assert len([t async for t in client.admin.tasks(limit=1)]) == 1
    assert len([t async for t in client.admin.tasks(states=["new"])]) == 3
    assert [t async for t in client.admin.tasks(states=["completed"])] == []
    since = datetime.now(UTC) + timedelta(hours=1)
    assert [t async for t in client.admin.tasks(created_since=since)] == []
    await client.delete_task(t1.id)
    with pytest.raises(asyncjobs.TaskNotFound):
        await client.get_task(t1.id)
    await client.admin.purge_queue("ADM")
    assert (await client.admin.queue_info("ADM")).items == 0
    await client.admin.set_task_retention(timedelta(days=2))
    assert (await client.admin.tasks_info()).retention == 172800
    await client.admin.purge_tasks()
    assert (await client.admin.tasks_info()).tasks == 0
    assert [t async for t in client.admin.tasks()] == []
    await client.admin.delete_queue("ADM2")
    with pytest.raises(asyncjobs.QueueNotFound):
        await client.admin.queue_info("ADM2")


async def test_events_live_and_replayed(make_client: ClientFactory) -> None:
    client = await make_client(queue="EV", persist_events=True)
    router = asyncjobs.Router()

    @router.handler("x")
    async def handle(task: asyncjobs.Task) -> None:
        return None

    live: list[asyncjobs.Event] = []

    async def collect() -> None:
        async for event in client.events():
            live.append(event)

    collector = asyncio.create_task(collect())
    await asyncio.sleep(0.05)
    task = await client.enqueue(asyncjobs.Task("x"))
    async with running(client, router):
        await wait_state(client, task.id, TaskState.COMPLETED)
    await eventually(lambda: len(live) == 3)
    collector.cancel()
    assert [(e.task_id, e.state) for e in live if isinstance(e, asyncjobs.TaskStateEvent)] == [
        (task.id, "new"),
        (task.id, "active"),
        (task.id, "complete"),
    ]
    replayed: list[asyncjobs.Event] = []
    async for event in client.events(task.id, replay=True):
        replayed.append(event)
        if len(replayed) == 3:
            break
    assert [getattr(e, "state", None) for e in replayed] == ["new", "active", "complete"]


async def test_replay_without_the_events_stream_fails(make_client: ClientFactory) -> None:
    client = await make_client(queue="NOEV")
    events = client.events(replay=True)
    with pytest.raises(asyncjobs.JetStreamError, match="persist_events=True"):
        await anext(events)


async def test_auth_user_password_and_token(tmp_path: Path) -> None:
    config = tmp_path / "auth.conf"
    config.write_text('authorization { users = [ { user: "aj", password: "s3cret" } ] }\n')
    async with NatsServer(extra_args=["-c", str(config)]) as server:
        with pytest.raises(asyncjobs.JetStreamError, match="cannot connect"):
            await asyncjobs.connect(server.url, connect_timeout=1, user="aj", password="wrong")
        async with await asyncjobs.connect(server.url, user="aj", password="s3cret", queue="AUTH") as client:
            assert (await client.enqueue(asyncjobs.Task("x"))).state == TaskState.NEW
    async with (
        NatsServer(extra_args=["--auth", "t0ken"]) as server,
        await asyncjobs.connect(server.url, token="t0ken", queue="AUTH") as client,
    ):
        await client.enqueue(asyncjobs.Task("x"))


async def test_nats_cli_context(nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    contexts = tmp_path / "nats" / "context"
    contexts.mkdir(parents=True)
    (contexts / "AJC.json").write_text(json.dumps({"description": "test", "url": nats_url}))
    async with await asyncjobs.connect(context="AJC", queue="CTX") as client:
        await client.enqueue(asyncjobs.Task("x"))
    (tmp_path / "nats" / "context.txt").write_text("AJC\n")
    async with await asyncjobs.connect(context="", queue="CTX") as client:
        assert client.queue.name == "CTX"
    with pytest.raises(asyncjobs.ConfigurationError, match="NATS context 'missing' not found"):
        await asyncjobs.connect(context="missing")


async def test_run_needs_handlers(make_client: ClientFactory, nc: NATS) -> None:
    client = await make_client(queue="RUN")
    with pytest.raises(asyncjobs.ConfigurationError, match="at least one handler"):
        await client.run(asyncjobs.Router())


async def test_invalid_ids_and_impossible_storage(make_client: ClientFactory) -> None:
    client = await make_client(queue="IDS")
    for bad in ("a.b", "a>", "", "a b"):
        with pytest.raises(asyncjobs.InvalidNameError, match="task id is invalid"):
            await client.get_task(bad)
    # Three replicas on a single server: the creation error is reported, not a misleading "not found".
    with pytest.raises(asyncjobs.JetStreamError, match="replicas > 1 not supported in non-clustered mode"):
        await make_client(queue="R3", replicas=3)


async def test_no_storage_init_and_memory_storage(make_client: ClientFactory) -> None:
    bare = await make_client(queue="BARE", no_storage_init=True)
    assert await bare.admin.queue_names() == []
    with pytest.raises(asyncjobs.JetStreamError, match="no responders"):
        await bare.enqueue(asyncjobs.Task("x"))
    memory = await make_client(queue="MEM", memory_storage=True)
    assert (await memory.admin.tasks_info()).memory
    stream = await memory.admin.queue_info("MEM")
    assert stream.queue.name == "MEM"
    # The stores now exist, so the bare client works too, on the queue created by the other.
    bare_ok = await make_client(queue=asyncjobs.Queue("MEM", no_create=True), no_storage_init=True)
    assert (await bare_ok.enqueue(asyncjobs.Task("x"))).queue == "MEM"
