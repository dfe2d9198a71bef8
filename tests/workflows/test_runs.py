"""Workflow runs end to end on a real nats-server: submit, release, results, reading runs, waiting, events, metrics.

Workers here are plain ``client.run(router)`` workers that know nothing about workflows; a releaser
(``Workflows.run()``) moves each run on as its steps end.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from nats.aio.msg import Msg

import asyncjobs
from asyncjobs import TaskState
from asyncjobs.metrics import METRICS
from asyncjobs.testing import eventually
from asyncjobs_workflows import (
    DuplicateRun,
    RunState,
    Workflow,
    WorkflowError,
    WorkflowNotFound,
    WorkflowRun,
    Workflows,
)
from asyncjobs_workflows.runevents import RunEvent, decode_run_event
from tests.core.conftest import wait_state
from tests.workflows.conftest import ClientFactory, releasing, running

WAIT_S = 20.0
"""Seconds a run is given to end; they take well under a second."""


class Calls:
    """The task ids handlers were called with, in call order."""

    def __init__(self) -> None:
        self.order: list[str] = []

    def __call__(self, task: asyncjobs.Task) -> None:
        self.order.append(task.id)

    def count(self, task_id: str) -> int:
        return self.order.count(task_id)


def tid(run: WorkflowRun | str, step: str) -> str:
    """The task id of a run's step, spelled out as the wire format has it."""
    return f"wf:{run if isinstance(run, str) else run.id}:{step}"


def echo_router(calls: Calls) -> asyncjobs.Router:
    """Handles ``step`` tasks: records the call and returns the payload."""
    router = asyncjobs.Router()

    @router.handler("step")
    async def step(task: asyncjobs.Task) -> Any:
        calls(task)
        return task.payload_json()

    return router


def diamond(name: str) -> Workflow:
    return (
        Workflow(name)
        .step("extract", "step", "extract")
        .step("left", "step", "left", after="extract")
        .step("right", "step", "right", after="extract")
        .step("report", "step", "report", after=["left", "right"])
    )


def chain(name: str, length: int) -> Workflow:
    wf = Workflow(name)
    for n in range(1, length + 1):
        wf.step(f"s{n:02d}", "step", n, after=[f"s{n - 1:02d}"] if n > 1 else ())
    return wf


# -- shapes ---------------------------------------------------------------------------------------------------------


async def test_chain_of_20_runs_each_step_after_its_parent(client: asyncjobs.Client, flows: Workflows) -> None:
    calls = Calls()
    wf = chain("chain20", 20)
    run = await flows.submit(wf)
    async with running(client, echo_router(calls)), releasing(flows):
        done = await flows.wait(run.id, timeout=WAIT_S)
    assert done.state is RunState.COMPLETE and done.done
    assert calls.order == [tid(run, f"s{n:02d}") for n in range(1, 21)]
    assert all(s.state == TaskState.COMPLETED and s.tries == 1 for s in done.steps.values())
    assert done.results() == {f"s{n:02d}": n for n in range(1, 21)}
    assert done.finished is not None and done.finished >= done.created

    async def timed() -> WorkflowRun:
        # Start times come from the steps' active events, which the releaser may still be writing.
        again = await flows.get(run.id)
        assert all(s.started is not None for s in again.steps.values())
        return again

    timed_run = await eventually(timed, message="every step's start time")
    for n in range(1, 21):
        status = timed_run.steps[f"s{n:02d}"]
        assert status.started is not None and status.finished is not None
        assert status.started <= status.finished
        if n > 1:
            parent_finished = timed_run.steps[f"s{n - 1:02d}"].finished
            assert parent_finished is not None and parent_finished <= status.finished


async def test_diamond_run_by_a_worker_that_knows_nothing_of_workflows(
    make_client: ClientFactory, client: asyncjobs.Client, flows: Workflows
) -> None:
    worker = await make_client()  # another connection, as a separate worker process would have
    calls = Calls()
    run = await flows.submit(diamond("diamond"))
    async with running(worker, echo_router(calls)), releasing(flows):
        done = await flows.wait(run.id, timeout=WAIT_S)
    assert done.state is RunState.COMPLETE
    assert calls.order[0] == tid(run, "extract")
    assert sorted(calls.order[1:3]) == [tid(run, "left"), tid(run, "right")]
    assert calls.order[3:] == [tid(run, "report")]
    assert done.results() == {"extract": "extract", "left": "left", "right": "right", "report": "report"}


async def test_fan_out_100_then_fan_in_with_every_parent_result(client: asyncjobs.Client, flows: Workflows) -> None:
    wf = Workflow("fan").step("split", "split")
    parts = [f"p{n:03d}" for n in range(100)]
    for n, name in enumerate(parts):
        wf.step(name, "part", {"n": n}, after="split")
    wf.step("join", "join", after=parts, load_dependencies=True)
    calls = Calls()
    received: dict[str, Any] = {}
    router = asyncjobs.Router()

    @router.handler("split")
    async def split(task: asyncjobs.Task) -> None:
        calls(task)

    @router.handler("part")
    async def part(task: asyncjobs.Task) -> dict[str, int]:
        calls(task)
        return {"square": task.payload_json()["n"] ** 2}

    @router.handler("join")
    async def join(task: asyncjobs.Task) -> int:
        calls(task)
        received.update({parent: result.payload for parent, result in task.dependency_results.items()})
        return len(task.dependency_results)

    run = await flows.submit(wf)
    async with running(client, router), releasing(flows):
        done = await flows.wait(run.id, timeout=WAIT_S)
    assert done.state is RunState.COMPLETE
    assert calls.order[0] == tid(run, "split") and calls.order[-1] == tid(run, "join")
    assert sorted(calls.order[1:-1]) == [tid(run, name) for name in parts]
    assert received == {tid(run, f"p{n:03d}"): {"square": n * n} for n in range(100)}
    assert done.steps["join"].result == 100
    stored = await client.get_task(tid(run, "join"))
    assert stored.dependencies == [tid(run, name) for name in parts]


async def test_results_pass_down_a_chain(client: asyncjobs.Client, flows: Workflows) -> None:
    wf = (
        Workflow("sums")
        .step("one", "add", 1)
        .step("two", "add", 2, after="one", load_dependencies=True)
        .step("three", "add", 3, after="two", load_dependencies=True)
    )
    seen: dict[str, dict[str, Any]] = {}
    router = asyncjobs.Router()

    @router.handler("add")
    async def add(task: asyncjobs.Task) -> int:
        seen[task.id] = {parent: result.payload for parent, result in task.dependency_results.items()}
        return int(task.payload_json()) + sum(int(result.payload) for result in task.dependency_results.values())

    run = await flows.submit(wf)
    async with running(client, router), releasing(flows):
        done = await flows.wait(run.id, timeout=WAIT_S)
    assert done.results() == {"one": 1, "two": 3, "three": 6}
    assert seen == {tid(run, "one"): {}, tid(run, "two"): {tid(run, "one"): 1}, tid(run, "three"): {tid(run, "two"): 3}}


# -- what submit stores -----------------------------------------------------------------------------------------------


async def test_submit_stores_every_step_before_anything_is_released(client: asyncjobs.Client, flows: Workflows) -> None:
    wf = diamond("stored")
    run = await flows.submit(wf)  # no worker and no releaser anywhere
    assert run.state is RunState.RUNNING and not run.done
    assert run.name == "stored" and run.queue == client.queue.name and run.generation == 0
    assert run.workflow == wf
    expected = {"extract": TaskState.NEW, "left": TaskState.BLOCKED, "right": TaskState.BLOCKED}
    expected["report"] = TaskState.BLOCKED
    assert {name: s.state for name, s in run.steps.items()} == expected
    assert {name: s.task_id for name, s in run.steps.items()} == {name: tid(run, name) for name in wf.steps}
    for name, step in wf.steps.items():
        task = await client.get_task(tid(run, name))
        assert task.state == expected[name], name
        assert task.dependencies == [tid(run, parent) for parent in step.after]
        assert task.created == run.created
        # A waiting step is on no queue until released, so no reconciler can queue it early.
        assert task.queue == ("" if step.after else client.queue.name), name
        assert await client.staged.queued(task.id) is (not step.after), name
    again = await flows.get(run.id)
    assert {name: s.state for name, s in again.steps.items()} == expected
    assert all(s.started is None and s.finished is None and s.tries == 0 for s in again.steps.values())


async def test_step_payload_tries_and_deadline_reach_the_task(client: asyncjobs.Client, flows: Workflows) -> None:
    wf = (
        Workflow("options")
        .step("first", "first", {"n": 1}, max_tries=3)
        .step("second", "second", b"\x00raw", after="first", max_tries=2, deadline=timedelta(seconds=30))
    )
    seen: dict[str, asyncjobs.Task] = {}
    called_at: dict[str, datetime] = {}
    router = asyncjobs.Router()

    @router.handler("first")
    async def first(task: asyncjobs.Task) -> None:
        seen["first"] = task

    @router.handler("second")
    async def second(task: asyncjobs.Task) -> None:
        called_at["second"] = datetime.now(UTC)
        seen["second"] = task

    run = await flows.submit(wf)
    blocked = await client.get_task(tid(run, "second"))
    assert blocked.deadline_at is None  # a child's deadline counts from its release, which has not happened
    assert blocked.payload == b"\x00raw" and blocked.max_tries == 2
    async with running(client, router), releasing(flows):
        done = await flows.wait(run.id, timeout=WAIT_S)
    assert done.state is RunState.COMPLETE
    assert seen["first"].payload_json() == {"n": 1} and seen["first"].max_tries == 3
    assert seen["second"].payload == b"\x00raw" and seen["second"].max_tries == 2
    deadline = seen["second"].deadline
    first_finished = done.steps["first"].finished
    assert deadline is not None and first_finished is not None
    released = deadline - timedelta(seconds=30)
    # Released once its parent finished and before its handler ran.
    assert first_finished - timedelta(milliseconds=5) <= released <= called_at["second"]


async def test_root_step_deadline_counts_from_submit(client: asyncjobs.Client, flows: Workflows) -> None:
    wf = Workflow("rootdeadline").step("root", "step", deadline=30)
    before = datetime.now(UTC)
    run = await flows.submit(wf)
    after = datetime.now(UTC)
    task = await client.get_task(tid(run, "root"))
    assert task.deadline is not None
    assert before + timedelta(seconds=30) <= task.deadline <= after + timedelta(seconds=30)


async def test_submit_again_with_the_same_run_id_is_the_same_run(client: asyncjobs.Client, flows: Workflows) -> None:
    started = METRICS.workflow_runs_started.value("idem")
    first = await flows.submit(diamond("idem"), run_id="order-42")
    again = await flows.submit(diamond("idem"), run_id="order-42")
    assert again.id == first.id == "order-42"
    assert again.created == first.created
    assert {n: s.state for n, s in again.steps.items()} == {n: s.state for n, s in first.steps.items()}
    assert METRICS.workflow_runs_started.value("idem") == started + 1

    calls = Calls()
    async with running(client, echo_router(calls)), releasing(flows):
        done = await flows.wait("order-42", timeout=WAIT_S)
    assert done.state is RunState.COMPLETE
    assert sorted(calls.order) == sorted(tid("order-42", name) for name in done.steps)

    after = await flows.submit(diamond("idem"), run_id="order-42")
    assert after.state is RunState.COMPLETE
    assert all(s.state == TaskState.COMPLETED for s in after.steps.values())
    for name in after.steps:
        assert not await client.staged.queued(tid("order-42", name)), name
    assert [r.id for r in await flows.list(workflow="idem")] == ["order-42"]
    assert METRICS.workflow_runs_started.value("idem") == started + 1
    assert sorted(calls.order) == sorted(tid("order-42", name) for name in done.steps)  # nothing ran twice


async def test_a_submit_once_started_finishes_even_if_its_caller_is_cancelled(
    client: asyncjobs.Client, flows: Workflows
) -> None:
    submitting = asyncio.create_task(flows.submit(diamond("shielded"), run_id="shielded"))
    await asyncio.sleep(0)  # let it start
    submitting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await submitting

    async def submitted() -> bool:
        return await client.staged.queued(tid("shielded", "extract"))

    await eventually(submitted, message="the root to be queued")
    run = await flows.get("shielded")
    assert run.steps["report"].state == TaskState.BLOCKED
    async with running(client, echo_router(Calls())), releasing(flows):
        assert (await flows.wait(run.id, timeout=WAIT_S)).state is RunState.COMPLETE


async def test_same_run_id_with_another_definition_or_queue_is_refused(
    make_client: ClientFactory, flows: Workflows
) -> None:
    await flows.submit(diamond("dup"), run_id="dup-1")
    with pytest.raises(DuplicateRun, match="dup-1"):
        await flows.submit(chain("dup", 2), run_id="dup-1")
    with pytest.raises(DuplicateRun):
        await flows.submit(diamond("other-name"), run_id="dup-1")
    elsewhere = Workflows(await make_client(queue="ELSEWHERE"))
    with pytest.raises(DuplicateRun, match="queue 'DEFAULT'"):
        await elsewhere.submit(diamond("dup"), run_id="dup-1")
    assert isinstance(DuplicateRun("x"), WorkflowError)
    kept = await flows.get("dup-1")
    assert kept.name == "dup" and list(kept.steps) == ["extract", "left", "right", "report"]


# -- reading runs -----------------------------------------------------------------------------------------------------


async def test_get_and_list_with_filters(client: asyncjobs.Client, flows: Workflows) -> None:
    a1 = await flows.submit(diamond("list-a"))
    a2 = await flows.submit(diamond("list-a"))
    b1 = await flows.submit(chain("list-b", 2))
    await flows.cancel(a2.id)

    everything = await flows.list()
    assert [r.id for r in everything] == [a1.id, a2.id, b1.id]  # oldest first
    assert [r.id for r in await flows.list(workflow="list-a")] == [a1.id, a2.id]
    assert [r.id for r in await flows.list(state="cancelled")] == [a2.id]
    assert [r.id for r in await flows.list(state=RunState.RUNNING)] == [a1.id, b1.id]
    assert [r.id for r in await flows.list(workflow="list-b", state="running")] == [b1.id]
    assert await flows.list(workflow="list-c") == []
    assert await flows.list(state=RunState.COMPLETE) == []
    with pytest.raises(asyncjobs.ConfigurationError, match="not a run state"):
        await flows.list(state="finished")

    got = await flows.get(b1.id)
    assert got.id == b1.id and got.name == "list-b" and got.state is RunState.RUNNING
    assert {n: s.state for n, s in got.steps.items()} == {"s01": TaskState.NEW, "s02": TaskState.BLOCKED}
    listed = next(r for r in everything if r.id == a2.id)
    assert listed.state is RunState.CANCELLED and listed.finished is not None


async def test_wait_times_out_on_a_run_nobody_works_on(flows: Workflows) -> None:
    run = await flows.submit(diamond("stuck"))
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(asyncjobs.WaitTimeout, match=run.id) as caught:
        await flows.wait(run.id, timeout=0.3)
    assert isinstance(caught.value, TimeoutError)
    assert 0.25 <= loop.time() - began < 5
    assert (await flows.get(run.id)).state is RunState.RUNNING


async def test_wait_returns_at_once_for_a_run_that_ended(client: asyncjobs.Client, flows: Workflows) -> None:
    run = await flows.submit(chain("ended", 2))
    async with running(client, echo_router(Calls())), releasing(flows):
        await flows.wait(run.id, timeout=WAIT_S)
    again = await flows.wait(run.id, timeout=2)
    assert again.state is RunState.COMPLETE


@pytest.mark.parametrize("operation", ["get", "wait", "cancel", "retry"])
async def test_unknown_run_id_is_not_found(flows: Workflows, operation: str) -> None:
    with pytest.raises(WorkflowNotFound, match="no-such-run") as caught:
        await getattr(flows, operation)("no-such-run")
    assert isinstance(caught.value, asyncjobs.AsyncJobsError)
    assert isinstance(caught.value, LookupError)
    assert isinstance(caught.value, WorkflowError)


# -- the releaser -----------------------------------------------------------------------------------------------------


async def test_releaser_started_after_the_roots_ended_still_releases(
    client: asyncjobs.Client, flows: Workflows
) -> None:
    calls = Calls()
    run = await flows.submit(diamond("late-releaser"))
    async with running(client, echo_router(calls)):
        await wait_state(client, tid(run, "extract"), TaskState.COMPLETED)
        assert calls.order == [tid(run, "extract")]
        assert (await client.get_task(tid(run, "left"))).state == TaskState.BLOCKED
        async with releasing(flows):
            done = await flows.wait(run.id, timeout=WAIT_S)
    assert done.state is RunState.COMPLETE
    assert sorted(calls.order) == sorted(tid(run, name) for name in done.steps)


async def test_pictures_of_a_finished_run_show_step_states(client: asyncjobs.Client, flows: Workflows) -> None:
    wf = (
        Workflow("pictured")
        .step("fetch", "step", "fetch")
        .step("parse", "fail", after="fetch")
        .step("store", "step", after="parse")
    )
    router = echo_router(Calls())

    @router.handler("fail")
    async def fail(task: asyncjobs.Task) -> None:
        raise asyncjobs.TerminateTask("unparseable")

    run = await flows.submit(wf)
    async with running(client, router), releasing(flows):
        done = await flows.wait(run.id, timeout=WAIT_S)
    assert done.state is RunState.FAILED
    assert done.labels() == {"fetch": "complete", "parse": "failed", "store": "unreachable"}
    picture = done.mermaid()
    assert '    s0["fetch<br/>step<br/>complete"]:::complete\n' in picture
    assert '    s1["parse<br/>fail<br/>failed"]:::failed\n' in picture
    assert '    s2["store<br/>step<br/>unreachable"]:::unreachable\n' in picture
    graph = done.dot()
    assert '    "fetch" [label="fetch\\nstep\\ncomplete", fillcolor="#c8e6c9"];\n' in graph
    assert '    "parse" [label="parse\\nfail\\nfailed", fillcolor="#ffcdd2"];\n' in graph
    assert '    "store" [label="store\\nstep\\nunreachable", fillcolor="#e0e0e0"];\n' in graph
    assert "state='failed'" in repr(done)


async def test_run_state_events_on_core_nats(client: asyncjobs.Client, flows: Workflows) -> None:
    events: list[RunEvent] = []

    async def collect(msg: Msg) -> None:
        events.append(decode_run_event(msg.data))

    subscription = await client.nc.subscribe("CHORIA_AJ.WF.E.run_state.evented", cb=collect)
    await client.nc.flush()
    try:
        async with running(client, echo_router(Calls())), releasing(flows):
            await flows.submit(diamond("evented"), run_id="evented")
            await flows.wait("evented", timeout=WAIT_S)
        await eventually(lambda: any(e.state is RunState.COMPLETE for e in events), message="the complete event")
    finally:
        await subscription.unsubscribe()
    assert [e.state for e in events] == [RunState.RUNNING, RunState.COMPLETE]
    assert all(e.run_id == "evented" and e.workflow == "evented" and e.generation == 0 for e in events)
    assert len({e.event_id for e in events}) == 2
    assert events[0].timestamp.unix_ns <= events[1].timestamp.unix_ns


async def test_metrics_count_runs_and_decisions(client: asyncjobs.Client, flows: Workflows) -> None:
    name = "metered"
    started = METRICS.workflow_runs_started.value(name)
    complete = METRICS.workflow_runs_finished.value(name, "complete")
    released = METRICS.workflow_steps_decided.value(name, "released")
    latency = METRICS.workflow_release_seconds.labels(name)
    observed = latency.count
    run = await flows.submit(diamond(name))
    assert METRICS.workflow_runs_started.value(name) == started + 1
    assert METRICS.workflow_steps_decided.value(name, "released") == released + 1  # the root, at submit
    async with running(client, echo_router(Calls())), releasing(flows):
        await flows.wait(run.id, timeout=WAIT_S)
    assert METRICS.workflow_runs_finished.value(name, "complete") == complete + 1
    assert METRICS.workflow_runs_finished.value(name, "failed") == 0
    assert METRICS.workflow_steps_decided.value(name, "released") == released + 4
    # Each child released on its parent's event is timed (one released by the releaser's start-up sweep is not).
    assert observed + 1 <= latency.count <= observed + 3
    assert 0 <= latency.sum < 3 * WAIT_S


async def test_metrics_count_events_read_by_releasers(client: asyncjobs.Client, flows: Workflows) -> None:
    steps = METRICS.workflow_events_total.value("step")
    others = METRICS.workflow_events_total.value("other")
    run = await flows.submit(chain("events-metered", 2))
    async with running(client, echo_router(Calls())), releasing(flows):
        await flows.wait(run.id, timeout=WAIT_S)
        # At least each step's active and complete events reached the releaser.
        assert METRICS.workflow_events_total.value("step") >= steps + 4
        plain = await client.enqueue(asyncjobs.Task("step", "not a workflow step"))
        await wait_state(client, plain.id, TaskState.COMPLETED)
        await eventually(
            lambda: METRICS.workflow_events_total.value("other") >= others + 2, message="the plain task's events"
        )
