"""Run control on a real nats-server: cancel, retry, several releasers at once, and the sweep that catches up.

Tests that need to know the releasers have handled every event so far read the shared feed consumer's counters
(nothing pending, nothing unacknowledged) rather than sleeping.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections import Counter
from typing import Any

import orjson
import pytest

import asyncjobs
from asyncjobs import EventFeed, TaskState
from asyncjobs.codec import decode_event
from asyncjobs.metrics import METRICS
from asyncjobs.testing import eventually
from asyncjobs.wiretime import WireTime
from asyncjobs_workflows import RunState, RunStateError, Workflow, WorkflowRun, Workflows
from asyncjobs_workflows.constants import DEFINITION_KEY_PREFIX, FEED_NAME, RUNS_BUCKET
from asyncjobs_workflows.record import RunRecord, run_key
from tests.core.conftest import wait_state
from tests.workflows.conftest import ClientFactory, releasing, running

WAIT_S = 20.0
"""Seconds a run is given to end; they take well under a second."""
CANCELLED = "workflow run cancelled"


def tid(run: WorkflowRun | str, step: str) -> str:
    return f"wf:{run if isinstance(run, str) else run.id}:{step}"


def chain(name: str, length: int) -> Workflow:
    wf = Workflow(name)
    for n in range(1, length + 1):
        wf.step(f"s{n:02d}", "step", n, after=[f"s{n - 1:02d}"] if n > 1 else ())
    return wf


def fan(name: str, width: int) -> Workflow:
    wf = Workflow(name).step("split", "step", "split")
    parts = [f"p{n:03d}" for n in range(width)]
    for n, part in enumerate(parts):
        wf.step(part, "step", n, after="split")
    return wf.step("join", "join", after=parts, load_dependencies=True)


def counting_router(calls: Counter[str]) -> asyncjobs.Router:
    """``step`` returns its payload, ``join`` the sum of its parents' results; both count calls per task id."""
    router = asyncjobs.Router()

    @router.handler("step")
    async def step(task: asyncjobs.Task) -> Any:
        calls[task.id] += 1
        return task.payload_json()

    @router.handler("join")
    async def join(task: asyncjobs.Task) -> int:
        calls[task.id] += 1
        return sum(int(result.payload) for result in task.dependency_results.values() if result.payload != "split")

    return router


async def feed_info(client: asyncjobs.Client) -> dict[str, Any]:
    reply = await client.nc.request(f"$JS.API.CONSUMER.INFO.CHORIA_AJ_EVENTS.{FEED_NAME}", b"", timeout=5)
    info: dict[str, Any] = orjson.loads(reply.data)
    assert "error" not in info, info
    return info


async def event_stored(client: asyncjobs.Client, task_id: str, state: TaskState) -> None:
    """Wait until the events stream holds a task's event for ``state`` as that task's latest."""

    async def stored() -> bool:
        request = orjson.dumps({"last_by_subj": f"CHORIA_AJ.E.task_state.{task_id}"})
        reply = await client.nc.request("$JS.API.STREAM.MSG.GET.CHORIA_AJ_EVENTS", request, timeout=5)
        body = orjson.loads(reply.data)
        if "message" not in body:
            return False
        event = decode_event(base64.b64decode(body["message"]["data"]))
        return isinstance(event, asyncjobs.TaskStateEvent) and event.state == state

    await eventually(stored, message=f"the {state.value} event of {task_id} to be stored")


async def releasers_idle(client: asyncjobs.Client) -> None:
    """Wait until the releasers' feed holds no event that is not handled and acknowledged."""

    async def idle() -> bool:
        info = await feed_info(client)
        return bool(info["num_pending"] == 0 and info["num_ack_pending"] == 0)

    await eventually(idle, message="the releasers to handle every event")


# -- cancel -----------------------------------------------------------------------------------------------------------


async def test_cancel_stops_every_step_not_started_and_the_active_one_finishes(
    make_client: ClientFactory, client: asyncjobs.Client, flows: Workflows
) -> None:
    # One handler slot: the root that starts first holds it, so the other root stays queued.
    worker = await make_client(concurrency=1)
    wf = (
        Workflow("cancelled")
        .step("r1", "hold")
        .step("r2", "hold")
        .step("c1", "step", after="r1")
        .step("c2", "step", after="r2")
        .step("c3", "step", after=["c1", "c2"])
    )
    calls: Counter[str] = Counter()
    router = counting_router(calls)
    holding = asyncio.Event()
    gate = asyncio.Event()
    active: list[str] = []

    @router.handler("hold")
    async def hold(task: asyncjobs.Task) -> str:
        calls[task.id] += 1
        active.append(task.id)
        holding.set()
        await gate.wait()
        return "held"

    finished = METRICS.workflow_runs_finished.value("cancelled", "cancelled")
    run = await flows.submit(wf)
    async with running(worker, router), releasing(flows):
        async with asyncio.timeout(WAIT_S):
            await holding.wait()
        started = next(name for name in ("r1", "r2") if tid(run, name) == active[0])
        waiting = "r2" if started == "r1" else "r1"
        await wait_state(client, tid(run, started), TaskState.ACTIVE)
        assert await client.staged.queued(tid(run, waiting))

        cancelled = await flows.cancel(run.id)
        assert cancelled.state is RunState.CANCELLED and cancelled.done and cancelled.finished is not None
        assert (await flows.get(run.id)).state is RunState.CANCELLED
        assert cancelled.steps[started].state == TaskState.ACTIVE and not cancelled.steps[started].cancelled
        for name in (waiting, "c1", "c2", "c3"):
            status = cancelled.steps[name]
            assert status.state == TaskState.TERMINATED and status.cancelled, status
            assert status.last_error == CANCELLED and status.label == "cancelled"
            assert not await client.staged.queued(status.task_id), name
        assert METRICS.workflow_runs_finished.value("cancelled", "cancelled") == finished + 1

        gate.set()  # the running step finishes; nothing after it may start
        await event_stored(client, tid(run, started), TaskState.COMPLETED)
        await releasers_idle(client)
        after = await flows.get(run.id)

    assert after.state is RunState.CANCELLED
    assert after.steps[started].state == TaskState.COMPLETED and after.steps[started].result == "held"
    stopped = {name: (s.state, s.cancelled) for name, s in after.steps.items() if name != started}
    assert stopped == dict.fromkeys((waiting, "c1", "c2", "c3"), (TaskState.TERMINATED, True))
    assert calls == {tid(run, started): 1}

    again = await flows.cancel(run.id)  # harmless
    assert again.state is RunState.CANCELLED and again.finished == after.finished
    assert {n: s.state for n, s in again.steps.items()} == {n: s.state for n, s in after.steps.items()}
    assert METRICS.workflow_runs_finished.value("cancelled", "cancelled") == finished + 1


async def test_cancel_of_an_ended_run_is_refused(client: asyncjobs.Client, flows: Workflows) -> None:
    wf = Workflow("ended").step("one", "step", 1)
    failing = Workflow("ended").step("one", "nothing-handles-this", max_tries=1)
    calls: Counter[str] = Counter()
    async with running(client, counting_router(calls)), releasing(flows):
        complete = await flows.wait((await flows.submit(wf)).id, timeout=WAIT_S)
        failed = await flows.wait((await flows.submit(failing)).id, timeout=WAIT_S)
    assert complete.state is RunState.COMPLETE and failed.state is RunState.FAILED
    for run in (complete, failed):
        with pytest.raises(RunStateError, match=f"already ended {run.state.value}"):
            await flows.cancel(run.id)
        assert (await flows.get(run.id)).state is run.state


# -- retry ------------------------------------------------------------------------------------------------------------


async def test_retry_of_a_failed_run_runs_again_only_what_did_not_complete(
    client: asyncjobs.Client, flows: Workflows
) -> None:
    wf = (
        Workflow("retried")
        .step("fetch", "step", "fetched")
        .step("side", "step", "side", after="fetch")
        .step("parse", "parse", after="fetch", load_dependencies=True)
        .step("store", "store", after="parse", load_dependencies=True)
        .step("cleanup", "step", "cleaned", after="parse", trigger="all_done")
    )
    calls: Counter[str] = Counter()
    router = counting_router(calls)
    seen: dict[str, list[dict[str, Any]]] = {}

    @router.handler("parse")
    async def parse(task: asyncjobs.Task) -> str:
        calls[task.id] += 1
        seen.setdefault(task.id, []).append({k: v.payload for k, v in task.dependency_results.items()})
        if calls[task.id] == 1:
            raise asyncjobs.TerminateTask("the parser is broken today")
        return "parsed"

    @router.handler("store")
    async def store(task: asyncjobs.Task) -> str:
        calls[task.id] += 1
        seen.setdefault(task.id, []).append({k: v.payload for k, v in task.dependency_results.items()})
        return "stored"

    async with running(client, router), releasing(flows):
        run = await flows.submit(wf)
        failed = await flows.wait(run.id, timeout=WAIT_S)
        assert failed.state is RunState.FAILED and failed.generation == 0
        assert {n: str(s.state) for n, s in failed.steps.items()} == {
            "fetch": "complete",
            "side": "complete",
            "parse": "terminated",
            "store": "unreachable",
            "cleanup": "complete",
        }

        retried = await flows.retry(run.id)
        assert retried.state is RunState.RUNNING and retried.generation == 1 and retried.finished is None
        assert retried.steps["fetch"].state == TaskState.COMPLETED and retried.steps["fetch"].result == "fetched"
        done = await flows.wait(run.id, timeout=WAIT_S)

    assert done.state is RunState.COMPLETE and done.generation == 1
    assert done.results() == {
        "fetch": "fetched",
        "side": "side",
        "parse": "parsed",
        "store": "stored",
        "cleanup": "cleaned",
    }
    assert calls == {
        tid(run, "fetch"): 1,
        tid(run, "side"): 1,
        tid(run, "parse"): 2,
        tid(run, "store"): 1,
        tid(run, "cleanup"): 1,  # it completed after the failure, so the retry leaves it be
    }
    assert seen[tid(run, "parse")] == [{tid(run, "fetch"): "fetched"}] * 2  # the kept result, received again
    assert seen[tid(run, "store")] == [{tid(run, "parse"): "parsed"}]
    assert done.steps["parse"].tries == 1 and done.steps["parse"].last_error == ""


async def test_retry_of_a_cancelled_run(client: asyncjobs.Client, flows: Workflows) -> None:
    run = await flows.submit(chain("recancelled", 3))  # nothing works on it yet
    cancelled = await flows.cancel(run.id)
    assert all(s.state == TaskState.TERMINATED and s.cancelled for s in cancelled.steps.values())
    assert not await client.staged.queued(tid(run, "s01"))

    retried = await flows.retry(run.id)
    assert retried.state is RunState.RUNNING and retried.generation == 1
    assert {n: s.state for n, s in retried.steps.items()} == {
        "s01": TaskState.NEW,
        "s02": TaskState.BLOCKED,
        "s03": TaskState.BLOCKED,
    }
    assert await client.staged.queued(tid(run, "s01"))
    assert not any(s.cancelled or s.last_error for s in retried.steps.values())

    calls: Counter[str] = Counter()
    async with running(client, counting_router(calls)), releasing(flows):
        done = await flows.wait(run.id, timeout=WAIT_S)
    assert done.state is RunState.COMPLETE and done.generation == 1
    assert done.results() == {"s01": 1, "s02": 2, "s03": 3}
    assert calls == {tid(run, f"s0{n}"): 1 for n in (1, 2, 3)}


async def test_retry_of_a_cancelled_run_while_a_step_still_runs(client: asyncjobs.Client, flows: Workflows) -> None:
    wf = Workflow("retrybusy").step("slow", "hold").step("next", "step", "next", after="slow")
    calls: Counter[str] = Counter()
    router = counting_router(calls)
    holding = asyncio.Event()
    gate = asyncio.Event()

    @router.handler("hold")
    async def hold(task: asyncjobs.Task) -> str:
        calls[task.id] += 1
        holding.set()
        await gate.wait()
        return "slow"

    async with running(client, router), releasing(flows):
        run = await flows.submit(wf)
        async with asyncio.timeout(WAIT_S):
            await holding.wait()
        await wait_state(client, tid(run, "slow"), TaskState.ACTIVE)
        cancelled = await flows.cancel(run.id)
        assert cancelled.steps["next"].cancelled

        retried = await flows.retry(run.id)  # the running step goes on; its child waits for it again
        assert retried.state is RunState.RUNNING and retried.generation == 1
        assert retried.steps["slow"].state == TaskState.ACTIVE
        assert retried.steps["next"].state == TaskState.BLOCKED and not retried.steps["next"].cancelled
        gate.set()
        done = await flows.wait(run.id, timeout=WAIT_S)

    assert done.state is RunState.COMPLETE and done.generation == 1
    assert done.results() == {"slow": "slow", "next": "next"}
    assert calls == {tid(run, "slow"): 1, tid(run, "next"): 1}


async def test_retry_of_a_running_or_complete_run_is_refused(client: asyncjobs.Client, flows: Workflows) -> None:
    run = await flows.submit(chain("noretry", 2))
    with pytest.raises(RunStateError, match="is running"):
        await flows.retry(run.id)
    async with running(client, counting_router(Counter())), releasing(flows):
        await flows.wait(run.id, timeout=WAIT_S)
    with pytest.raises(RunStateError, match="is complete"):
        await flows.retry(run.id)
    done = await flows.get(run.id)
    assert done.state is RunState.COMPLETE and done.generation == 0


async def test_cancel_and_retry_publish_run_events(client: asyncjobs.Client, flows: Workflows) -> None:
    async with flows.events("evented-control") as events:
        await flows.submit(chain("evented-control", 2), run_id="evented-control")
        await flows.cancel("evented-control")
        await flows.retry("evented-control")
        async with running(client, counting_router(Counter())), releasing(flows):
            await flows.wait("evented-control", timeout=WAIT_S)
        seen = []
        async with asyncio.timeout(WAIT_S):
            async for event in events:
                seen.append((event.state, event.generation))
                if event.state is RunState.COMPLETE:
                    break
    assert seen == [
        (RunState.RUNNING, 0),
        (RunState.CANCELLED, 0),
        (RunState.RUNNING, 1),
        (RunState.COMPLETE, 1),
    ]


# -- several releasers ------------------------------------------------------------------------------------------------


async def test_three_releasers_release_each_step_once(make_client: ClientFactory, client: asyncjobs.Client) -> None:
    clients = [client, await make_client(), await make_client()]
    every = [Workflows(c) for c in clients]
    calls: Counter[str] = Counter()
    router = counting_router(calls)
    released = {name: METRICS.workflow_steps_decided.value(name, "released") for name in ("crowd-fan", "crowd-chain")}
    async with contextlib.AsyncExitStack() as stack:
        for c, flows in zip(clients, every, strict=True):
            await stack.enter_async_context(releasing(flows))
            await stack.enter_async_context(running(c, router))
        fanned = await every[0].submit(fan("crowd-fan", 100))
        chained = await every[1].submit(chain("crowd-chain", 20))
        fan_done = await every[2].wait(fanned.id, timeout=WAIT_S)
        chain_done = await every[0].wait(chained.id, timeout=WAIT_S)

    assert fan_done.state is RunState.COMPLETE and chain_done.state is RunState.COMPLETE
    expected = {tid(fanned, name): 1 for name in fan_done.steps} | {tid(chained, name): 1 for name in chain_done.steps}
    assert len(expected) == 102 + 20
    assert calls == expected
    assert fan_done.steps["join"].result == sum(range(100))
    assert chain_done.results() == {f"s{n:02d}": n for n in range(1, 21)}
    # Each step was released once between the three of them.
    assert METRICS.workflow_steps_decided.value("crowd-fan", "released") == released["crowd-fan"] + 102
    assert METRICS.workflow_steps_decided.value("crowd-chain", "released") == released["crowd-chain"] + 20


# -- the sweep --------------------------------------------------------------------------------------------------------


async def test_sweep_moves_on_a_run_whose_events_were_lost(client: asyncjobs.Client, flows: Workflows) -> None:
    calls: Counter[str] = Counter()
    run = await flows.submit(chain("lost-events", 3))
    # No releaser runs: the worker completes the root and its events wait in the feed; then they are lost.
    async with running(client, counting_router(calls)):
        await wait_state(client, tid(run, "s01"), TaskState.COMPLETED)
    reply = await client.nc.request("$JS.API.STREAM.PURGE.CHORIA_AJ_EVENTS", b"", timeout=5)
    assert orjson.loads(reply.data).get("success") is True
    assert (await feed_info(client))["num_pending"] == 0
    assert (await client.get_task(tid(run, "s02"))).state == TaskState.BLOCKED

    assert await flows.sweep() == 1
    released = await client.get_task(tid(run, "s02"))
    assert released.state == TaskState.NEW and await client.staged.queued(released.id)
    assert (await client.get_task(tid(run, "s03"))).state == TaskState.BLOCKED

    # Still no releaser: each sweep takes the run one step on, the last one ends it.
    async with running(client, counting_router(calls)):
        await wait_state(client, tid(run, "s02"), TaskState.COMPLETED)
    assert await flows.sweep() == 1
    assert (await client.get_task(tid(run, "s03"))).state == TaskState.NEW
    async with running(client, counting_router(calls)):
        await wait_state(client, tid(run, "s03"), TaskState.COMPLETED)
    assert (await flows.get(run.id)).state is RunState.RUNNING
    assert await flows.sweep() == 1
    done = await flows.get(run.id)
    assert done.state is RunState.COMPLETE and done.results() == {"s01": 1, "s02": 2, "s03": 3}
    assert calls == {tid(run, name): 1 for name in ("s01", "s02", "s03")}
    assert await flows.sweep() == 0  # nothing running is left to check


async def test_sweep_queues_again_a_released_step_whose_work_item_was_lost(
    client: asyncjobs.Client, flows: Workflows
) -> None:
    run = await flows.submit(chain("lost-item", 2))
    root = tid(run, "s01")
    assert await client.staged.withdraw(root)  # the item is gone (a purge, a lost stream), the task still new
    assert (await client.get_task(root)).state == TaskState.NEW

    assert await flows.sweep() == 1
    assert await client.staged.queued(root)
    calls: Counter[str] = Counter()
    async with running(client, counting_router(calls)), releasing(flows):
        done = await flows.wait(run.id, timeout=WAIT_S)
    assert done.state is RunState.COMPLETE
    assert calls == {tid(run, "s01"): 1, tid(run, "s02"): 1}


async def test_sweep_completes_a_run_left_half_submitted(client: asyncjobs.Client, flows: Workflows) -> None:
    wf = chain("half", 3)
    kv = await client.admin.ensure_bucket(RUNS_BUCKET)
    # What a submitter that crashed right after storing the run leaves: the feed, the definition and the record
    # (not marked submitted), and no step task. One crashed a minute ago, the other just now.
    await EventFeed(client, FEED_NAME).ensure()
    now_ns = time.time_ns()
    for run_id, age_s in (("half-old", 60), ("half-new", 0)):
        record = RunRecord(
            id=run_id,
            workflow=wf.name,
            queue=client.queue.name,
            state=RunState.RUNNING,
            created=WireTime(now_ns - age_s * 1_000_000_000),
        )
        await kv.create(DEFINITION_KEY_PREFIX + run_id, orjson.dumps(wf.to_dict()))
        await kv.create(run_key(run_id), record.encode())
    assert (await flows.get("half-old")).steps == {}

    assert await flows.sweep() == 2
    staged = await flows.get("half-old")
    assert {n: s.state for n, s in staged.steps.items()} == {
        "s01": TaskState.NEW,
        "s02": TaskState.BLOCKED,
        "s03": TaskState.BLOCKED,
    }
    assert await client.staged.queued(tid("half-old", "s01"))
    root = await client.get_task(tid("half-old", "s01"))
    assert root.created == staged.created  # the tasks carry the run's time, as a submit stores them
    assert (await flows.get("half-new")).steps == {}  # too young: its submitter may still be at work
    with pytest.raises(asyncjobs.TaskNotFound):
        await client.get_task(tid("half-new", "s01"))

    calls: Counter[str] = Counter()
    async with running(client, counting_router(calls)), releasing(flows):
        done = await flows.wait("half-old", timeout=WAIT_S)
    assert done.state is RunState.COMPLETE and done.results() == {"s01": 1, "s02": 2, "s03": 3}
    assert calls == {tid("half-old", name): 1 for name in ("s01", "s02", "s03")}
    assert (await flows.get("half-new")).state is RunState.RUNNING

    # The crashed submitter, submitting again with the same run id, completes its run at once.
    resumed = await flows.submit(wf, run_id="half-new")
    assert {n: s.state for n, s in resumed.steps.items()} == {
        "s01": TaskState.NEW,
        "s02": TaskState.BLOCKED,
        "s03": TaskState.BLOCKED,
    }
    async with running(client, counting_router(calls)), releasing(flows):
        resumed_done = await flows.wait("half-new", timeout=WAIT_S)
    assert resumed_done.state is RunState.COMPLETE and resumed_done.created == resumed.created
    assert calls[tid("half-new", "s01")] == 1
