"""Submitting a run: its record, its definition, every step's task, then the roots' work items.

The order makes a crash at any point safe:

1. the record is created (``submitted`` false) and the definition stored beside it;
2. every step's task is staged, children ``blocked`` with their parents' task ids as ``dependencies``, roots
   ``new``; the tasks' ids and ``created`` time come from the run, so staging them again matches the stored copies;
3. the roots are released (their work items published);
4. the record is marked ``submitted``.

A submit repeated with the same run id resumes from wherever the first one stopped, and a releaser's sweep does the
same for a run left half-submitted (:data:`~asyncjobs_workflows.constants.SUBMIT_GRACE_S` after it was created).
Children are stored before any root can run, so a root's completion always finds its children.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging

import orjson

from asyncjobs import DuplicateTaskError, Task, TaskConflict, TaskState
from asyncjobs.constants import DEFAULT_MAX_TRIES
from asyncjobs.metrics import METRICS
from asyncjobs.wiretime import WireTime
from asyncjobs_workflows.constants import DEFINITION_KEY_PREFIX
from asyncjobs_workflows.definition import Workflow
from asyncjobs_workflows.engine import Engine, Loaded
from asyncjobs_workflows.errors import DuplicateRun, InvalidWorkflow, WorkflowError
from asyncjobs_workflows.graph import Graph
from asyncjobs_workflows.record import RunRecord, RunState, run_key, step_task_id
from asyncjobs_workflows.runevents import publish_run_event
from asyncjobs_workflows.stopping import cancel_step

__all__ = ["complete_submission", "queue_root", "step_tasks", "submit_run"]

log = logging.getLogger("asyncjobs.workflows")

# Room left in a message for the subject and headers of a definition's save.
_ENVELOPE_BYTES = 512


def step_tasks(record: RunRecord, workflow: Workflow) -> dict[str, Task]:
    """The task each step of a run stores, built the same way on every call (ids, ``created``, contents)."""
    tasks: dict[str, Task] = {}
    for step in workflow.steps.values():
        task = Task(
            step.task_type,
            step.payload,
            id=step_task_id(record.id, step.name),
            max_tries=DEFAULT_MAX_TRIES if step.max_tries is None else step.max_tries,
            dependencies=[step_task_id(record.id, parent) for parent in step.after],
            load_dependencies=step.load_dependencies,
        )
        task.created_at = record.created
        tasks[step.name] = task
    return tasks


async def submit_run(engine: Engine, workflow: Workflow, run_id: str) -> tuple[RunRecord, dict[str, Task]]:
    """Store a new run of ``workflow`` and release its roots; resume it if this very run was submitted before.

    Raises:
        InvalidWorkflow: the definition is invalid or too large to store.
        DuplicateRun: a run with that id exists with another definition or queue.
    """
    workflow.validate()
    definition = orjson.dumps(workflow.to_dict())
    max_payload = engine.client.nc.max_payload
    if max_payload and len(definition) > max_payload - _ENVELOPE_BYTES:
        raise InvalidWorkflow(
            f"workflow {workflow.name!r} encodes to {len(definition)} bytes, over the NATS server's max_payload of "
            f"{max_payload} bytes: keep large payloads elsewhere and pass references, or split the workflow"
        )
    kv = await engine.kv()
    queue = engine.client.queue.name
    # The definition first, so a run record always has its definition beside it. Whoever creates the record owns
    # the run and writes its definition again (a definition left behind by a delete cut short is replaced, and a
    # delete racing this submit sees the definition change under it); the record's digest of the definition is
    # what any other submit of the run id is compared with.
    definition_key = DEFINITION_KEY_PREFIX + run_id
    digest = hashlib.sha256(definition).hexdigest()
    with contextlib.suppress(TaskConflict):
        await kv.create(definition_key, definition)
    record = RunRecord(
        id=run_id, workflow=workflow.name, queue=queue, state=RunState.RUNNING, created=WireTime.now(), digest=digest
    )
    try:
        revision = await kv.create(run_key(run_id), record.encode())
    except TaskConflict:
        existing = await engine.load_record(run_id)
        if existing is None:
            raise WorkflowError(
                f"workflow run {run_id} was deleted while it was submitted again: submit it again"
            ) from None
        stored = await kv.get(definition_key)
        if existing.digest:
            same = existing.digest == digest
        else:  # a record written before records kept the digest: compare with the stored definition
            same = stored is None or orjson.loads(stored.value) == orjson.loads(definition)
        if not same:
            raise _duplicate(run_id, f"workflow {existing.workflow!r}") from None
        if existing.queue != queue:
            raise _duplicate(run_id, f"queue {existing.queue!r}") from None
        if stored is None or hashlib.sha256(stored.value).hexdigest() != digest:
            await kv.put(definition_key, definition)  # the first submit stopped between its record and definition
        record = existing
    else:
        record = record.with_changes(revision=revision)
        await kv.put(definition_key, definition)
        METRICS.workflow_runs_started.labels(workflow.name).inc()
        log.info("run %s of workflow %s submitted with %d steps", run_id, workflow.name, len(workflow.steps))
    loaded = Loaded(workflow, Graph(workflow))
    engine.remember(record, loaded)
    if record.submitted:
        return record, await _current(engine, record, workflow)
    return await complete_submission(engine, record, loaded)


def _duplicate(run_id: str, what: str) -> DuplicateRun:
    return DuplicateRun(
        f"workflow run {run_id} already exists with another definition or queue ({what}): pick another run id, or "
        "leave run_id= out for a new one"
    )


async def complete_submission(engine: Engine, record: RunRecord, loaded: Loaded) -> tuple[RunRecord, dict[str, Task]]:
    """Stage every step's task, release the roots and mark the run submitted (all of it idempotent).

    Raises:
        WorkflowError: a step's task could not be stored (the run stays half-submitted, for a retry or a sweep).
    """
    staged = engine.client.staged
    workflow, graph = loaded.workflow, loaded.graph
    tasks = step_tasks(record, workflow)
    children = [tasks[name] for name in graph.order if workflow.steps[name].after]
    roots = [tasks[name] for name in graph.roots]
    for batch in (children, roots):
        outcomes = await staged.stage_many(batch, return_exceptions=True)
        # A step released before (its deadline set) no longer matches its template: it is ours all the same, since
        # its id holds the run id, which the record's create made ours.
        failures = [o for o in outcomes if isinstance(o, Exception) and not isinstance(o, DuplicateTaskError)]
        if failures:
            raise WorkflowError(
                f"workflow run {record.id}: {len(failures)} step task(s) could not be stored, the first: "
                f"{failures[0]}: submit again with run_id={record.id!r}, or leave it to a releaser's sweep"
            ) from failures[0]
    for name in graph.roots:
        await queue_root(engine, record, loaded, name, tasks[name])
    kv = await engine.kv()
    marked = record.with_changes(submitted=True)
    try:
        revision = await kv.update(run_key(record.id), marked.encode(), revision=record.revision)
    except TaskConflict:
        current = await engine.load_record(record.id)
        if current is None:
            raise WorkflowError(f"workflow run {record.id} was deleted while it was submitted") from None
        marked = current  # another submitter (or a sweep) marked it
    else:
        marked = marked.with_changes(revision=revision)
        await publish_run_event(engine.client, marked)
    if marked.state is RunState.CANCELLED:
        # Cancelled while it was being submitted: the cancel may have looked at the steps before they were stored.
        for name in graph.order:
            await cancel_step(engine, record.id, name)
        return marked, tasks
    # Steps may all have ended before the run was marked submitted, when no releaser could end it.
    marked = await engine.finish_if_done(marked, loaded)
    return marked, tasks


async def _current(engine: Engine, record: RunRecord, workflow: Workflow) -> dict[str, Task]:
    stored = await engine.tasks(record.id, workflow.steps)
    return {name: task for name, task in stored.items() if task is not None}


async def queue_root(engine: Engine, record: RunRecord, loaded: Loaded, name: str, task: Task) -> None:
    """Queue a root step's staged task, or finish an earlier attempt at it (its item is deduplicated)."""
    if task.state != TaskState.NEW:
        return  # running or ended already
    if task.queue:
        await engine.client.staged.release(task)  # released before: publish its item again, deduplicated
        return
    try:
        await engine.release(record, loaded.workflow.steps[name], task, parents={}, since_ns=None)
    except TaskConflict:
        log.debug("run %s: root step %s was queued by someone else meanwhile", record.id, name)
