"""Regressions from the review of the workflows runtime, each a race or a crash forced at its exact moment.

Every test reproduces one defect the reviewer found. Where the defect needs two processes to interleave, the
test hooks the call at which the second one must step in (``monkeypatch``) and runs it there, so the interleaving
is exact rather than likely. Steps are finished by hand, as a worker would store them (:func:`finish`), and runs
are moved on with :meth:`Workflows.sweep`, so no test depends on a worker's or a releaser's timing.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson
import pytest

import asyncjobs
from asyncjobs import TaskState
from asyncjobs.kv import KeyValue
from asyncjobs.testing import eventually
from asyncjobs.wiretime import WireTime
from asyncjobs_workflows import (
    DuplicateRun,
    RunState,
    RunStateError,
    Workflow,
    WorkflowNotFound,
    WorkflowRun,
    Workflows,
)
from asyncjobs_workflows import control as run_control
from asyncjobs_workflows import engine as run_engine
from asyncjobs_workflows.constants import DEFINITION_KEY_PREFIX, RUNS_BUCKET
from asyncjobs_workflows.decide import Verdict
from asyncjobs_workflows.engine import Engine, Loaded
from asyncjobs_workflows.record import RunRecord, run_key
from asyncjobs_workflows.releaser import Releaser
from asyncjobs_workflows.stopping import cancel_step
from tests.workflows.conftest import ClientFactory
from tests.workflows.test_go_interop import QUEUE as GO_QUEUE
from tests.workflows.test_go_interop import GoWorker

CANCELLED: Final = "workflow run cancelled"
GO_TIMEOUT_S: Final = 20.0
"""Seconds ``ajgo work`` is given to start and run one task."""


class Crash(Exception):
    """A process dying at a chosen point (raised by a hook, never by the library)."""


def tid(run_id: str, step: str) -> str:
    return f"wf:{run_id}:{step}"


async def finish(
    client: asyncjobs.Client, run_id: str, step: str, state: TaskState = TaskState.COMPLETED, error: str = ""
) -> None:
    """End a step as a worker would: its work item gone from the queue, its task stored in a final state."""
    task = await client.get_task(tid(run_id, step))
    if task.queue:
        await client.staged.withdraw(task.id, queue=task.queue)
    task.state, task.last_err, task.tried_at = state, error, WireTime.now()
    await client.staged.update(task)


async def states(flows: Workflows, run_id: str) -> tuple[RunState, dict[str, object]]:
    run = await flows.get(run_id)
    return run.state, {name: status.state for name, status in run.steps.items()}


# -- 1. a run id used again after delete() is a new run to every releaser ----------------------------------------


async def test_a_run_submitted_again_after_delete_is_not_ended_with_the_old_runs_outcomes(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = Workflows(await make_client()), Workflows(await make_client())
    workflow = Workflow("w").step("a", "t").step("b", "t")
    await first.submit(workflow, run_id="order-7")
    for step in "ab":
        await finish(first.client, "order-7", step)

    # Both releasers find the run done at once: `second` has read every outcome when `first` ends the run under it,
    # so `second`'s own end loses the compare-and-set.
    end_run = Engine.end_run
    ended_under_it: list[RunRecord] = []

    async def end_run_after_the_other(self: Engine, record: RunRecord, state: RunState) -> RunRecord:
        if not ended_under_it:
            ended_under_it.append(record)
            await first.sweep()
        return await end_run(self, record, state)

    monkeypatch.setattr(Engine, "end_run", end_run_after_the_other)
    await second.sweep()
    monkeypatch.undo()
    assert ended_under_it and (await first.get("order-7")).state is RunState.COMPLETE

    await first.delete("order-7")
    again = await first.submit(workflow, run_id="order-7")
    assert again.state is RunState.RUNNING
    await second.sweep()  # the same id, but none of this run's steps has run: nothing to end

    assert await states(first, "order-7") == (RunState.RUNNING, {"a": TaskState.NEW, "b": TaskState.NEW})
    for step in "ab":
        await finish(first.client, "order-7", step)
    await second.sweep()
    assert (await first.get("order-7")).state is RunState.COMPLETE


async def test_a_run_submitted_again_after_delete_is_released_by_its_new_definition(
    make_client: ClientFactory,
) -> None:
    releaser, submitter = Workflows(await make_client()), Workflows(await make_client())
    old = Workflow("v1").step("a", "t").step("b", "t", after="a")
    await submitter.submit(old, run_id="order-42")
    # A long-lived releaser carries the first run through (and so has read its definition).
    await finish(submitter.client, "order-42", "a")
    await releaser.sweep()
    await finish(submitter.client, "order-42", "b")
    await releaser.sweep()
    assert (await submitter.get("order-42")).state is RunState.COMPLETE

    await submitter.delete("order-42")
    new = Workflow("v2").step("a", "t").step("c", "t", after="a")
    await submitter.submit(new, run_id="order-42")
    await finish(submitter.client, "order-42", "a")
    await releaser.sweep()

    assert await states(submitter, "order-42") == (RunState.RUNNING, {"a": TaskState.COMPLETED, "c": TaskState.NEW})
    await finish(submitter.client, "order-42", "c")
    await releaser.sweep()
    assert (await submitter.get("order-42")).state is RunState.COMPLETE


# -- 2. retry racing another releaser's sweep ---------------------------------------------------------------------


async def test_a_sweep_the_moment_a_retried_run_reads_running_sees_its_steps_brought_back(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    flows, other = Workflows(await make_client()), Workflows(await make_client())
    workflow = Workflow("wide").step("a", "t").step("b", "t", after="a").step("c", "t", after="a")
    await flows.submit(workflow, run_id="r1")
    await finish(flows.client, "r1", "a", TaskState.TERMINATED, "boom")
    await flows.sweep()
    assert (await flows.get("r1")).state is RunState.FAILED

    # Another releaser sweeps right after the run is stored running again (its run event follows that write).
    publish = run_control.publish_run_event
    swept: list[int] = []

    async def sweep_first(client: asyncjobs.Client, record: RunRecord) -> None:
        swept.append(await other.sweep())
        await publish(client, record)

    monkeypatch.setattr(run_control, "publish_run_event", sweep_first)
    await flows.retry("r1")
    monkeypatch.undo()
    assert swept == [1]

    run = await flows.get("r1")
    assert (run.state, run.generation) == (RunState.RUNNING, 1)
    assert run.steps["a"].state == TaskState.NEW and await flows.client.staged.queued(tid("r1", "a"))
    await finish(flows.client, "r1", "a")
    await other.sweep()
    for step in "bc":
        await finish(flows.client, "r1", step)
    await other.sweep()
    assert await states(flows, "r1") == (RunState.COMPLETE, dict.fromkeys("abc", TaskState.COMPLETED))


# -- 3. cancel racing a release -----------------------------------------------------------------------------------


async def cancel_during_release(releaser: Workflows, canceller: Workflows, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``r1`` (``a`` then ``b``) up to b's release, with a cancel landing after b is stored ``new`` on the
    queue and before its work item is published."""
    client = releaser.client
    await releaser.submit(Workflow("wf").step("a", "t").step("b", "t", after="a"), run_id="r1")
    await finish(client, "r1", "a")
    release = client.staged.release
    cancelled: list[RunState] = []

    async def cancel_then_release(task: asyncjobs.Task, **options: Any) -> bool:
        if task.id == tid("r1", "b") and not cancelled:
            cancelled.append((await canceller.cancel("r1")).state)
        return await release(task, **options)

    monkeypatch.setattr(client.staged, "release", cancel_then_release)
    await releaser.sweep()
    monkeypatch.undo()
    assert cancelled == [RunState.CANCELLED]


async def test_a_cancel_between_a_steps_release_and_its_publish_leaves_no_work_item(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    releaser, canceller = Workflows(await make_client()), Workflows(await make_client())
    await cancel_during_release(releaser, canceller, monkeypatch)

    # Go's worker runs whatever item it receives, whatever the task's state: the item itself must be gone.
    assert not await releaser.client.staged.queued(tid("r1", "b"))
    run = await releaser.get("r1")
    assert run.state is RunState.CANCELLED
    status = run.steps["b"]
    assert (status.state, status.cancelled, status.last_error) == (TaskState.TERMINATED, True, CANCELLED)


@pytest.mark.timeout(60)
async def test_a_step_cancelled_during_its_release_never_reaches_go(
    go_peer: Path, nats_url: str, make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    releaser = Workflows(await make_client(queue=GO_QUEUE))
    await cancel_during_release(releaser, Workflows(await make_client(queue=GO_QUEUE)), monkeypatch)
    # Queued after anything left for b: one item at a time, Go would have run b before it.
    sentinel = await releaser.client.enqueue(asyncjobs.Task("go:sentinel"))
    go = await GoWorker(go_peer, nats_url, "--concurrency", "1").start()
    try:
        await eventually(lambda: go.calls(sentinel.id), timeout=GO_TIMEOUT_S, message="ajgo work to run the sentinel")
    finally:
        await go.stop()
    assert [call["id"] for call in go.handled] == [sentinel.id]


# -- 4. the sweep re-queueing from a stale read -------------------------------------------------------------------


async def test_the_sweep_does_not_queue_again_a_step_that_finished_after_it_was_read(
    flows: Workflows, client: asyncjobs.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    await flows.submit(Workflow("wf").step("a", "t").step("z", "t", after="a", trigger="all_done"), run_id="r1")

    # The sweep has read a `new`; a worker takes and finishes it before the sweep looks for its work item.
    queued = client.staged.queued
    finished: list[str] = []

    async def finish_then_look(task_id: str, **options: Any) -> bool:
        if task_id == tid("r1", "a") and not finished:
            finished.append(task_id)
            await finish(client, "r1", "a", TaskState.TERMINATED, "boom")
        return await queued(task_id, **options)

    monkeypatch.setattr(client.staged, "queued", finish_then_look)
    await flows.sweep()
    monkeypatch.undo()
    assert finished == [tid("r1", "a")]

    # An item for a finished step is one Go's worker would run a second time.
    assert not await client.staged.queued(tid("r1", "a"))
    task = await client.get_task(tid("r1", "a"))
    assert (task.state, task.last_err) == (TaskState.TERMINATED, "boom")
    await flows.sweep()
    assert await states(flows, "r1") == (RunState.RUNNING, {"a": TaskState.TERMINATED, "z": TaskState.NEW})


# -- 5. a delete cut short --------------------------------------------------------------------------------------


@pytest.mark.parametrize("delete_again", [True, False], ids=["deleted-again", "submitted-at-once"])
async def test_a_delete_cut_short_between_the_record_and_the_definition_frees_the_run_id(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch, delete_again: bool
) -> None:
    flows = Workflows(await make_client())
    await flows.submit(Workflow("w").step("a", "t"), run_id="r9")
    await flows.cancel("r9")

    # The process dies right after the first of the run's two keys is gone, whichever the delete takes first.
    keys = {run_key("r9"), DEFINITION_KEY_PREFIX + "r9"}
    delete = KeyValue.delete
    gone: list[str] = []

    async def delete_then_crash(self: KeyValue, key: str, *, revision: int | None = None) -> int:
        done = await delete(self, key, revision=revision)
        if key in keys and not gone:
            gone.append(key)
            raise Crash(f"killed after deleting {key}")
        return done

    monkeypatch.setattr(KeyValue, "delete", delete_then_crash)
    with pytest.raises(Crash):
        await flows.delete("r9")
    monkeypatch.undo()
    assert len(gone) == 1

    restarted = Workflows(await make_client())
    if delete_again:
        await restarted.delete("r9")
        bucket = await restarted.client.admin.ensure_bucket(RUNS_BUCKET)
        assert [await bucket.get(key) for key in sorted(keys)] == [None, None]
        with pytest.raises(WorkflowNotFound):
            await restarted.get("r9")

    run = await restarted.submit(Workflow("w2").step("z", "t"), run_id="r9")
    assert (run.state, run.name, list(run.steps)) == (RunState.RUNNING, "w2", ["z"])
    assert await states(restarted, "r9") == (RunState.RUNNING, {"z": TaskState.NEW})


# -- 6. one wedged run in the sweep (fixed in 82ab08a, before the review fixes) -----------------------------------


async def test_a_run_whose_queue_was_deleted_does_not_stop_the_sweep_of_the_others(
    make_client: ClientFactory, flows: Workflows, client: asyncjobs.Client
) -> None:
    legacy = await make_client(queue="OLD")
    await Workflows(legacy).submit(Workflow("legacy").step("x", "t"), run_id="r0")  # x is queued on OLD
    await legacy.admin.delete_queue("OLD")  # the queue is retired: looking for x's item fails from now on

    await flows.submit(Workflow("w").step("a", "t").step("b", "t", after="a"), run_id="r1")
    await finish(client, "r1", "a")  # its event lost: only the sweep can release b

    assert await flows.sweep() == 1  # r1; r0 is skipped (and logged), every time
    assert await client.staged.queued(tid("r1", "b"))
    assert await flows.sweep() == 1
    await finish(client, "r1", "b")
    await flows.sweep()
    assert (await flows.get("r1")).state is RunState.COMPLETE
    assert (await flows.get("r0")).state is RunState.RUNNING


# -- Found while writing the above (fixed since); each runs the race that once broke it ---------------------------


async def test_a_cancel_between_the_sweeps_requeue_and_its_publish_leaves_no_work_item(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    releaser, canceller = Workflows(await make_client()), Workflows(await make_client())
    client = releaser.client
    await releaser.submit(Workflow("wf").step("a", "t"), run_id="r1")
    assert await client.staged.withdraw(tid("r1", "a"))  # its item lost: the sweep queues it again
    release = client.staged.release
    cancelled: list[RunState] = []

    async def cancel_then_release(task: asyncjobs.Task, **options: Any) -> bool:
        if not cancelled:
            cancelled.append((await canceller.cancel("r1")).state)
        return await release(task, **options)

    monkeypatch.setattr(client.staged, "release", cancel_then_release)
    await releaser.sweep()
    monkeypatch.undo()
    assert cancelled == [RunState.CANCELLED]
    assert (await releaser.get("r1")).steps["a"].cancelled
    assert not await client.staged.queued(tid("r1", "a"))


async def test_two_submits_of_one_run_id_with_different_definitions_let_one_through(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = Workflows(await make_client()), Workflows(await make_client())
    create = KeyValue.create
    first_at_record, second_past_record = asyncio.Event(), asyncio.Event()
    records: list[str] = []

    # The first submit has stored its definition and is about to create the record; the second creates the record
    # first and waits for the first to finish before it goes on.
    async def create_in_turn(self: KeyValue, key: str, value: bytes) -> int:
        if key != run_key("r5"):
            return await create(self, key, value)
        records.append(key)
        if len(records) == 1:
            first_at_record.set()
            await second_past_record.wait()
            return await create(self, key, value)
        revision = await create(self, key, value)
        second_past_record.set()
        await asyncio.wait({one})  # whatever its outcome: it is the first submit's, not this one's
        return revision

    monkeypatch.setattr(KeyValue, "create", create_in_turn)
    one = asyncio.create_task(first.submit(Workflow("one").step("x", "t"), run_id="r5"))
    await first_at_record.wait()
    two = asyncio.create_task(second.submit(Workflow("two").step("y", "t"), run_id="r5"))
    two.add_done_callback(lambda _: second_past_record.set())  # it may stop before the record (DuplicateRun)
    outcomes = await asyncio.gather(one, two, return_exceptions=True)
    monkeypatch.undo()

    assert [type(outcome) for outcome in outcomes if isinstance(outcome, BaseException)] == [DuplicateRun]
    (winner,) = [outcome for outcome in outcomes if isinstance(outcome, WorkflowRun)]
    stored = await Workflows(await make_client()).get("r5")
    assert (stored.name, list(stored.steps)) == (winner.name, list(winner.steps))
    loser = "y" if winner.name == "one" else "x"
    assert not await first.client.staged.queued(tid("r5", loser))


async def test_a_submit_racing_a_delete_of_its_run_id_leaves_a_readable_run(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    flows, other = Workflows(await make_client()), Workflows(await make_client())
    workflow = Workflow("w").step("a", "t")
    await flows.submit(workflow, run_id="r7")
    await flows.cancel("r7")
    delete = KeyValue.delete
    submitted: list[WorkflowRun] = []

    async def submit_then_delete(self: KeyValue, key: str, *, revision: int | None = None) -> int:
        if key == DEFINITION_KEY_PREFIX + "r7" and not submitted:
            submitted.append(await other.submit(workflow, run_id="r7"))
        return await delete(self, key, revision=revision)

    monkeypatch.setattr(KeyValue, "delete", submit_then_delete)
    await flows.delete("r7")
    monkeypatch.undo()
    assert [run.state for run in submitted] == [RunState.RUNNING]

    run = await Workflows(await make_client()).get("r7")  # another process
    assert (run.state, list(run.steps)) == (RunState.RUNNING, ["a"])


# -- Second review: each test below failed before the fix "Workflows, second review fixes" (d60df56) -------------


def handling(engine: Engine) -> Releaser:
    """A releaser's event handling on ``engine``, fed events by hand (:func:`deliver`) instead of by its feed."""
    return Releaser(engine, sweep_interval=30.0, concurrency=1)


async def deliver(releaser: Releaser, client: asyncjobs.Client, run_id: str, step: str) -> None:
    """Hand ``releaser`` the event of a step's last save (its state as stored now), as its feed would."""
    task = await client.get_task(tid(run_id, step))
    await releaser.on_step_event(run_id, step, task.state, datetime.now(UTC))


# -- 7. a definition left by another incarnation of the run id ----------------------------------------------------


async def test_a_definition_left_behind_is_not_acted_on_while_the_submit_replaces_it(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    submitter, releaser = Workflows(await make_client()), Workflows(await make_client())
    old = Workflow("w").step("a", "t")
    new = Workflow("w").step("a", "t").step("b", "t", after="a")
    bucket = await submitter.client.admin.ensure_bucket(RUNS_BUCKET)
    # Left behind by a submit that died before creating its record (or by a delete cut short).
    await bucket.create(DEFINITION_KEY_PREFIX + "r1", orjson.dumps(old.to_dict()))

    # Another releaser sweeps between the new record's create and the put of its definition.
    put = KeyValue.put
    swept: list[int] = []

    async def sweep_then_put(self: KeyValue, key: str, value: bytes) -> int:
        if key == DEFINITION_KEY_PREFIX + "r1" and not swept:
            swept.append(await releaser.sweep())
        return await put(self, key, value)

    monkeypatch.setattr(KeyValue, "put", sweep_then_put)
    await submitter.submit(new, run_id="r1")
    monkeypatch.undo()
    assert len(swept) == 1

    # The releaser goes by the run's own definition: a's end releases b rather than ending the run complete.
    await finish(submitter.client, "r1", "a")
    await releaser.sweep()
    assert await states(submitter, "r1") == (RunState.RUNNING, {"a": TaskState.COMPLETED, "b": TaskState.NEW})
    await finish(submitter.client, "r1", "b")
    await releaser.sweep()
    assert (await submitter.get("r1")).state is RunState.COMPLETE


async def test_a_submit_repeated_after_dying_before_its_definition_replaces_the_one_left_behind(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    flows = Workflows(await make_client())
    old = Workflow("w").step("a", "t")
    new = Workflow("w").step("a", "t").step("b", "t", after="a")
    bucket = await flows.client.admin.ensure_bucket(RUNS_BUCKET)
    await bucket.create(DEFINITION_KEY_PREFIX + "r1", orjson.dumps(old.to_dict()))

    put = KeyValue.put
    crashed: list[str] = []

    async def crash_before_the_definition(self: KeyValue, key: str, value: bytes) -> int:
        if key == DEFINITION_KEY_PREFIX + "r1" and not crashed:
            crashed.append(key)
            raise Crash("killed between the run record's create and its definition's put")
        return await put(self, key, value)

    monkeypatch.setattr(KeyValue, "put", crash_before_the_definition)
    with pytest.raises(Crash):
        await flows.submit(new, run_id="r1")
    monkeypatch.undo()
    assert crashed

    await Workflows(await make_client()).submit(new, run_id="r1")  # the submitter, restarted, submits again
    other = Workflows(await make_client())  # another process reads and releases the run
    assert list((await other.get("r1")).steps) == ["a", "b"]
    await finish(other.client, "r1", "a")
    await other.sweep()
    assert await states(other, "r1") == (RunState.RUNNING, {"a": TaskState.COMPLETED, "b": TaskState.NEW})


# -- 8. a remembered blocker holding back a failure ---------------------------------------------------------------


async def test_a_parent_failing_reaches_a_fan_in_step_that_waited_for_another_parent(
    make_client: ClientFactory,
) -> None:
    client = await make_client()
    flows = Workflows(client)
    workflow = (
        Workflow("w")
        .step("a", "t")
        .step("b", "t")
        .step("d", "t")
        .step("c", "t", after=["a", "b", "d"])
        .step("e", "t", after="c")
    )
    await flows.submit(workflow, run_id="r1")
    releaser = handling(Engine(client))
    await finish(client, "r1", "d")
    await deliver(releaser, client, "r1", "d")  # c waits for a: the releaser remembers a as c's blocker

    await finish(client, "r1", "b", TaskState.TERMINATED, "boom")
    await deliver(releaser, client, "r1", "b")  # a is still pending, but b's failure decides c
    run = await flows.get("r1")
    assert {name: status.state for name, status in run.steps.items()} == {
        "a": TaskState.NEW,
        "b": TaskState.TERMINATED,
        "d": TaskState.COMPLETED,
        "c": TaskState.UNREACHABLE,
        "e": TaskState.UNREACHABLE,
    }
    assert run.steps["c"].last_error == f"task dependencies failed: task {tid('r1', 'b')} is terminated"


# -- 9. a decision landing in a generation it was not made for ----------------------------------------------------


async def test_a_decision_made_before_a_cancel_and_retry_does_not_land_in_the_new_generation(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    flows = Workflows(await make_client())
    await flows.submit(Workflow("w").step("p", "t").step("q", "t").step("c", "t", after=["p", "q"]), run_id="r1")
    await finish(flows.client, "r1", "q", TaskState.TERMINATED, "boom")

    # The releaser has read the run (generation 0) and q's failure; as it reads c, the run is cancelled and retried.
    engine = Engine(await make_client())
    load_task = Engine.load_task
    retried: list[int] = []

    async def retry_then_load(self: Engine, run_id: str, step: str) -> asyncjobs.Task | None:
        if self is engine and step == "c" and not retried:
            await flows.cancel(run_id)
            retried.append((await flows.retry(run_id)).generation)
        return await load_task(self, run_id, step)

    monkeypatch.setattr(Engine, "load_task", retry_then_load)
    await deliver(handling(engine), flows.client, "r1", "q")
    monkeypatch.undo()
    assert retried == [1]

    run = await flows.get("r1")
    assert (run.state, run.generation) == (RunState.RUNNING, 1)
    assert {name: status.state for name, status in run.steps.items()} == {
        "p": TaskState.NEW,
        "q": TaskState.NEW,
        "c": TaskState.BLOCKED,  # not unreachable for generation 0's q
    }
    for step in "pq":
        await finish(flows.client, "r1", step)
    await flows.sweep()
    assert (await flows.get("r1")).steps["c"].state == TaskState.NEW


# -- 10. retry and cancel fenced by the run's generation ----------------------------------------------------------


async def test_a_retry_overtaken_by_another_retry_resets_no_step(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = Workflows(await make_client()), Workflows(await make_client())
    await first.submit(Workflow("w").step("a", "t").step("b", "t", after="a"), run_id="r1")
    await finish(first.client, "r1", "a", TaskState.TERMINATED, "boom")
    await first.sweep()
    assert (await first.get("r1")).state is RunState.FAILED

    # `first` has read the failed run when `second` retries it, and the retried a fails again.
    require = run_control.require
    overtaken: list[str] = []

    async def retried_meanwhile(engine: Engine, run_id: str) -> tuple[RunRecord, Loaded]:
        found = await require(engine, run_id)
        if not overtaken:
            overtaken.append(run_id)  # before `second` retries: its own retry reads the run through here too
            assert (await second.retry(run_id)).generation == 1
            await finish(first.client, "r1", "a", TaskState.TERMINATED, "boom again")
        return found

    monkeypatch.setattr(run_control, "require", retried_meanwhile)
    with pytest.raises(RunStateError):
        await first.retry("r1")
    monkeypatch.undo()
    assert overtaken == ["r1"]

    # Generation 1's failure stands (a reset a would be released again by the next sweep, as if retried).
    task = await first.client.get_task(tid("r1", "a"))
    assert (task.state, task.last_err) == (TaskState.TERMINATED, "boom again")
    await second.sweep()
    run = await first.get("r1")
    assert (run.state, run.generation, run.steps["b"].state) == (RunState.FAILED, 1, TaskState.UNREACHABLE)


async def test_a_cancel_still_stopping_steps_leaves_alone_the_steps_of_a_retry_made_meanwhile(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    canceller, other = Workflows(await make_client()), Workflows(await make_client())
    await canceller.submit(Workflow("w").step("x", "t").step("y", "t"), run_id="r1")

    # One step per chunk, so the cancel can look at the run between x and y; the run is retried once x is stopped.
    monkeypatch.setattr(run_control, "LOAD_CONCURRENCY", 1)
    retried: list[int] = []

    async def retry_after_x(engine: Engine, run_id: str, name: str) -> bool:
        stopped = await cancel_step(engine, run_id, name)
        if name == "x" and not retried:
            retried.append((await other.retry(run_id)).generation)
        return stopped

    monkeypatch.setattr(run_control, "cancel_step", retry_after_x)
    await canceller.cancel("r1")
    monkeypatch.undo()
    assert retried == [1]

    run = await other.get("r1")
    assert (run.state, run.generation) == (RunState.RUNNING, 1)
    assert {name: (status.state, status.cancelled) for name, status in run.steps.items()} == {
        "x": (TaskState.NEW, False),
        "y": (TaskState.NEW, False),
    }
    assert await other.client.staged.queued(tid("r1", "y"))


# -- 11. an item left to a child by a release racing the cancel ---------------------------------------------------


async def test_a_final_event_of_a_cancelled_run_withdraws_the_item_a_racing_release_left_to_a_child(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await make_client()
    flows, canceller = Workflows(client), Workflows(await make_client())
    releaser = handling(Engine(client))
    await flows.submit(Workflow("wf").step("a", "t").step("b", "t", after="a"), run_id="r1")
    await finish(client, "r1", "a")

    # a's event releases b; the cancel lands between b's save and its publish, and this releaser dies before it
    # checks the run again (no recheck).
    release = client.staged.release
    cancelled: list[RunState] = []

    async def cancel_then_release(task: asyncjobs.Task, **options: Any) -> bool:
        if task.id == tid("r1", "b") and not cancelled:
            cancelled.append((await canceller.cancel("r1")).state)
        return await release(task, **options)

    async def died_before_the_recheck(engine: Engine, record: RunRecord, released: list[str]) -> None:
        return None

    monkeypatch.setattr(client.staged, "release", cancel_then_release)
    monkeypatch.setattr(run_engine, "recheck_cancel", died_before_the_recheck)
    await deliver(releaser, client, "r1", "a")
    monkeypatch.undo()
    assert cancelled == [RunState.CANCELLED]
    assert await client.staged.queued(tid("r1", "b"))  # what the race left: an item Go would run

    await deliver(handling(Engine(await make_client())), client, "r1", "a")  # a's event, given back, again
    assert not await client.staged.queued(tid("r1", "b"))
    status = (await flows.get("r1")).steps["b"]
    assert (status.state, status.cancelled, status.last_error) == (TaskState.TERMINATED, True, CANCELLED)


# -- 12. a request handed to a decision that then fails -----------------------------------------------------------


async def test_an_event_handed_to_a_decision_under_way_fails_when_that_decision_fails(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await make_client()
    flows = Workflows(client)
    await flows.submit(Workflow("w").step("a", "t").step("b", "t").step("c", "t", after=["a", "b"]), run_id="r1")
    for step in "ab":
        await finish(client, "r1", step)
    releaser = handling(Engine(client))

    # a's event decides c; b's event comes while that decision stores c and is handed to it; then the store fails.
    decide = Engine.decide
    handed = asyncio.Event()

    async def note_b(
        self: Engine, record: RunRecord, loaded: Loaded, name: str, *, first: str | None, since_ns: int | None
    ) -> Verdict:
        if first == "b":
            handed.set()  # decide() takes the request before it first waits, so before anyone wakes up on this
        return await decide(self, record, loaded, name, first=first, since_ns=since_ns)

    update = client.staged.update
    b_event: list[asyncio.Task[None]] = []

    async def outage_while_b_comes(task: asyncjobs.Task) -> asyncjobs.Task:
        if task.id == tid("r1", "c") and not b_event:
            b_event.append(asyncio.create_task(deliver(releaser, client, "r1", "b")))
            await handed.wait()
            raise asyncjobs.JetStreamUnavailable("JetStream is down: c could not be stored")
        return await update(task)

    monkeypatch.setattr(Engine, "decide", note_b)
    monkeypatch.setattr(client.staged, "update", outage_while_b_comes)
    with pytest.raises(asyncjobs.JetStreamUnavailable):
        await deliver(releaser, client, "r1", "a")
    # b's event fails with it (any AsyncJobsError: the releaser gives the event back, to be handled again).
    with pytest.raises(asyncjobs.AsyncJobsError):
        await b_event[0]
    monkeypatch.undo()

    await deliver(releaser, client, "r1", "b")  # b's event again: c is released
    assert (await flows.get("r1")).steps["c"].state == TaskState.NEW
    assert await client.staged.queued(tid("r1", "c"))
