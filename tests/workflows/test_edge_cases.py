"""Edge cases of the release loop: a child too large to store, a step failing after its run was cancelled, and a
failure whose event was lost."""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson

import asyncjobs
from asyncjobs import TaskState
from asyncjobs.testing import eventually
from asyncjobs_workflows import RunState, Workflow, Workflows
from tests.core.conftest import wait_state
from tests.workflows.conftest import releasing, running

WAIT_S = 20.0


async def test_a_child_too_large_to_store_fails_instead_of_retrying_forever(
    client: asyncjobs.Client, flows: Workflows
) -> None:
    router = asyncjobs.Router()

    @router.handler("big")
    async def big(task: asyncjobs.Task) -> str:
        return "x" * 600_000  # two of these are more than the server's 1 MB max_payload

    @router.handler("t")
    async def small(task: asyncjobs.Task) -> str:
        return "ok"

    wf = (
        Workflow("too-large")
        .step("a", "big")
        .step("b", "big")
        .step("join", "t", after=["a", "b"], load_dependencies=True)
        .step("after", "t", after="join")
        .step("cleanup", "t", after="join", trigger="all_done")
    )
    async with running(client, router), releasing(flows):
        run = await flows.submit(wf)
        done = await flows.wait(run.id, timeout=WAIT_S)
    assert done.state is RunState.FAILED
    join = done.steps["join"]
    assert join.state == TaskState.TERMINATED
    assert join.last_error.startswith("cannot be released: task ") and "max_payload" in join.last_error
    assert done.steps["after"].state == TaskState.UNREACHABLE
    assert done.steps["cleanup"].state == TaskState.COMPLETED


async def test_a_step_failing_after_its_run_was_cancelled_is_not_tried_again(
    client: asyncjobs.Client, flows: Workflows
) -> None:
    calls: Counter[str] = Counter()
    started, fail = asyncio.Event(), asyncio.Event()
    router = asyncjobs.Router()

    @router.handler("flaky")
    async def flaky(task: asyncjobs.Task) -> str:
        calls[task.id] += 1
        started.set()
        await fail.wait()
        raise RuntimeError("lost the connection to the warehouse")

    async with running(client, router), releasing(flows):
        run = await flows.submit(Workflow("cancel-retry").step("load", "flaky", max_tries=5))
        async with asyncio.timeout(WAIT_S):
            await started.wait()
        cancelled = await flows.cancel(run.id)
        assert cancelled.state is RunState.CANCELLED
        assert cancelled.steps["load"].state == TaskState.ACTIVE
        fail.set()

        async def stopped() -> bool:
            status = (await flows.get(run.id)).steps["load"]
            return status.cancelled

        await eventually(stopped, timeout=WAIT_S, message="the failed step to be stopped")
        task = await client.get_task(run.steps["load"].task_id)
    assert calls == {task.id: 1}
    assert (task.state, task.last_err) == (TaskState.TERMINATED, "workflow run cancelled")
    assert not await client.staged.queued(task.id)


async def test_the_sweep_fails_a_child_at_once_when_its_failed_parents_event_was_lost(
    client: asyncjobs.Client, flows: Workflows
) -> None:
    gate = asyncio.Event()
    router = asyncjobs.Router()

    @router.handler("boom")
    async def boom(task: asyncjobs.Task) -> None:
        raise asyncjobs.TerminateTask("bad input")

    @router.handler("slow")
    async def slow(task: asyncjobs.Task) -> str:
        await gate.wait()
        return "ok"

    wf = Workflow("lost-failure").step("bad", "boom").step("slow", "slow").step("child", "slow", after=["slow", "bad"])
    run = await flows.submit(wf)
    async with running(client, router):
        await wait_state(client, run.steps["bad"].task_id, TaskState.TERMINATED)
        reply = await client.nc.request("$JS.API.STREAM.PURGE.CHORIA_AJ_EVENTS", b"", timeout=5)
        assert orjson.loads(reply.data).get("success") is True

        await flows.sweep()

        child = await client.get_task(run.steps["child"].task_id)
        assert child.state == TaskState.UNREACHABLE
        assert child.last_err == f"task dependencies failed: task {run.steps['bad'].task_id} is terminated"
        assert (await client.get_task(run.steps["slow"].task_id)).state == TaskState.ACTIVE
        gate.set()
        await wait_state(client, run.steps["slow"].task_id, TaskState.COMPLETED)
    await flows.sweep()
    assert (await flows.get(run.id)).state is RunState.FAILED
