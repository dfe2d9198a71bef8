"""Deleting ended runs and following run events."""

from __future__ import annotations

import asyncio

import orjson
import pytest

import asyncjobs
from asyncjobs.metrics import METRICS
from asyncjobs.testing import eventually
from asyncjobs_workflows import RunState, RunStateError, Workflow, WorkflowNotFound, Workflows
from asyncjobs_workflows.constants import FEED_NAME, RUNS_BUCKET
from tests.workflows.conftest import ClientFactory, releasing, running


def _router() -> asyncjobs.Router:
    router = asyncjobs.Router()

    @router.handler("t")
    async def handle(task: asyncjobs.Task) -> str:
        return "ok"

    return router


async def test_delete_erases_the_tasks_and_keys_of_an_ended_run(client: asyncjobs.Client, flows: Workflows) -> None:
    wf = Workflow("del").step("a", "t").step("b", "t", after="a")
    async with running(client, _router()), releasing(flows):
        run = await flows.submit(wf)
        done = await flows.wait(run.id, timeout=10)
    assert done.state is RunState.COMPLETE
    kv = client.key_value(RUNS_BUCKET)
    assert {entry.key for entry in await kv.entries()} >= {f"run.{run.id}", f"def.{run.id}", f"started.{run.id}.a"}

    await flows.delete(run.id)

    assert [entry.key for entry in await kv.entries()] == []
    for status in done.steps.values():
        with pytest.raises(asyncjobs.TaskNotFound):
            await client.get_task(status.task_id)
    with pytest.raises(WorkflowNotFound):
        await flows.get(run.id)
    with pytest.raises(WorkflowNotFound):
        await flows.delete(run.id)


async def test_delete_refuses_a_running_run(flows: Workflows) -> None:
    run = await flows.submit(Workflow("busy").step("a", "t"))
    with pytest.raises(RunStateError, match="cancel it first"):
        await flows.delete(run.id)
    assert (await flows.get(run.id)).state is RunState.RUNNING


async def test_events_follow_a_run_from_submit_to_end(client: asyncjobs.Client, flows: Workflows) -> None:
    seen: list[tuple[str, RunState]] = []
    async with flows.events() as events, running(client, _router()), releasing(flows):
        run = await flows.submit(Workflow("ev").step("a", "t"))
        async with asyncio.timeout(10):
            async for event in events:
                seen.append((event.run_id, event.state))
                if event.state is not RunState.RUNNING:
                    break
    assert seen == [(run.id, RunState.RUNNING), (run.id, RunState.COMPLETE)]


async def test_events_of_one_run_only(client: asyncjobs.Client, flows: Workflows) -> None:
    other = await flows.submit(Workflow("other").step("a", "t"))
    async with flows.events("mine") as events:
        await flows.cancel(other.id)
        run = await flows.submit(Workflow("ev").step("a", "t"), run_id="mine")
        await flows.cancel(run.id)
        async with asyncio.timeout(10):
            states = [(await anext(events)).state, (await anext(events)).state]
    assert states == [RunState.RUNNING, RunState.CANCELLED]


async def test_a_workers_reconciler_leaves_blocked_steps_alone(make_client: ClientFactory) -> None:
    # Staged steps have no work item on purpose; a reconciler repairing "lost" items must not queue them.
    client = await make_client(reconcile_interval=0.1, reconcile_grace=0.1)
    flows = Workflows(client)
    gate = asyncio.Event()
    router = _router()

    @router.handler("slow")
    async def slow(task: asyncjobs.Task) -> str:
        await gate.wait()
        return "done"

    run = await flows.submit(Workflow("rec").step("a", "slow").step("b", "t", after="a"))
    child = run.steps["b"].task_id
    passes = METRICS.reconciler_pass_total.labels(client.queue.name)
    async with running(client, router):
        before = passes.value
        await eventually(lambda: passes.value >= before + 3, timeout=10, message="three reconciler passes")
        assert not await client.staged.queued(child)
        stored = await client.get_task(child)
        assert (stored.state, stored.queue) == (asyncjobs.TaskState.BLOCKED, "")
        gate.set()
        async with releasing(flows):
            done = await flows.wait(run.id, timeout=10)
    assert done.state is RunState.COMPLETE
    assert (await client.get_task(child)).queue == client.queue.name


async def test_the_release_loop_returns_when_its_client_closes(make_client: ClientFactory) -> None:
    client = await make_client()
    watcher = await make_client()
    releasing_task = asyncio.create_task(Workflows(client).run())

    async def pulling() -> bool:
        reply = await watcher.nc.request(f"$JS.API.CONSUMER.INFO.CHORIA_AJ_EVENTS.{FEED_NAME}", b"", timeout=5)
        return bool(orjson.loads(reply.data).get("num_waiting"))

    await eventually(pulling, timeout=10, message="the releaser to wait for events")
    await client.close()
    async with asyncio.timeout(10):
        await releasing_task  # returns, without an error
    assert releasing_task.exception() is None
