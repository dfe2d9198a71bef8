"""Fault injection: a worker killed mid-task, a server restart, and a replicated cluster losing a node."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

import asyncjobs
from asyncjobs import TaskState
from asyncjobs.cluster import NatsCluster
from asyncjobs.server import NatsServer
from asyncjobs.testing import eventually
from tests.core.conftest import ClientFactory, running, wait_state

CRASHING_WORKER = Path(__file__).with_name("crashing_worker.py")


async def _sigkill_worker_mid_task(nats_url: str, queue: str, task_id: str, tmp_path: Path) -> None:
    """Run a worker process on ``queue`` until its handler has started ``task_id``, then SIGKILL it."""
    marker = tmp_path / "started"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(CRASHING_WORKER), nats_url, queue, str(marker), cwd=Path(__file__).parents[2]
    )
    try:
        await eventually(marker.exists, timeout=20, message="the doomed worker started the task")
        assert marker.read_text() == task_id
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.slow
async def test_sigkilled_worker_loses_nothing(make_client: ClientFactory, nats_url: str, tmp_path: Path) -> None:
    client = await make_client(queue=asyncjobs.Queue("CRASH", max_run_time=2))
    task = await client.enqueue(asyncjobs.Task("work", {"n": 1}))
    await _sigkill_worker_mid_task(nats_url, "CRASH", task.id, tmp_path)
    stranded = await client.get_task(task.id)
    assert stranded.state == TaskState.ACTIVE

    router = asyncjobs.Router()
    handled: list[str] = []

    @router.handler("work")
    async def work(t: asyncjobs.Task) -> str:
        handled.append(t.id)
        return "recovered"

    async with running(client, router):
        done = await wait_state(client, task.id, TaskState.COMPLETED, timeout=20)
        await eventually(lambda: _queue_empty(client, "CRASH"), message="no item left")
    assert handled == [task.id]
    assert done.tries == 2
    assert done.result is not None and done.result.payload == "recovered"


async def _queue_empty(client: asyncjobs.Client, queue: str) -> bool:
    return (await client.admin.queue_info(queue)).items == 0


@pytest.mark.slow
async def test_worker_survives_server_restart(tmp_path: Path) -> None:
    async with NatsServer(store_dir=tmp_path / "store") as server:
        client = await asyncjobs.connect(server.url, queue="RESTART", shutdown_grace=1)
        async with client:
            router = asyncjobs.Router()

            @router.handler("x")
            async def handle(task: asyncjobs.Task) -> None:
                return None

            first = await client.enqueue(asyncjobs.Task("x"))
            async with running(client, router):
                await wait_state(client, first.id, TaskState.COMPLETED)
                await server.restart()

                async def enqueue_again() -> asyncjobs.Task:
                    # Until the client has reconnected (upstream's 1-minute policy: a few seconds) requests fail.
                    try:
                        return await client.enqueue(asyncjobs.Task("x"))
                    except asyncjobs.AsyncJobsError as exc:
                        raise AssertionError(f"enqueue during the restart: {exc}") from exc

                second = await eventually(enqueue_again, timeout=30, interval=0.2)
                await wait_state(client, second.id, TaskState.COMPLETED, timeout=30)


@pytest.mark.slow
async def test_replicated_cluster_keeps_working_without_a_node() -> None:
    async with NatsCluster(3) as cluster:
        client = await asyncjobs.connect(cluster.urls, queue="HA", replicas=3, shutdown_grace=1)
        async with client:
            info = await client.admin.tasks_info()
            assert info.replicas == 3
            router = asyncjobs.Router()

            @router.handler("x")
            async def handle(task: asyncjobs.Task) -> str:
                return "ok"

            tasks = [asyncjobs.Task("x") for _ in range(20)]
            await client.enqueue_many(tasks)
            async with running(client, router):
                await wait_state(client, tasks[-1].id, TaskState.COMPLETED, timeout=30)
                # Kill the node leading the work queue, the worst one to lose for a worker.
                stream = await client.nc.request("$JS.API.STREAM.INFO.CHORIA_AJ_Q_HA", b"", timeout=5)
                leader = json.loads(stream.data)["cluster"]["leader"]
                names = [server.server_name for server in cluster.servers]
                cluster.kill(names.index(leader))

                async def enqueue_more() -> list[asyncjobs.Task]:
                    # During the fail-over requests may time out; a caller retries, as this does.
                    try:
                        return await client.enqueue_many([asyncjobs.Task("x") for _ in range(20)])
                    except (asyncjobs.AsyncJobsError, ExceptionGroup) as exc:
                        raise AssertionError(f"enqueue failed during fail-over: {exc}") from exc

                more = await eventually(enqueue_more, timeout=30, interval=0.5)
                for task in more:
                    await wait_state(client, task.id, TaskState.COMPLETED, timeout=30)


@pytest.mark.slow
async def test_task_that_kills_its_worker_expires_after_max_tries(
    make_client: ClientFactory, nats_url: str, tmp_path: Path
) -> None:
    client = await make_client(queue=asyncjobs.Queue("DOOMED", max_run_time=1))
    task = await client.enqueue(asyncjobs.Task("work", max_tries=1))
    await _sigkill_worker_mid_task(nats_url, "DOOMED", task.id, tmp_path)
    router = asyncjobs.Router()
    ran: list[str] = []

    @router.handler("work")
    async def work(t: asyncjobs.Task) -> None:
        ran.append(t.id)

    # The try that killed its worker counted: with max_tries=1 the task is not run again.
    async with running(client, router):
        done = await wait_state(client, task.id, TaskState.EXPIRED, timeout=20)
    assert ran == []
    assert done.tries == 1
    assert done.last_err.startswith("no outcome was recorded for the last try")
