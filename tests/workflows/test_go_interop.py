"""Workflow steps processed by upstream's Go worker, released by ours; Go's ``ajc`` reading our stored steps.

Go's side is the Go peer (``ajgo work`` and ``ajc``, see tests/scheduler/go_peer.py); every test skips when its
binaries cannot be found (the ``go_peer`` fixture). Facts about ``ajgo work`` these tests rely on (its ``-h`` and
the Go peer's README): it handles every task type unless given ``--handle``; each handler call prints a JSON line
``{"event": "handled", "id", "tries", "dependency_results", "outcome", ...}`` and returns
``{"by": "go", "id": <task id>, "tries": <tries>}``; ``--fail-first K`` makes it return an error while the task's
tries are at most K, and ``--terminate`` makes that error upstream's ``ErrTerminateTask`` (with K = 0: at once).

Go's worker bounces a task stored ``blocked`` (a NAK with a 5 s delay) until its dependencies complete, and never
looks at a task's state before running it otherwise (a ``terminated`` task whose item it receives runs). Our
releaser stores a child ``new`` before queueing it, and a cancel withdraws queued items, which is what these
tests show from Go's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import orjson
import pytest

import asyncjobs
from asyncjobs import TaskState
from asyncjobs.constants import BLOCKED_NAK_DELAY_NS
from asyncjobs.testing import eventually
from asyncjobs.wiretime import NS_PER_SECOND
from asyncjobs_workflows import RunState, Workflow, WorkflowRun, Workflows
from tests.scheduler.go_peer import ajc, ajgo
from tests.workflows.conftest import ClientFactory, releasing, running

QUEUE: Final = "GOWF"
STEP_TYPE: Final = "go:step"
RUN_TIMEOUT_S: Final = 20.0
STOP_TIMEOUT_S: Final = 10.0
BLOCKED_NAK_DELAY_S: Final = BLOCKED_NAK_DELAY_NS / NS_PER_SECOND
"""How long Go's worker (and ours) puts off a task it received while still ``blocked``."""


class GoWorker:
    """``ajgo work`` in a subprocess until stopped; the calls of its handler as they come."""

    def __init__(self, go_peer: Path, url: str, *flags: str) -> None:
        self.args = [str(go_peer / "ajgo"), "work", "--url", url, "--queue", QUEUE, "--bind", "--count", "0"]
        self.args += ["--timeout", "60s", *flags]
        self.events: list[dict[str, Any]] = []
        self.stderr = b""
        self.proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []

    async def start(self) -> GoWorker:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [asyncio.create_task(self._read(self.proc.stdout)),
                         asyncio.create_task(self._drain(self.proc.stderr))]  # fmt: skip
        await eventually(lambda: self.ready, message="ajgo work ready")
        return self

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            if line.strip():
                self.events.append(orjson.loads(line))

    async def _drain(self, stream: asyncio.StreamReader) -> None:
        self.stderr = await stream.read()

    @property
    def ready(self) -> bool:
        return any(event.get("event") == "ready" for event in self.events)

    @property
    def handled(self) -> list[dict[str, Any]]:
        """One entry per handler call, in order."""
        return [event for event in self.events if event.get("event") == "handled"]

    def calls(self, task_id: str) -> list[dict[str, Any]]:
        return [event for event in self.handled if event["id"] == task_id]

    async def wait_handled(self, count: int) -> None:
        """Wait until ``count`` handler calls were read (a call's line may come in after its task's state)."""
        await eventually(lambda: len(self.handled) >= count, message=f"{count} handler calls from ajgo work")

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        for reader in self._readers:
            with contextlib.suppress(asyncio.CancelledError):
                await reader


@pytest.fixture
async def go_workers() -> AsyncIterator[list[GoWorker]]:
    started: list[GoWorker] = []
    yield started
    for worker in started:
        await worker.stop(signal.SIGKILL)


async def start_go(go_workers: list[GoWorker], go_peer: Path, url: str, *flags: str) -> GoWorker:
    worker = GoWorker(go_peer, url, *flags)
    go_workers.append(worker)
    return await worker.start()


def chain(name: str, length: int) -> Workflow:
    """``s0`` to ``s<length-1>``, each after the one before and given its result."""
    workflow = Workflow(name)
    for i in range(length):
        workflow.step(f"s{i}", STEP_TYPE, {"n": i}, after=f"s{i - 1}" if i else (), load_dependencies=bool(i))
    return workflow


def diamond(name: str) -> Workflow:
    workflow = Workflow(name).step("a", STEP_TYPE).step("b", STEP_TYPE, after="a").step("c", STEP_TYPE, after="a")
    return workflow.step("d", STEP_TYPE, after=["b", "c"], load_dependencies=True)


def go_result(task_id: str, tries: int = 1) -> dict[str, object]:
    """What ``ajgo work`` returns by default."""
    return {"by": "go", "id": task_id, "tries": tries}


def states(run: WorkflowRun) -> dict[str, object]:
    return {name: status.state for name, status in run.steps.items()}


@pytest.mark.timeout(60)
async def test_go_worker_runs_the_steps_our_releaser_releases(
    go_peer: Path, nats_url: str, make_client: ClientFactory, go_workers: list[GoWorker]
) -> None:
    client = await make_client(queue=QUEUE)
    flows = Workflows(client)
    go = await start_go(go_workers, go_peer, nats_url)

    async with releasing(flows):
        started = time.monotonic()
        line = await flows.submit(chain("chain", 5))
        line_done = await flows.wait(line.id, timeout=RUN_TIMEOUT_S)
        line_took = time.monotonic() - started
        shape = await flows.submit(diamond("diamond"))
        shape_done = await flows.wait(shape.id, timeout=RUN_TIMEOUT_S)

    # Go's worker never bounced a released child: one bounce alone would have cost its 5 s NAK delay.
    assert line_took < BLOCKED_NAK_DELAY_S, line_took
    await go.wait_handled(5 + 4)
    for run in (line_done, shape_done):
        assert run.state is RunState.COMPLETE, run
        for name, status in run.steps.items():
            assert status.state == TaskState.COMPLETED, name
            assert status.result == go_result(status.task_id), name
            assert [call["tries"] for call in go.calls(status.task_id)] == [1], name  # Go ran each step once
    assert len(go.handled) == 5 + 4

    # Children with load_dependencies got their parents' results (as Go stored them) from our releaser: Go's
    # handler received them, and they are stored with the child.
    family = [(line_done, f"s{i}", [f"s{i - 1}"]) for i in range(1, 5)] + [(shape_done, "d", ["b", "c"])]
    for run, child, parents in family:
        parent_tasks = [await client.get_task(run.steps[p].task_id) for p in parents]
        expected = {task.id: task.result for task in parent_tasks}
        stored = await client.get_task(run.steps[child].task_id)
        assert stored.load_dependencies and stored.dependency_results == expected
        # Go ran it with its dependencies in place and without checking them: it was stored new when released.
        assert stored.dependencies == [task.id for task in parent_tasks]
        (call,) = go.calls(stored.id)
        assert call["dependencies"] == stored.dependencies
        assert {pid: got["payload"] for pid, got in call["dependency_results"].items()} == {
            task.id: go_result(task.id) for task in parent_tasks
        }
    # A step without load_dependencies got none.
    assert not go.calls(shape_done.steps["b"].task_id)[0].get("dependency_results")


@pytest.mark.timeout(60)
async def test_a_step_go_terminates_makes_its_descendants_unreachable(
    go_peer: Path, nats_url: str, make_client: ClientFactory, go_workers: list[GoWorker]
) -> None:
    client = await make_client(queue=QUEUE)
    flows = Workflows(client)
    go = await start_go(go_workers, go_peer, nats_url, "--terminate", "--fail-first", "0")
    workflow = Workflow("doomed").step("a", STEP_TYPE).step("b", STEP_TYPE, after="a").step("c", STEP_TYPE, after="b")

    async with releasing(flows):
        run = await flows.submit(workflow)
        done = await flows.wait(run.id, timeout=RUN_TIMEOUT_S)
    await go.wait_handled(1)

    assert done.state is RunState.FAILED, done
    assert states(done) == {"a": TaskState.TERMINATED, "b": TaskState.UNREACHABLE, "c": TaskState.UNREACHABLE}
    assert done.steps["a"].last_error.endswith("terminate task") and not done.steps["a"].cancelled
    ids = {name: status.task_id for name, status in done.steps.items()}
    assert done.steps["b"].last_error == f"task dependencies failed: task {ids['a']} is terminated"
    assert done.steps["c"].last_error == f"task dependencies failed: task {ids['b']} is unreachable"
    assert [call["id"] for call in go.handled] == [ids["a"]]


@pytest.mark.timeout(60)
async def test_steps_go_fails_and_retries_decide_each_branch(
    go_peer: Path, nats_url: str, make_client: ClientFactory, go_workers: list[GoWorker]
) -> None:
    client = await make_client(queue=QUEUE)
    flows = Workflows(client)
    # Every task fails its first try: a step allowed one try ends expired (Go expires it on its next delivery),
    # the others complete on their second.
    go = await start_go(go_workers, go_peer, nats_url, "--fail-first", "1", "--retry-fast")
    workflow = Workflow("mixed").step("a", STEP_TYPE, max_tries=3)
    workflow.step("b", STEP_TYPE, after="a", max_tries=1).step("c", STEP_TYPE, after="a", max_tries=3)
    workflow.step("d", STEP_TYPE, after=["b", "c"]).step("e", STEP_TYPE, after="c", max_tries=3)
    workflow.step("f", STEP_TYPE, after="d")
    workflow.step("cleanup", STEP_TYPE, after="b", trigger="all_done", max_tries=3)

    async with releasing(flows):
        run = await flows.submit(workflow)
        done = await flows.wait(run.id, timeout=RUN_TIMEOUT_S)

    await go.wait_handled(2 + 1 + 2 + 2 + 2)  # a, b, c, e and cleanup: 2 tries each but b

    ids = {name: status.task_id for name, status in done.steps.items()}
    assert done.state is RunState.FAILED, done
    assert states(done) == {
        "a": TaskState.COMPLETED, "b": TaskState.EXPIRED, "c": TaskState.COMPLETED, "d": TaskState.UNREACHABLE,
        "e": TaskState.COMPLETED, "f": TaskState.UNREACHABLE, "cleanup": TaskState.COMPLETED,
    }  # fmt: skip
    assert done.steps["d"].last_error == f"task dependencies failed: task {ids['b']} is expired"
    assert done.steps["f"].last_error == f"task dependencies failed: task {ids['d']} is unreachable"
    for name in ("a", "c", "e", "cleanup"):
        assert done.steps[name].result == go_result(ids[name], tries=2)
        assert [call["outcome"] for call in go.calls(ids[name])] == ["fail", "ok"], name
    assert [call["outcome"] for call in go.calls(ids["b"])] == ["fail"]
    assert not go.calls(ids["d"]) and not go.calls(ids["f"])


@pytest.mark.timeout(60)
async def test_ajc_shows_a_blocked_steps_dependencies(go_peer: Path, nats_url: str, make_client: ClientFactory,
                                                      tmp_path: Path) -> None:  # fmt: skip
    client = await make_client(queue=QUEUE)
    run = await Workflows(client).submit(diamond("viewed"))  # nothing works the queue: d stays blocked
    ids = {name: status.task_id for name, status in run.steps.items()}

    viewed = orjson.loads(await ajc(go_peer, nats_url, tmp_path, "tasks", "view", "--json", ids["d"]))
    assert (viewed["id"], viewed["type"], viewed["state"]) == (ids["d"], STEP_TYPE, "blocked")
    assert viewed["dependencies"] == [ids["b"], ids["c"]]
    assert viewed["load_dependencies"] is True
    text = await ajc(go_peer, nats_url, tmp_path, "tasks", "view", ids["d"])
    assert "Status: blocked" in text
    assert f"Dependencies: {ids['b']}, {ids['c']}" in text
    # Upstream's library loads it too.
    (loaded,) = await ajgo(go_peer, nats_url, "get", "--id", ids["d"])
    assert (loaded["id"], loaded["state"]) == (ids["d"], "blocked")
    assert (loaded["task"]["dependencies"], loaded["task"]["load_dependencies"]) == ([ids["b"], ids["c"]], True)
    # The root was queued: Go sees it new, on the queue.
    (root,) = await ajgo(go_peer, nats_url, "get", "--id", ids["a"])
    assert (root["state"], root["queue"], root["task"].get("dependencies")) == ("new", QUEUE, None)


@pytest.mark.timeout(60)
async def test_a_cancelled_step_never_reaches_a_go_worker_started_after(
    go_peer: Path, nats_url: str, make_client: ClientFactory, go_workers: list[GoWorker]
) -> None:
    client = await make_client(queue=QUEUE)
    flows = Workflows(client)
    workflow = Workflow("cancelled").step("a", STEP_TYPE).step("b", STEP_TYPE, after="a")
    run = await flows.submit(workflow)
    ids = {name: status.task_id for name, status in run.steps.items()}
    assert await client.staged.queued(ids["a"])  # Go would pick it up now

    cancelled = await flows.cancel(run.id)
    assert not await client.staged.queued(ids["a"])
    # The control: a task stored terminated while its item stays queued. Go's worker runs it all the same, so only
    # the withdrawn item keeps Go from running a cancelled step.
    control = await client.enqueue(asyncjobs.Task("go:control"))
    control = await client.get_task(control.id)
    control.state, control.last_err = TaskState.TERMINATED, "stopped without withdrawing its item"
    await client.staged.update(control)
    # Queued after where a's item was: Go receives items in order, so it would have had a's before this one's.
    sentinel = await client.enqueue(asyncjobs.Task("go:sentinel"))
    go = await start_go(go_workers, go_peer, nats_url)
    await eventually(lambda: go.calls(sentinel.id) and go.calls(control.id), timeout=RUN_TIMEOUT_S)
    await go.stop()

    assert sorted(call["id"] for call in go.handled) == sorted([control.id, sentinel.id])
    assert cancelled.state is RunState.CANCELLED
    after = await flows.get(run.id)
    assert after.state is RunState.CANCELLED
    for name in ("a", "b"):
        status = after.steps[name]
        assert (status.state, status.cancelled, status.tries) == (TaskState.TERMINATED, True, 0), name
        assert status.last_error == "workflow run cancelled"


@pytest.mark.timeout(60)
async def test_go_and_python_workers_share_the_steps_of_a_run(
    go_peer: Path, nats_url: str, make_client: ClientFactory, go_workers: list[GoWorker]
) -> None:
    client = await make_client(queue=QUEUE)
    flows = Workflows(client)
    ours: list[str] = []
    router = asyncjobs.Router()

    @router.handler(STEP_TYPE)
    async def step(task: asyncjobs.Task) -> dict[str, object]:
        ours.append(task.id)
        return {"by": "python", "id": task.id}

    go = await start_go(go_workers, go_peer, nats_url)
    workflow = Workflow("shared").step("start", STEP_TYPE)
    for i in range(30):
        workflow.step(f"m{i:02d}", STEP_TYPE, after="start")
    workflow.step("join", STEP_TYPE, after=[f"m{i:02d}" for i in range(30)], load_dependencies=True)

    async with releasing(flows), running(client, router):
        run = await flows.submit(workflow)
        done = await flows.wait(run.id, timeout=RUN_TIMEOUT_S)
    await eventually(lambda: len(go.handled) + len(ours) >= 32, message="every call was read")

    assert done.state is RunState.COMPLETE, done
    calls = [call["id"] for call in go.handled] + ours
    assert sorted(calls) == sorted(status.task_id for status in done.steps.values())  # each step once
    # Each step's result says who ran it; the join got all 30 of them, from either side.
    by = {status.task_id: status.result["by"] for status in done.steps.values()}  # type: ignore[index]
    assert {task_id for task_id, who in by.items() if who == "go"} == {call["id"] for call in go.handled}
    join = await client.get_task(done.steps["join"].task_id)
    assert {pid: result.payload["by"] for pid, result in join.dependency_results.items()} == {
        done.steps[f"m{i:02d}"].task_id: by[done.steps[f"m{i:02d}"].task_id] for i in range(30)
    }
