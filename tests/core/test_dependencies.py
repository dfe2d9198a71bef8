"""Task dependencies as docs/protocol.md, Dependencies resolves them (blocked, released, unreachable)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncjobs
from asyncjobs import TaskState
from tests.core.conftest import ClientFactory, running, wait_state


async def test_child_runs_after_parents_with_their_results(make_client: ClientFactory) -> None:
    client = await make_client(queue="DEP")
    router = asyncjobs.Router()
    order: list[str] = []
    child_results: dict[str, Any] = {}

    @router.handler("step")
    async def step(task: asyncjobs.Task) -> Any:
        order.append(task.payload_json())
        await asyncio.sleep(0.05)
        return {"from": task.payload_json()}

    @router.handler("report")
    async def report(task: asyncjobs.Task) -> str:
        order.append("report")
        child_results.update({k: v.payload for k, v in task.dependency_results.items()})
        return "built"

    first = asyncjobs.Task("step", "a")
    second = asyncjobs.Task("step", "b")
    child = asyncjobs.Task("report", dependencies=[first.id, second.id, first.id], load_dependencies=True)
    assert child.state == TaskState.BLOCKED
    assert child.dependencies == [first.id, second.id]
    await client.enqueue(child)
    await client.enqueue(first)
    await client.enqueue(second)
    async with running(client, router):
        done = await wait_state(client, child.id, TaskState.COMPLETED, timeout=20)
    assert order[-1] == "report"
    assert child_results == {first.id: {"from": "a"}, second.id: {"from": "b"}}
    assert set(done.dependency_results) == {first.id, second.id}
    assert done.tries == 1


async def test_missing_parent_makes_child_unreachable(make_client: ClientFactory) -> None:
    client = await make_client(queue="DEPM")
    router = asyncjobs.Router()

    @router.handler("")
    async def anything(task: asyncjobs.Task) -> None:
        return None

    parent_id = "3GqtCeloEv8f4pnECKClET4Svy0"
    child = await client.enqueue(asyncjobs.Task("child", dependencies=[parent_id]))
    async with running(client, router):
        done = await wait_state(client, child.id, TaskState.UNREACHABLE)
    assert done.last_err == f"task dependencies failed: task not found: {parent_id}"
    assert done.tries == 0


async def test_failed_parent_propagates_down_a_chain(make_client: ClientFactory) -> None:
    client = await make_client(queue="DEPF")
    router = asyncjobs.Router()

    @router.handler("fail")
    async def fail(task: asyncjobs.Task) -> None:
        raise asyncjobs.TerminateTask("cannot")

    @router.handler("ok")
    async def ok(task: asyncjobs.Task) -> None:
        return None

    parent = asyncjobs.Task("fail")
    child = asyncjobs.Task("ok", dependencies=[parent.id])
    grandchild = asyncjobs.Task("ok", dependencies=[child.id])
    await client.enqueue_many([grandchild, child, parent])
    async with running(client, router):
        await wait_state(client, parent.id, TaskState.TERMINATED)
        unreachable_child = await wait_state(client, child.id, TaskState.UNREACHABLE, timeout=20)
        unreachable_grandchild = await wait_state(client, grandchild.id, TaskState.UNREACHABLE, timeout=20)
    assert unreachable_child.last_err == f"task dependencies failed: task {parent.id} is terminated"
    assert unreachable_grandchild.last_err == f"task dependencies failed: task {child.id} is unreachable"


async def test_raising_dependencies_failed_makes_task_unreachable(make_client: ClientFactory) -> None:
    client = await make_client(queue="DEPR")
    router = asyncjobs.Router()

    @router.handler("x")
    async def handle(task: asyncjobs.Task) -> None:
        raise asyncjobs.DependenciesFailed("upstream data missing")

    task = await client.enqueue(asyncjobs.Task("x"))
    async with running(client, router):
        done = await wait_state(client, task.id, TaskState.UNREACHABLE)
    assert done.last_err == "upstream data missing"


async def test_retrying_an_unreachable_child_checks_its_parents_again(make_client: ClientFactory) -> None:
    client = await make_client(queue="DEPRT")
    router = asyncjobs.Router()
    parent_ok = False

    @router.handler("parent")
    async def parent_handler(task: asyncjobs.Task) -> str:
        if not parent_ok:
            raise asyncjobs.TerminateTask("not yet")
        return "parent done"

    @router.handler("child")
    async def child_handler(task: asyncjobs.Task) -> Any:
        return {k: v.payload for k, v in task.dependency_results.items()}

    parent = asyncjobs.Task("parent")
    child = asyncjobs.Task("child", dependencies=[parent.id], load_dependencies=True)
    await client.enqueue_many([parent, child])
    async with running(client, router):
        await wait_state(client, child.id, TaskState.UNREACHABLE, timeout=20)
        parent_ok = True
        # The parent first: a child retried while its parent is still terminated is unreachable again.
        await client.retry_task(parent.id)
        retried_child = await client.retry_task(child.id)
        assert retried_child.state == TaskState.BLOCKED and retried_child.tries == 0
        await wait_state(client, parent.id, TaskState.COMPLETED)
        done = await wait_state(client, child.id, TaskState.COMPLETED, timeout=20)
    assert done.result is not None and done.result.payload == {parent.id: "parent done"}
