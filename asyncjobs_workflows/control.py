"""Run control: reading a run's status, cancelling a run, and retrying a failed or cancelled one.

Cancel stores the run ``cancelled`` first, so that no releaser releases anything after it, then stops every step
that has not started: a blocked step is stored ``terminated`` (marked cancelled), a queued one also has its work
item withdrawn, so no worker, Go or Python, picks it up. Steps already running finish; their children stay put.

Retry brings back every step that did not complete (failed, unreachable, skipped, cancelled), in topological order
so a parent is back before its children, as ``blocked`` with a clean slate (no result, ``tries`` 0); then every
blocked step whose parents are final is decided, which releases the roots and the children of completed steps.
Completed steps keep their results, which their children receive again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime

from asyncjobs import Task, TaskConflict, TaskNotFound, TaskState
from asyncjobs.wiretime import parse_time
from asyncjobs_workflows.constants import DECIDE_ATTEMPTS, DEFINITION_KEY_PREFIX, LOAD_CONCURRENCY, STARTED_KEY_PREFIX
from asyncjobs_workflows.decide import Verdict
from asyncjobs_workflows.definition import Trigger
from asyncjobs_workflows.engine import Engine, Loaded
from asyncjobs_workflows.errors import RunStateError, WorkflowError, WorkflowNotFound
from asyncjobs_workflows.record import RunRecord, RunState, run_key, step_of_started_key, step_task_id
from asyncjobs_workflows.runevents import publish_run_event
from asyncjobs_workflows.status import Outcome, StepStatus, WorkflowRun, outcome_of
from asyncjobs_workflows.stopping import cancel_step, recheck_cancel
from asyncjobs_workflows.submission import queue_root

__all__ = ["cancel_run", "decide_blocked", "delete_run", "retry_run", "snapshot"]

log = logging.getLogger("asyncjobs.workflows")

REQUEUE_ID_BUCKET_NS = 10_000_000_000


async def require(engine: Engine, run_id: str) -> tuple[RunRecord, Loaded]:
    """The run's record and definition.

    Raises:
        WorkflowNotFound: no run has that id.
    """
    record = await engine.load_record(run_id)
    loaded = None if record is None else await engine.loaded(record)
    if record is None or loaded is None:
        raise WorkflowNotFound(f"no workflow run has id {run_id!r}: list runs with Workflows.list()")
    return record, loaded


async def snapshot(engine: Engine, record: RunRecord, loaded: Loaded) -> WorkflowRun:
    """The run and the status of each of its steps, as stored now."""
    tasks = await engine.tasks(record.id, loaded.workflow.steps)
    started = await _started_times(engine, record.id, loaded)
    steps: dict[str, StepStatus] = {}
    for name in loaded.workflow.steps:
        task = tasks.get(name)
        if task is None:
            continue  # not stored yet (a half-submitted run) or erased (task retention)
        steps[name] = StepStatus.of(name, task, started.get(name))
    return WorkflowRun(record, loaded.workflow, steps)


async def _started_times(engine: Engine, run_id: str, loaded: Loaded) -> dict[str, datetime]:
    found: dict[str, datetime] = {}
    prefix = f"{STARTED_KEY_PREFIX}{run_id}."
    for entry in await (await engine.kv()).entries(prefix + ">"):
        name = step_of_started_key(entry.key[len(prefix) :])
        if name not in loaded.workflow.steps:
            continue
        try:
            found[name] = parse_time(entry.value.decode()).to_datetime()
        except (ValueError, UnicodeDecodeError):
            continue
    return found


async def cancel_run(engine: Engine, run_id: str) -> RunRecord:
    """Cancel a run: store it ``cancelled``, then stop every step that has not started.

    Cancelling a cancelled run stops its steps again (a cancel cut short by a crash is finished this way).

    Raises:
        WorkflowNotFound: no run has that id.
        RunStateError: the run already completed or failed.
    """
    for _ in range(DECIDE_ATTEMPTS):
        record, loaded = await require(engine, run_id)
        if record.state in (RunState.COMPLETE, RunState.FAILED):
            raise RunStateError(
                f"workflow run {run_id} already ended {record.state.value}: there is nothing left to cancel"
            )
        if record.state is RunState.RUNNING:
            record = await engine.end_run(record, RunState.CANCELLED)
            if record.state is not RunState.CANCELLED:
                continue  # it ended on its own meanwhile: look again
        break
    else:
        raise RunStateError(f"workflow run {run_id} kept changing while it was cancelled: cancel it again")
    names = list(loaded.graph.order)
    for start in range(0, len(names), LOAD_CONCURRENCY):
        if start:
            current = await engine.load_record(run_id)
            if current is None or current.generation != record.generation or current.state is not RunState.CANCELLED:
                break  # retried (or deleted) meanwhile: the steps are not this cancel's any more
        chunk = names[start : start + LOAD_CONCURRENCY]
        await asyncio.gather(*(cancel_step(engine, run_id, name) for name in chunk))
    return record


async def retry_run(engine: Engine, run_id: str) -> RunRecord:
    """Run again every step of a failed or cancelled run that did not complete.

    Raises:
        WorkflowNotFound: no run has that id.
        RunStateError: the run is running or complete.
    """
    record, loaded = await require(engine, run_id)
    if record.state in (RunState.RUNNING, RunState.COMPLETE):
        hint = "wait for it or cancel it first" if record.state is RunState.RUNNING else "nothing failed"
        raise RunStateError(
            f"workflow run {run_id} is {record.state.value}: only failed or cancelled runs can be retried ({hint})"
        )
    # First the record's generation, still failed or cancelled: a second retry (or a cancel still at work) that read
    # the run before is fenced off by it. Then the steps, while no releaser looks at the run, so whoever reads it
    # running at the new generation sees only steps brought back. A retry cut short leaves a failed run that a retry
    # finishes.
    kv = await engine.kv()
    fenced = record.with_changes(generation=record.generation + 1)
    try:
        fenced = fenced.with_changes(
            revision=await kv.update(run_key(run_id), fenced.encode(), revision=record.revision)
        )
    except TaskConflict:
        raise RunStateError(f"workflow run {run_id} changed while it was retried: look at it again") from None
    for name in loaded.graph.order:  # parents before children: see the module docstring
        await _reset(engine, run_id, name)
    revived = fenced.with_changes(state=RunState.RUNNING, finished=None)
    try:
        revision = await kv.update(run_key(run_id), revived.encode(), revision=fenced.revision)
    except TaskConflict:
        raise RunStateError(f"workflow run {run_id} changed while it was retried: look at it again") from None
    revived = revived.with_changes(revision=revision)
    engine.forget(run_id)
    await publish_run_event(engine.client, revived)
    await decide_blocked(engine, revived, loaded)
    return await engine.finish_if_done(revived, loaded)


async def _reset(engine: Engine, run_id: str, name: str) -> None:
    for _ in range(DECIDE_ATTEMPTS):
        task = await engine.load_task(run_id, name)
        if task is None:
            raise WorkflowError(f"workflow run {run_id}: the task of step {name!r} is gone (task retention?)")
        if outcome_of(task) in (Outcome.COMPLETE, Outcome.PENDING):
            return  # completed steps keep their results; steps still queued or running go on
        _clean(task)
        try:
            await engine.client.staged.update(task)
        except TaskConflict:
            continue
        return
    raise RunStateError(f"workflow run {run_id}: step {name!r} kept changing while it was retried: retry again")


def _clean(task: Task) -> None:
    task.state = TaskState.BLOCKED
    task.queue = ""  # on no queue until released again: no reconciler takes it for a lost item
    task.result = None
    task.dependency_results = {}
    task.tries = 0
    task.last_err = ""
    task.tried_at = None
    task.deadline_at = None


async def decide_blocked(engine: Engine, record: RunRecord, loaded: Loaded) -> None:
    """Decide every blocked step of a running run whose parents have ended, parents first (after a retry, and in a
    releaser's sweep).

    A released step that lost its work item (a crash between its update and its release) is queued again.
    """
    order = loaded.graph.order
    tasks = await engine.tasks(record.id, order)
    outcomes = {name: engine.note(record, name, task) for name, task in tasks.items()}
    released: list[str] = []
    for name in order:
        task = tasks[name]
        if task is None:
            continue
        if task.state == TaskState.BLOCKED:
            step = loaded.workflow.steps[name]
            failed = [p for p in step.after if outcomes[p] is Outcome.FAILED and step.trigger is Trigger.ALL_SUCCESS]
            if not failed and any(outcomes[parent] is Outcome.PENDING for parent in step.after):
                continue  # its parents' events decide it
            first = failed[0] if failed else None
            verdict = await engine.decide(record, loaded, name, first=first, since_ns=None)
            if verdict is Verdict.RUN:
                released.append(name)
            if verdict in (Verdict.SKIP, Verdict.UNREACHABLE):
                outcomes[name] = Outcome.SKIPPED if verdict is Verdict.SKIP else Outcome.FAILED
                await engine.settle(record, loaded, name, since_ns=None)
        elif task.state == TaskState.NEW and not task.queue:
            await queue_root(engine, record, loaded, name, task)  # a root whose submit stopped short
            released.append(name)
        elif task.state == TaskState.NEW and not await engine.client.staged.queued(task.id, queue=task.queue):
            log.info("workflow run %s: step %s was released but its work item is missing: queueing it", record.id, name)
            # Not under the release's own id: the server would drop the item as a duplicate of the lost one for its
            # duplicate window. Sweeps in the same few seconds still share one id.
            current = await engine.load_task(record.id, name)
            if current is None or current.seq != task.seq:
                continue  # it moved on since it was read (a worker took it): its item was not lost
            bucket = time.time_ns() // REQUEUE_ID_BUCKET_NS
            await engine.client.staged.release(current, msg_id=f"{task.id}:q{task.seq}:{bucket}")
            released.append(name)
    await recheck_cancel(engine, record, released)


async def delete_run(engine: Engine, run_id: str) -> None:
    """Erase an ended run: its step tasks, its start times, its record, and its definition last.

    A delete cut short by a crash leaves the record or the definition, so deleting again finishes it.

    Raises:
        WorkflowNotFound: no run has that id.
        RunStateError: the run is still running.
    """
    kv = await engine.kv()
    record = await engine.load_record(run_id)
    loaded = None
    if record is not None:
        with contextlib.suppress(WorkflowError):  # a definition not its own: the tasks it names are not the run's
            loaded = await engine.loaded(record)
    if record is not None and record.state is RunState.RUNNING:
        raise RunStateError(f"workflow run {run_id} is running: cancel it first, or wait for it to end")
    definition = await kv.get(DEFINITION_KEY_PREFIX + run_id)
    if record is None and definition is None:
        raise WorkflowNotFound(f"no workflow run has id {run_id!r}: list runs with Workflows.list()")
    if loaded is not None:
        names = list(loaded.graph.order)
        for start in range(0, len(names), LOAD_CONCURRENCY):
            chunk = names[start : start + LOAD_CONCURRENCY]
            await asyncio.gather(*(_delete_task(engine, step_task_id(run_id, name)) for name in chunk))
    for entry in await kv.entries(f"{STARTED_KEY_PREFIX}{run_id}.>"):
        await kv.delete(entry.key)
    if record is not None:
        try:
            await kv.delete(run_key(run_id), revision=record.revision)
        except TaskConflict:
            raise RunStateError(f"workflow run {run_id} changed while it was deleted: look at it again") from None
    if definition is not None:
        # Only the definition read above: a submit of the run id since then wrote its own, which stays.
        with contextlib.suppress(TaskConflict):
            await kv.delete(DEFINITION_KEY_PREFIX + run_id, revision=definition.revision)
    engine.forget(run_id, definition=True)


async def _delete_task(engine: Engine, task_id: str) -> None:
    with contextlib.suppress(TaskNotFound):  # erased already (a delete repeated, or task retention)
        await engine.client.delete_task(task_id)
