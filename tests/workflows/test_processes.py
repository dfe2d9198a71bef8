"""Workflow runs across processes: releasers and workers in subprocesses, killed with SIGKILL mid-run.

The apps are in tests/workflows/apps: ``releaser`` runs ``Workflows(client).run()``, ``worker`` runs a catch-all
handler that appends each call's task id to a file (so the test counts handler runs per step across processes)
and takes 20 ms. Nothing here restarts a worker in the middle of a handler unless the test says so, so every step's
handler must have run exactly once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient

import asyncjobs
from asyncjobs import TaskState
from asyncjobs.constants import EVENTS_STREAM
from asyncjobs.testing import eventually
from asyncjobs_workflows import RunState, Workflow, WorkflowRun, Workflows
from asyncjobs_workflows.constants import FEED_NAME
from asyncjobs_workflows.status import StepState
from tests.core.conftest import Command, wait_state
from tests.workflows.conftest import ClientFactory, releasing

QUEUE: Final = "WFPROC"
STEP_TYPE: Final = "wf:step"
RUN_TIMEOUT_S: Final = 30.0
"""Longest a run may take here: a releaser killed holding an event leaves it to the others after the feed's ack
wait (10 s), or to their next sweep."""
OUTAGE_S: Final = 2.0
"""How long the test watches a run stand still while no releaser runs."""


@pytest_asyncio.fixture
async def processes() -> AsyncIterator[list[Command]]:
    started: list[Command] = []
    yield started
    for command in started:
        await command.kill()


async def start_app(processes: list[Command], app: str, *args: str) -> Command:
    """``python -m tests.workflows.apps.APP ARGS``, once it said it is ready."""
    command = Command()
    command.args = ["-m", f"tests.workflows.apps.{app}", *args]
    processes.append(command)
    await command.start()
    await command.wait_line(f"^{app} ready$")
    return command


def chain(name: str, length: int) -> Workflow:
    workflow = Workflow(name)
    for i in range(length):
        workflow.step(f"s{i:02d}", STEP_TYPE, after=f"s{i - 1:02d}" if i else ())
    return workflow


def fan(name: str, width: int) -> Workflow:
    """``start``, then ``width`` steps after it, then ``join`` after all of them."""
    workflow = Workflow(name).step("start", STEP_TYPE)
    middle = [f"m{i:03d}" for i in range(width)]
    for step in middle:
        workflow.step(step, STEP_TYPE, after="start")
    return workflow.step("join", STEP_TYPE, after=middle)


def handler_calls(calls: Path) -> Counter[str]:
    """How many times the workers' handler ran for each task id."""
    return Counter(calls.read_text().split()) if calls.exists() else Counter()


def step_ids(run: WorkflowRun) -> list[str]:
    return [status.task_id for status in run.steps.values()]


def assert_ran_once(run: WorkflowRun, calls: Counter[str]) -> None:
    """The run completed, and every step's handler ran exactly once."""
    assert run.state is RunState.COMPLETE, run
    assert {name: s.state for name, s in run.steps.items()} == dict.fromkeys(run.workflow.steps, TaskState.COMPLETED)
    assert {name: s.tries for name, s in run.steps.items()} == dict.fromkeys(run.workflow.steps, 1)
    ran = {task_id: calls[task_id] for task_id in step_ids(run)}
    assert ran == dict.fromkeys(step_ids(run), 1), {k: v for k, v in ran.items() if v != 1}


def assert_no_trouble(command: Command) -> None:
    """The process logged no warning, error or traceback."""
    trouble = [line for line in command.lines if any(word in line for word in (" WARNING ", " ERROR ", "Traceback"))]
    assert not trouble, command.output


async def feed_backlog(nc: NatsClient) -> tuple[int, int]:
    """The releasers' shared consumer: events not yet delivered, and delivered but not yet acknowledged."""
    info = await nc.jetstream().consumer_info(EVENTS_STREAM, FEED_NAME)
    return info.num_pending or 0, info.num_ack_pending or 0


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_a_releaser_killed_mid_run_leaves_its_runs_to_the_other(
    nats_url: str, make_client: ClientFactory, processes: list[Command], tmp_path: Path
) -> None:
    client = await make_client(queue=QUEUE)
    flows = Workflows(client)
    calls = tmp_path / "calls"
    victim, survivor, _ = await asyncio.gather(
        start_app(processes, "releaser", nats_url, QUEUE),
        start_app(processes, "releaser", nats_url, QUEUE),
        start_app(processes, "worker", nats_url, QUEUE, str(calls), "--concurrency", "4"),
    )
    line = await flows.submit(chain("chain", 30))
    wide = await flows.submit(fan("fan", 50))

    def under_way() -> bool:
        ran = handler_calls(calls)
        return sum(ran[i] for i in step_ids(line)) >= 4 and sum(ran[i] for i in step_ids(wide)) >= 6

    await eventually(under_way, timeout=RUN_TIMEOUT_S, interval=0.005, message="the first steps ran")
    await victim.kill()
    killed = time.monotonic()
    at_kill = await flows.get(line.id)
    finished = [await flows.wait(line.id, timeout=RUN_TIMEOUT_S), await flows.wait(wide.id, timeout=RUN_TIMEOUT_S)]
    took = time.monotonic() - killed

    assert at_kill.state is RunState.RUNNING, at_kill  # the kill came mid-run
    ran = handler_calls(calls)
    for run in finished:
        assert_ran_once(run, ran)
    assert sum(ran.values()) == 30 + 52  # nothing else ran either
    assert took < RUN_TIMEOUT_S, took
    assert_no_trouble(survivor)


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_the_only_releaser_killed_then_a_new_one_handles_what_happened_meanwhile(
    nats_url: str, make_client: ClientFactory, processes: list[Command], tmp_path: Path, nc: NatsClient
) -> None:
    client = await make_client(queue=QUEUE)
    flows = Workflows(client)
    calls = tmp_path / "calls"
    # The worker's reconciler looks for stuck tasks every 0.5 s: it must leave the blocked steps alone.
    first, _ = await asyncio.gather(
        start_app(processes, "releaser", nats_url, QUEUE),
        start_app(processes, "worker", nats_url, QUEUE, str(calls), "--reconcile", "0.5"),
    )
    line = await flows.submit(chain("chain", 30))
    await eventually(
        lambda: sum(handler_calls(calls)[i] for i in step_ids(line)) >= 5, timeout=RUN_TIMEOUT_S, interval=0.005
    )
    await first.kill()

    # Without a releaser the run stops where it is: the step in flight ends, and its child stays blocked.
    async def stalled() -> dict[str, StepState] | None:
        states = {name: s.state for name, s in (await flows.get(line.id)).steps.items()}
        return states if set(states.values()) <= {TaskState.COMPLETED, TaskState.BLOCKED} else None

    at_stall = await eventually(stalled, message="the chain stopped without a releaser")
    assert at_stall is not None
    done = sum(1 for state in at_stall.values() if state == TaskState.COMPLETED)
    assert 5 <= done < 30
    _, held = await feed_backlog(nc)  # events the killed releaser took and never acknowledged
    # A run submitted meanwhile: submit queues its root, which runs; its events wait in the feed.
    later = await flows.submit(chain("later", 3))
    await wait_state(client, step_ids(later)[0], TaskState.COMPLETED)
    await asyncio.sleep(OUTAGE_S)  # nothing may move meanwhile: only a releaser releases a step
    assert {name: s.state for name, s in (await flows.get(line.id)).steps.items()} == at_stall
    assert (await flows.get(later.id)).steps["s01"].state == TaskState.BLOCKED
    waiting, _ = await feed_backlog(nc)
    assert waiting >= 2  # at least the later root's active and completed events

    second = await start_app(processes, "releaser", nats_url, QUEUE)
    finished = [await flows.wait(line.id, timeout=RUN_TIMEOUT_S), await flows.wait(later.id, timeout=RUN_TIMEOUT_S)]
    ran = handler_calls(calls)
    for run in finished:
        assert_ran_once(run, ran)
    # Every event kept while no releaser ran went to the new one, which acknowledged it; only the events the killed
    # releaser held may still wait for their ack wait to pass.
    await eventually(lambda: _feed_drained(nc, held), message="the feed drained")
    assert_no_trouble(second)


async def _feed_drained(nc: NatsClient, held: int = 0) -> bool:
    """Whether every event was delivered, and all acknowledged but up to ``held``."""
    pending, unacknowledged = await feed_backlog(nc)
    return pending == 0 and unacknowledged <= held


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_worker_killed_in_a_handler_leaves_the_step_to_another_after_max_run_time(
    nats_url: str, make_client: ClientFactory, processes: list[Command], tmp_path: Path
) -> None:
    max_run_time = 2.0
    client = await make_client(queue=asyncjobs.Queue("WFKILL", max_run_time=max_run_time))
    flows = Workflows(client)
    calls = tmp_path / "calls"
    workflow = Workflow("kill").step("a", STEP_TYPE).step("b", "wf:hang", after="a")
    for child in ("c1", "c2", "c3"):
        workflow.step(child, STEP_TYPE, after="b")
    workflow.step("d", STEP_TYPE, after=["c1", "c2", "c3"])

    async with releasing(flows):
        hanging = await start_app(processes, "worker", nats_url, "WFKILL", str(calls), "--hang", "wf:hang")
        run = await flows.submit(workflow)
        b_id = run.steps["b"].task_id
        await eventually(lambda: handler_calls(calls)[b_id] == 1, interval=0.005, message="b's handler started")
        seen = time.time()
        await hanging.kill()
        await start_app(processes, "worker", nats_url, "WFKILL", str(calls))
        finished = await flows.wait(run.id, timeout=RUN_TIMEOUT_S)

    assert finished.state is RunState.COMPLETE, finished
    ran = handler_calls(calls)
    assert {s.task_id: ran[s.task_id] for s in finished.steps.values()} == {
        s.task_id: 2 if s.name == "b" else 1 for s in finished.steps.values()
    }
    b = finished.steps["b"]
    assert b.state == TaskState.COMPLETED and b.tries == 2
    # The second worker got b once the queue's max_run_time had passed since the first got it.
    assert b.started is not None and b.finished is not None
    assert b.started.timestamp() - seen > max_run_time - 0.5, (b.started.timestamp() - seen, max_run_time)
    # Its children were released after it completed, not before.
    order = calls.read_text().split()
    last_b = len(order) - 1 - order[::-1].index(b_id)
    for child in ("c1", "c2", "c3", "d"):
        status = finished.steps[child]
        assert status.started is not None and status.started >= b.finished, child
        assert order.index(status.task_id) > last_b, child


@pytest.mark.timeout(90)
async def test_three_releaser_processes_on_a_wide_fan_out_release_each_step_once(
    nats_url: str, make_client: ClientFactory, processes: list[Command], tmp_path: Path, nc: NatsClient
) -> None:
    client = await make_client(queue=QUEUE)
    flows = Workflows(client)
    calls = tmp_path / "calls"
    *releasers, worker = await asyncio.gather(
        *(start_app(processes, "releaser", nats_url, QUEUE) for _ in range(3)),
        start_app(processes, "worker", nats_url, QUEUE, str(calls), "--concurrency", "20"),
    )
    run = await flows.submit(fan("wide", 100))
    finished = await flows.wait(run.id, timeout=RUN_TIMEOUT_S)
    ran = handler_calls(calls)
    assert_ran_once(finished, ran)
    assert sum(ran.values()) == 102
    await eventually(lambda: _feed_drained(nc), message="the feed drained")
    for command in (*releasers, worker):
        assert_no_trouble(command)
