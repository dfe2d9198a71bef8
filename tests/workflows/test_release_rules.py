"""How a step's end decides its children: failure cascades, ``all_done`` clean-ups, conditions and skips, deadlines.

Every test runs real workers and a releaser on a real nats-server and checks the stored outcome of each step, the
run's final state, and which handlers ran.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

import asyncjobs
from asyncjobs import TaskState
from asyncjobs.metrics import METRICS
from asyncjobs_workflows import RunState, Workflow, WorkflowRun, Workflows
from asyncjobs_workflows.status import SKIPPED
from tests.core.conftest import wait_state
from tests.workflows.conftest import releasing, running

WAIT_S = 20.0
"""Seconds a run is given to end; they take well under a second."""
DEPENDENCY_FAILED = "task dependencies failed: "
SKIPPED_PREFIX = "workflow step skipped: "


def tid(run: WorkflowRun | str, step: str) -> str:
    return f"wf:{run if isinstance(run, str) else run.id}:{step}"


class Steps:
    """A router for every task type these tests use, recording the task ids it ran in order.

    ``ok`` returns its payload; ``fail`` raises TerminateTask; ``flaky`` raises ValueError (retried, so with
    ``max_tries=1`` it ends expired).
    """

    def __init__(self) -> None:
        self.order: list[str] = []
        self.router = asyncjobs.Router()
        self.router.add("ok", self._ok)
        self.router.add("fail", self._fail)
        self.router.add("flaky", self._flaky)

    async def _ok(self, task: asyncjobs.Task) -> Any:
        self.order.append(task.id)
        return task.payload_json()

    async def _fail(self, task: asyncjobs.Task) -> None:
        self.order.append(task.id)
        raise asyncjobs.TerminateTask(f"{task.id} refuses")

    async def _flaky(self, task: asyncjobs.Task) -> None:
        self.order.append(task.id)
        raise ValueError("flaked")


async def run_to_end(client: asyncjobs.Client, flows: Workflows, wf: Workflow, steps: Steps) -> WorkflowRun:
    run = await flows.submit(wf)
    async with running(client, steps.router), releasing(flows):
        return await flows.wait(run.id, timeout=WAIT_S)


def states(run: WorkflowRun) -> dict[str, str]:
    return {name: str(status.state) for name, status in run.steps.items()}


# -- failures -------------------------------------------------------------------------------------------------------


async def test_terminated_step_makes_the_rest_of_a_30_chain_unreachable(
    client: asyncjobs.Client, flows: Workflows
) -> None:
    wf = Workflow("cascade30")
    for n in range(1, 31):
        wf.step(f"s{n:02d}", "fail" if n == 2 else "ok", n, after=[f"s{n - 1:02d}"] if n > 1 else ())
    unreachable = METRICS.workflow_steps_decided.value("cascade30", "unreachable")
    steps = Steps()
    done = await run_to_end(client, flows, wf, steps)

    assert done.state is RunState.FAILED
    assert steps.order == [tid(done, "s01"), tid(done, "s02")]  # nothing after the failure ran
    assert done.steps["s01"].state == TaskState.COMPLETED
    assert done.steps["s02"].state == TaskState.TERMINATED and not done.steps["s02"].cancelled
    assert "refuses" in done.steps["s02"].last_error
    for n in range(3, 31):
        status = done.steps[f"s{n:02d}"]
        assert status.state == TaskState.UNREACHABLE, status
        assert status.tries == 0 and status.started is None and status.result is None
        assert status.last_error == f"{DEPENDENCY_FAILED}task {tid(done, f's{n - 1:02d}')} is " + (
            "terminated" if n == 3 else "unreachable"
        )
        stored = await client.get_task(status.task_id)
        assert stored.state == TaskState.UNREACHABLE and stored.last_err == status.last_error
        assert not await client.staged.queued(status.task_id)
    assert METRICS.workflow_steps_decided.value("cascade30", "unreachable") == unreachable + 28


async def test_expired_step_cascades_like_a_terminated_one(client: asyncjobs.Client, flows: Workflows) -> None:
    wf = (
        Workflow("expiring")
        .step("first", "ok")
        .step("brittle", "flaky", after="first", max_tries=1)
        .step("after", "ok", after="brittle")
        .step("last", "ok", after="after")
    )
    steps = Steps()
    done = await run_to_end(client, flows, wf, steps)
    assert done.state is RunState.FAILED
    assert done.steps["brittle"].state == TaskState.EXPIRED
    assert done.steps["brittle"].tries == 1 and "flaked" in done.steps["brittle"].last_error
    assert done.steps["after"].last_error == f"{DEPENDENCY_FAILED}task {tid(done, 'brittle')} is expired"
    assert states(done) == {"first": "complete", "brittle": "expired", "after": "unreachable", "last": "unreachable"}
    assert steps.order == [tid(done, "first"), tid(done, "brittle")]


async def test_step_that_fails_then_succeeds_on_a_later_try_releases_its_children_once(
    client: asyncjobs.Client, flows: Workflows
) -> None:
    wf = Workflow("flaky").step("shaky", "shaky").step("after", "ok", "after", after="shaky")
    steps = Steps()
    tries: list[int] = []

    async def shaky(task: asyncjobs.Task) -> str:
        tries.append(task.tries)
        steps.order.append(task.id)
        if len(tries) < 3:
            raise ValueError(f"not yet ({len(tries)})")
        return "steady"

    steps.router.add("shaky", shaky)
    done = await run_to_end(client, flows, wf, steps)
    # Its retry state is not final: nothing is decided until it completes.
    assert done.state is RunState.COMPLETE
    assert done.steps["shaky"].state == TaskState.COMPLETED and done.steps["shaky"].tries == 3
    assert done.results() == {"shaky": "steady", "after": "after"}
    assert steps.order == [tid(done, "shaky")] * 3 + [tid(done, "after")]


async def test_two_parents_failing_at_once(client: asyncjobs.Client, flows: Workflows) -> None:
    wf = (
        Workflow("twofail")
        .step("a", "fail")
        .step("b", "fail")
        .step("both", "ok", after=["a", "b"])
        .step("deeper", "ok", after="both")
        .step("cleanup", "ok", "cleaned", after=["a", "b"], trigger="all_done")
    )
    steps = Steps()
    done = await run_to_end(client, flows, wf, steps)
    assert done.state is RunState.FAILED
    assert states(done) == {
        "a": "terminated",
        "b": "terminated",
        "both": "unreachable",
        "deeper": "unreachable",
        "cleanup": "complete",
    }
    assert done.steps["both"].last_error in {
        f"{DEPENDENCY_FAILED}task {tid(done, 'a')} is terminated",
        f"{DEPENDENCY_FAILED}task {tid(done, 'b')} is terminated",
    }
    assert sorted(steps.order) == sorted([tid(done, "a"), tid(done, "b"), tid(done, "cleanup")])
    assert steps.order[-1] == tid(done, "cleanup")
    assert done.steps["cleanup"].result == "cleaned"


async def test_run_with_a_failure_ends_only_once_the_other_branches_end(
    client: asyncjobs.Client, flows: Workflows
) -> None:
    wf = (
        Workflow("branches")
        .step("start", "ok")
        .step("broken", "fail", after="start")
        .step("slow", "hold", after="start")
        .step("merge", "ok", after=["broken", "slow"])
        .step("report", "ok", "reported", after=["broken", "slow"], trigger="all_done")
    )
    steps = Steps()
    holding = asyncio.Event()
    gate = asyncio.Event()

    async def hold(task: asyncjobs.Task) -> str:
        steps.order.append(task.id)
        holding.set()
        await gate.wait()
        return "slow"

    steps.router.add("hold", hold)
    async with running(client, steps.router), releasing(flows):
        run = await flows.submit(wf)
        async with asyncio.timeout(WAIT_S):
            await holding.wait()
        # The failure reaches "merge" at once, though "slow" still runs; "report" waits for both.
        merge = await wait_state(client, tid(run, "merge"), TaskState.UNREACHABLE)
        assert merge.last_err == f"{DEPENDENCY_FAILED}task {tid(run, 'broken')} is terminated"
        waiting = await flows.get(run.id)
        assert waiting.state is RunState.RUNNING
        assert waiting.steps["slow"].state == TaskState.ACTIVE and waiting.steps["report"].state == TaskState.BLOCKED
        gate.set()
        done = await flows.wait(run.id, timeout=WAIT_S)
    assert done.state is RunState.FAILED
    assert states(done) == {
        "start": "complete",
        "broken": "terminated",
        "slow": "complete",
        "merge": "unreachable",
        "report": "complete",
    }
    assert steps.order.index(tid(run, "slow")) < steps.order.index(tid(run, "report"))
    assert tid(run, "merge") not in steps.order


async def test_all_done_clean_up_runs_after_a_failed_and_an_unreachable_parent(
    client: asyncjobs.Client, flows: Workflows
) -> None:
    wf = (
        Workflow("cleanups")
        .step("work", "fail")
        .step("publish", "ok", after="work")
        .step("after_failed", "ok", "one", after="work", trigger="all_done")
        .step("after_unreachable", "ok", "two", after="publish", trigger="all_done")
        .step("after_cleanup", "ok", "three", after="after_unreachable")
    )
    steps = Steps()
    done = await run_to_end(client, flows, wf, steps)
    assert done.state is RunState.FAILED  # the clean-ups succeeding does not hide the failure
    assert states(done) == {
        "work": "terminated",
        "publish": "unreachable",
        "after_failed": "complete",
        "after_unreachable": "complete",
        "after_cleanup": "complete",
    }
    assert done.results() == {"after_failed": "one", "after_unreachable": "two", "after_cleanup": "three"}
    assert tid(done, "publish") not in steps.order
    assert steps.order.index(tid(done, "after_unreachable")) < steps.order.index(tid(done, "after_cleanup"))


# -- conditions and skips -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "ran"), [("ok", True), ("bad", False)])
async def test_condition_on_a_parent_result_runs_or_skips_the_step(
    client: asyncjobs.Client, flows: Workflows, status: str, ran: bool
) -> None:
    wf = (
        Workflow("gated")
        .step("check", "ok", {"status": status})
        .step("deploy", "ok", "deployed", after="check", when={"step": "check", "path": "status", "equals": "ok"})
    )
    steps = Steps()
    done = await run_to_end(client, flows, wf, steps)
    assert done.state is RunState.COMPLETE
    deploy = done.steps["deploy"]
    stored = await client.get_task(deploy.task_id)
    if ran:
        assert deploy.state == TaskState.COMPLETED and deploy.result == "deployed"
        assert steps.order == [tid(done, "check"), tid(done, "deploy")]
        return
    assert deploy.state == SKIPPED and deploy.label == "skipped" and not deploy.cancelled
    assert deploy.last_error.startswith(SKIPPED_PREFIX) and "bad" in deploy.last_error
    assert deploy.tries == 0 and deploy.started is None
    assert stored.state == TaskState.TERMINATED and stored.last_err == deploy.last_error
    assert not await client.staged.queued(deploy.task_id)
    assert steps.order == [tid(done, "check")]
    assert done.results() == {"check": {"status": "bad"}}


async def test_skip_reaches_all_success_descendants_but_not_all_done_ones(
    client: asyncjobs.Client, flows: Workflows
) -> None:
    wf = (
        Workflow("skipping")
        .step("check", "ok", {"status": "bad"})
        .step("gated", "ok", after="check", when={"step": "check", "path": "status", "equals": "ok"})
        .step("child", "ok", after="gated")
        .step("grandchild", "ok", after="child")
        .step("mixed", "ok", after=["check", "child"])
        .step("report", "ok", "reported", after="gated", trigger="all_done")
        .step("after_report", "ok", after="report")
    )
    skipped = METRICS.workflow_steps_decided.value("skipping", "skipped")
    steps = Steps()
    done = await run_to_end(client, flows, wf, steps)
    assert done.state is RunState.COMPLETE  # every step completed or was skipped
    assert states(done) == {
        "check": "complete",
        "gated": SKIPPED,
        "child": SKIPPED,
        "grandchild": SKIPPED,
        "mixed": SKIPPED,
        "report": "complete",
        "after_report": "complete",
    }
    for name in ("child", "grandchild", "mixed"):
        status = done.steps[name]
        assert status.last_error.startswith(SKIPPED_PREFIX) and "was skipped" in status.last_error, status
        assert (await client.get_task(status.task_id)).state == TaskState.TERMINATED
    assert sorted(steps.order) == sorted(tid(done, name) for name in ("check", "report", "after_report"))
    assert METRICS.workflow_steps_decided.value("skipping", "skipped") == skipped + 4


async def test_all_done_step_under_a_skipped_parent_runs(client: asyncjobs.Client, flows: Workflows) -> None:
    wf = (
        Workflow("skipthendone")
        .step("check", "ok", {"status": "bad"})
        .step("gated", "ok", after="check", when={"step": "check", "path": "status", "equals": "ok"})
        .step("always", "ok", "always", after="gated", trigger="all_done")
    )
    steps = Steps()
    done = await run_to_end(client, flows, wf, steps)
    assert done.state is RunState.COMPLETE
    assert states(done) == {"check": "complete", "gated": SKIPPED, "always": "complete"}
    assert steps.order == [tid(done, "check"), tid(done, "always")]


async def test_failure_under_a_skip_still_fails_the_run(client: asyncjobs.Client, flows: Workflows) -> None:
    wf = (
        Workflow("skipandfail")
        .step("check", "ok", {"status": "bad"})
        .step("gated", "ok", after="check", when={"step": "check", "path": "status", "equals": "ok"})
        .step("broken", "fail", after="check")
    )
    done = await run_to_end(client, flows, wf, Steps())
    assert done.state is RunState.FAILED
    assert states(done) == {"check": "complete", "gated": SKIPPED, "broken": "terminated"}


async def test_condition_of_an_all_done_step_on_a_failed_parent(client: asyncjobs.Client, flows: Workflows) -> None:
    wf = (
        Workflow("donewhen")
        .step("work", "fail")
        .step(
            "notify",
            "ok",
            "notified",
            after="work",
            trigger="all_done",
            when={"step": "work", "path": "status", "equals": "ok"},
        )
        .step(
            "alert",
            "ok",
            "alerted",
            after="work",
            trigger="all_done",
            when={"step": "work", "path": "status", "exists": False},
        )
    )
    steps = Steps()
    done = await run_to_end(client, flows, wf, steps)
    assert done.state is RunState.FAILED
    # A parent that did not complete has no result: a test of its value is false, "exists: False" holds.
    assert states(done) == {"work": "terminated", "notify": SKIPPED, "alert": "complete"}
    assert done.steps["notify"].last_error.startswith(SKIPPED_PREFIX)
    assert sorted(steps.order) == sorted([tid(done, "work"), tid(done, "alert")])


# -- deadlines -------------------------------------------------------------------------------------------------------


async def test_deadline_passing_before_a_worker_starts_the_step_expires_it(
    client: asyncjobs.Client, flows: Workflows
) -> None:
    wf = (
        Workflow("deadlined")
        .step("first", "ok")
        .step("late", "ok", after="first", deadline=0.5)
        .step("after", "ok", after="late")
    )
    steps = Steps()
    run = await flows.submit(wf)
    # The first step runs while no releaser runs, so nothing can start "late" yet; its event waits in the feed.
    async with running(client, steps.router):
        await wait_state(client, tid(run, "first"), TaskState.COMPLETED)
    async with releasing(flows):
        released = await wait_state(client, tid(run, "late"), TaskState.NEW)
        assert released.deadline is not None
        assert await client.staged.queued(released.id)
        # Let the deadline pass with no worker: there is nothing to await for the time itself.
        await asyncio.sleep(max(0.0, (released.deadline - datetime.now(UTC)).total_seconds()) + 0.1)
        async with running(client, steps.router):
            done = await flows.wait(run.id, timeout=WAIT_S)
    assert done.state is RunState.FAILED
    assert states(done) == {"first": "complete", "late": "expired", "after": "unreachable"}
    assert "deadline" in done.steps["late"].last_error
    assert done.steps["after"].last_error == f"{DEPENDENCY_FAILED}task {tid(run, 'late')} is expired"
    assert steps.order == [tid(run, "first")]  # "late" never ran
