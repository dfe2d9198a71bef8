"""The release engine: given a step that reached a final state, decide what its children do, and end the run.

Every decision is a compare-and-set write on the child's task, from ``blocked`` to ``new`` (released: its work
item is then published), ``unreachable`` (a parent failed) or ``terminated`` with the skip marker (skipped). The
task store is the one source of truth and a write only lands on the copy the decider read, so any number of
releasers can decide at once and a child is released at most once. A decider that loses the race reads the child
again and finds it decided.

Outcomes that are final stay final within a run's generation (only a retry of the run brings a step back), so each
engine remembers them per ``(run, generation)``: deciding a fan-in step with 1,000 parents does not read 1,000
tasks each time one of them completes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

import orjson

from asyncjobs import Client, ConfigurationError, Task, TaskConflict, TaskNotFound, TaskState
from asyncjobs.kv import KeyValue
from asyncjobs.metrics import METRICS
from asyncjobs.wiretime import NS_PER_SECOND, WireTime
from asyncjobs_workflows.conditions import evaluate_all
from asyncjobs_workflows.constants import (
    DECIDE_ATTEMPTS,
    DEFINITION_KEY_PREFIX,
    DEPENDENCY_FAILED_PREFIX,
    LOAD_CONCURRENCY,
    RELEASE_CONCURRENCY,
    RUNS_BUCKET,
    RUNS_BUCKET_DESCRIPTION,
    SKIPPED_PREFIX,
)
from asyncjobs_workflows.decide import Scan, Verdict
from asyncjobs_workflows.definition import Step, Trigger, Workflow
from asyncjobs_workflows.errors import WorkflowError
from asyncjobs_workflows.graph import Graph
from asyncjobs_workflows.record import RunRecord, RunState, run_key, step_task_id
from asyncjobs_workflows.runevents import publish_run_event
from asyncjobs_workflows.status import Outcome, outcome_of
from asyncjobs_workflows.stopping import recheck_cancel

__all__ = ["Engine", "Loaded"]

log = logging.getLogger("asyncjobs.workflows")

CACHED_RUNS: Final = 1_000
"""Runs whose definitions and final outcomes an engine remembers; the least recently used are forgotten."""
CACHED_BLOCKERS: Final = 100_000
"""Waiting steps whose blocking parent an engine remembers."""


@dataclass(slots=True)
class Loaded:
    """A run's definition and the graph derived from it."""

    workflow: Workflow
    graph: Graph


class Engine:
    """Decides and applies step releases for one client; shared by the submitter, the releaser and run control."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._kv: KeyValue | None = None
        self._loaded: OrderedDict[tuple[str, int], Loaded] = OrderedDict()
        self._finals: OrderedDict[tuple[str, int, int], dict[str, Outcome]] = OrderedDict()
        self._prepared = False
        self._prepare_lock = asyncio.Lock()
        self._deciding: dict[tuple[str, int, int, str], tuple[list[str | None], asyncio.Future[None]]] = {}
        self._blocked_by: OrderedDict[tuple[str, int, int, str], str] = OrderedDict()
        """For a step found waiting: the parent it waited for (the next decision looks at that parent first)."""

    # -- storage ------------------------------------------------------------------------------------------------

    async def kv(self) -> KeyValue:
        """The runs bucket, created when missing."""
        if self._kv is None:
            async with self._prepare_lock:
                if self._kv is None:
                    self._kv = await self.client.admin.ensure_bucket(RUNS_BUCKET, description=RUNS_BUCKET_DESCRIPTION)
        return self._kv

    async def load_record(self, run_id: str) -> RunRecord | None:
        """The run's record, or ``None`` when no run has that id."""
        entry = await (await self.kv()).get(run_key(run_id))
        return None if entry is None else RunRecord.decode(entry.value, revision=entry.revision)

    async def loaded(self, record: RunRecord) -> Loaded | None:
        """The run's definition and graph, or ``None`` when not stored.

        Remembered per incarnation of the run (its id and creation time): a run id deleted and submitted again
        with another definition is read afresh.

        Raises:
            WorkflowError: the stored definition is not the one the record was submitted with (a submit is still
                writing it, or died before it did; submitting again repairs it).
        """
        key = (record.id, record.created.unix_ns)
        cached = self._loaded.get(key)
        if cached is not None:
            self._loaded.move_to_end(key)
            return cached
        entry = await (await self.kv()).get(DEFINITION_KEY_PREFIX + record.id)
        if entry is None:
            return None
        if record.digest and hashlib.sha256(entry.value).hexdigest() != record.digest:
            # Another incarnation's definition, not yet replaced by this run's submitter: never act on it.
            raise WorkflowError(
                f"workflow run {record.id}: the definition stored for it is not the one it was submitted with (its "
                "submit is still writing it, or died first): submit it again with the same run_id and workflow"
            )
        workflow = Workflow.from_dict(orjson.loads(entry.value))
        loaded = Loaded(workflow, Graph(workflow))
        self.remember(record, loaded)
        return loaded

    def remember(self, record: RunRecord, loaded: Loaded) -> None:
        """Keep a run's definition (the submitter knows it without reading it)."""
        key = (record.id, record.created.unix_ns)
        self._loaded[key] = loaded
        self._loaded.move_to_end(key)
        while len(self._loaded) > CACHED_RUNS:
            self._loaded.popitem(last=False)

    def forget(self, run_id: str, *, definition: bool = False) -> None:
        """Drop what is remembered of a run's outcomes (it ended, or it is retried), and its definition if asked."""
        for key in [key for key in self._finals if key[0] == run_id]:
            del self._finals[key]
        if definition:
            for loaded_key in [key for key in self._loaded if key[0] == run_id]:
                del self._loaded[loaded_key]

    async def load_task(self, run_id: str, step: str) -> Task | None:
        """A step's task, or ``None`` when it is not stored (not yet submitted, or erased)."""
        try:
            return await self.client.get_task(step_task_id(run_id, step))
        except TaskNotFound:
            return None

    async def outcome(self, record: RunRecord, step: str) -> Outcome:
        """How a step stands: remembered when final, else read from its task."""
        finals = self._finals_of(record)
        known = finals.get(step)
        if known is not None:
            return known
        task = await self.load_task(record.id, step)
        return self.note(record, step, task)

    def note(self, record: RunRecord, step: str, task: Task | None) -> Outcome:
        """The outcome of a step's freshly read task, remembered when final (a missing task counts as failed)."""
        outcome = Outcome.FAILED if task is None else outcome_of(task)
        if outcome is not Outcome.PENDING:
            self._finals_of(record)[step] = outcome
        return outcome

    def _finals_of(self, record: RunRecord) -> dict[str, Outcome]:
        key = (record.id, record.created.unix_ns, record.generation)
        finals = self._finals.get(key)
        if finals is None:
            finals = self._finals[key] = {}
            while len(self._finals) > CACHED_RUNS:
                self._finals.popitem(last=False)
        else:
            self._finals.move_to_end(key)
        return finals

    # -- deciding -----------------------------------------------------------------------------------------------

    async def settle(self, record: RunRecord, loaded: Loaded, step: str, since_ns: int | None) -> bool:
        """Decide the children of ``step`` (now final), then theirs when they end at once (unreachable, skipped).

        Args:
            record: the run, as read for this decision.
            loaded: its definition.
            step: the step that reached a final state.
            since_ns: when that state was stored (for the release latency), if known.

        Returns:
            Whether a child is still waiting for a parent (the run cannot have ended, so nobody needs to look).
        """
        waiting = False
        work = [step]
        while work:
            parent = work.pop()
            children = loaded.graph.children[parent]
            for start in range(0, len(children), RELEASE_CONCURRENCY):
                chunk = children[start : start + RELEASE_CONCURRENCY]
                verdicts = await asyncio.gather(
                    *(self.decide(record, loaded, child, first=parent, since_ns=since_ns) for child in chunk)
                )
                work.extend(child for child, v in zip(chunk, verdicts, strict=True) if v in _ENDS_AT_ONCE)
                # A decision handed to one under way (PASSED) ends in that one's event, which looks at the run.
                waiting = waiting or Verdict.WAIT in verdicts or Verdict.PASSED in verdicts
                await recheck_cancel(
                    self, record, [c for c, v in zip(chunk, verdicts, strict=True) if v is Verdict.RUN]
                )
        return waiting

    async def decide(
        self, record: RunRecord, loaded: Loaded, name: str, *, first: str | None, since_ns: int | None
    ) -> Verdict:
        """Decide one step if it is still ``blocked``, and apply the decision; returns the decision applied.

        ``first`` is the parent to look at first (the one whose event brought us here): a failed parent is then
        seen before a pending one, so a failure reaches its descendants at once.

        Within an engine one decision per step runs at a time: a request that comes while one runs (the parents of
        a fan-in ending together) is handed to it, and it decides again when it would otherwise wait, so the
        parents are not all read once per parent.
        """
        key = (record.id, record.created.unix_ns, record.generation, name)
        busy = self._deciding.get(key)
        if busy is not None:
            asked, done = busy
            asked.append(first)
            try:
                await asyncio.shield(done)  # its outcome is ours: a failure there must fail this event too
            except Exception as exc:
                raise WorkflowError(
                    f"run {record.id}: the decision on step {name} this event was handed to failed: {exc}"
                ) from exc
            return Verdict.PASSED
        asked, done = [], asyncio.get_running_loop().create_future()
        self._deciding[key] = (asked, done)
        try:
            firsts: list[str | None] = [first]
            while True:
                verdict = await self._decide_once(record, loaded, name, firsts=firsts, since_ns=since_ns)
                if verdict is not Verdict.WAIT or not asked:
                    done.set_result(None)
                    return verdict
                firsts, asked[:] = list(asked), []
        except BaseException as exc:
            done.set_exception(exc if isinstance(exc, Exception) else WorkflowError("decision interrupted"))
            done.exception()  # retrieved here, so an unawaited failure is not reported as never retrieved
            raise
        finally:
            del self._deciding[key]

    async def _decide_once(
        self, record: RunRecord, loaded: Loaded, name: str, *, firsts: list[str | None], since_ns: int | None
    ) -> Verdict:
        step = loaded.workflow.steps[name]
        front = [parent for parent in dict.fromkeys(firsts) if parent is not None]
        parents = (*front, *(parent for parent in step.after if parent not in front))
        key = (record.id, record.created.unix_ns, record.generation, name)
        blocker = self._blocked_by.get(key)
        failing = step.trigger is Trigger.ALL_SUCCESS and any(
            self._finals_of(record).get(parent) is Outcome.FAILED for parent in front
        )
        if (
            blocker is not None
            and blocker not in front
            and not failing  # a failure among the parents asked about decides at once, whatever else waits
            and await self.outcome(record, blocker) is Outcome.PENDING
        ):
            # The parent it waited for last time has still not ended (read afresh unless known final), so the answer
            # is still to wait: no need to read the step itself (a fan-in's task holds every parent's id).
            return Verdict.WAIT
        self._blocked_by.pop(key, None)
        for _ in range(DECIDE_ATTEMPTS):
            task = await self.load_task(record.id, name)
            if task is None or task.state != TaskState.BLOCKED:
                if task is not None:
                    self.note(record, name, task)
                return Verdict.DECIDED
            scan = Scan(step.trigger)
            pending = None
            for parent in parents:
                outcome = await self.outcome(record, parent)
                if not scan.add(parent, outcome):
                    pending = parent if outcome is Outcome.PENDING else None
                    break
            verdict = scan.verdict()
            if verdict is Verdict.WAIT and pending is not None:
                self._blocked_by[key] = pending
                while len(self._blocked_by) > CACHED_BLOCKERS:
                    self._blocked_by.popitem(last=False)
            if verdict is not Verdict.WAIT and not await self._still_current(record):
                return Verdict.DECIDED  # the run was cancelled or retried since it was read: not ours to decide
            try:
                return await self._apply(record, step, task, verdict, scan.cause, since_ns)
            except TaskConflict:
                continue  # someone else changed it: read it again and decide again
        log.warning("run %s: step %s kept changing under us; the next sweep decides it", record.id, name)
        return Verdict.DECIDED

    async def _still_current(self, record: RunRecord) -> bool:
        """Whether the run still reads as ``record`` did (running, same incarnation and generation).

        Read after the step itself: a step read at a generation that the run still has belongs to that generation, so
        outcomes remembered for it apply (a retry brings every step back before the run reads running again).
        """
        current = await self.load_record(record.id)
        return (
            current is not None
            and current.state is RunState.RUNNING
            and current.generation == record.generation
            and current.created == record.created
        )

    async def _apply(
        self, record: RunRecord, step: Step, task: Task, verdict: Verdict, cause: str | None, since_ns: int | None
    ) -> Verdict:
        if verdict is Verdict.WAIT:
            return verdict
        if verdict is Verdict.UNREACHABLE:
            parent_id = step_task_id(record.id, cause or "")
            parent = await self.load_task(record.id, cause or "")
            if parent is None:
                reason = f"{DEPENDENCY_FAILED_PREFIX}task not found: {parent_id}"
            else:
                reason = f"{DEPENDENCY_FAILED_PREFIX}task {parent_id} is {parent.state.value or 'in an unknown state'}"
            await self._end(record, step.name, task, TaskState.UNREACHABLE, reason, "unreachable")
            return verdict
        if verdict is Verdict.SKIP:
            await self._end(
                record, step.name, task, TaskState.TERMINATED, f"{SKIPPED_PREFIX}parent {cause} was skipped", "skipped"
            )
            return verdict
        parents = await self._parent_tasks(record, step)
        if step.when:
            results = {
                name: None if parent is None or parent.result is None else orjson.dumps(parent.result.payload)
                for name, parent in parents.items()
            }
            holds, why = evaluate_all(step.when, results)
            if not holds:
                await self._end(record, step.name, task, TaskState.TERMINATED, SKIPPED_PREFIX + why, "skipped")
                return Verdict.SKIP
        try:
            await self.release(record, step, task, parents=parents, since_ns=since_ns)
        except ConfigurationError as exc:
            # Permanent (its parents' results make it larger than the server accepts): retrying cannot help.
            task.dependency_results = {}
            task.deadline_at = None
            await self._end(record, step.name, task, TaskState.TERMINATED, f"cannot be released: {exc}", "failed")
            return Verdict.UNREACHABLE
        return Verdict.RUN

    async def _parent_tasks(self, record: RunRecord, step: Step) -> dict[str, Task | None]:
        """The parents' tasks, read when the step needs their results (conditions, ``load_dependencies``)."""
        if not step.when and not step.load_dependencies:
            return {}
        return dict(await self.tasks(record.id, step.after))

    async def release(
        self, record: RunRecord, step: Step, task: Task, *, parents: Mapping[str, Task | None], since_ns: int | None
    ) -> None:
        """Make a blocked step's task runnable and queue it.

        Args:
            record: the run.
            step: the step.
            task: its task, as read (blocked).
            parents: the parents' tasks, read for their results when the step loads them.
            since_ns: when the parent that brought us here ended, for the release latency.

        Raises:
            TaskConflict: the task changed since it was read.
        """
        now = WireTime.now()
        task.state = TaskState.NEW
        task.queue = record.queue
        task.last_err = ""
        task.result = None
        task.dependency_results = {}
        if step.load_dependencies:
            for parent in parents.values():
                if parent is not None and parent.result is not None:
                    task.dependency_results[parent.id] = parent.result
        task.deadline_at = None if step.deadline is None else WireTime(now.unix_ns + int(step.deadline * NS_PER_SECOND))
        await self.client.staged.update(task)
        await self.client.staged.release(task)
        METRICS.workflow_steps_decided.labels(record.workflow, "released").inc()
        if since_ns is not None:
            METRICS.workflow_release_seconds.labels(record.workflow).observe(max(0, time.time_ns() - since_ns) / 1e9)

    async def _end(self, record: RunRecord, name: str, task: Task, state: TaskState, reason: str, what: str) -> None:
        task.state = state
        task.last_err = reason
        task.tried_at = WireTime.now()
        await self.client.staged.update(task)
        self.note(record, name, task)
        METRICS.workflow_steps_decided.labels(record.workflow, what).inc()
        log.info("run %s: step %s is %s: %s", record.id, name, what, reason)

    # -- ending the run ------------------------------------------------------------------------------------------

    async def finish_if_done(self, record: RunRecord, loaded: Loaded) -> RunRecord:
        """End the run when no step can run any more: ``failed`` if a step failed, else ``complete``."""
        if record.state is not RunState.RUNNING or not record.submitted:
            return record
        for name in loaded.graph.leaves:
            if await self.outcome(record, name) is Outcome.PENDING:
                return record
        outcomes: list[Outcome] = []
        order = loaded.graph.order
        for start in range(0, len(order), LOAD_CONCURRENCY):
            chunk = await asyncio.gather(
                *(self.outcome(record, name) for name in order[start : start + LOAD_CONCURRENCY])
            )
            if Outcome.PENDING in chunk:
                return record
            outcomes.extend(chunk)
        state = RunState.FAILED if Outcome.FAILED in outcomes else RunState.COMPLETE
        return await self.end_run(record, state)

    async def end_run(self, record: RunRecord, state: RunState) -> RunRecord:
        """Store the run as ended (compare-and-set on the record read); the record as stored afterwards."""
        kv = await self.kv()
        ended = record.with_changes(state=state, finished=WireTime.now())
        try:
            revision = await kv.update(run_key(record.id), ended.encode(), revision=record.revision)
        except TaskConflict:
            self.forget(record.id)
            current = await self.load_record(record.id)
            if current is None:
                raise WorkflowError(f"workflow run {record.id} was deleted while it ended") from None
            return current
        ended = ended.with_changes(revision=revision)
        self.forget(record.id)
        METRICS.workflow_runs_finished.labels(record.workflow, state.value).inc()
        log.info("run %s of workflow %s ended %s", record.id, record.workflow, state.value)
        await publish_run_event(self.client, ended)
        return ended

    async def tasks(self, run_id: str, names: Iterable[str]) -> Mapping[str, Task | None]:
        """Several steps' tasks, read with bounded concurrency."""
        names = list(names)
        found: dict[str, Task | None] = {}
        for start in range(0, len(names), LOAD_CONCURRENCY):
            chunk = names[start : start + LOAD_CONCURRENCY]
            for name, task in zip(
                chunk, await asyncio.gather(*(self.load_task(run_id, n) for n in chunk)), strict=True
            ):
                found[name] = task
        return found


_ENDS_AT_ONCE: Final = frozenset({Verdict.SKIP, Verdict.UNREACHABLE})
