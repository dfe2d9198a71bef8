"""What a run and its steps look like from outside: :class:`WorkflowRun` and :class:`StepStatus`.

A step's state is read from its task, the one source of truth, so a Go worker or ``ajc`` that changes the task
changes the step. Two outcomes have no task state of their own, and are recognised by the task's ``last_err``: a
skipped step and a step stopped by a cancel are both stored ``terminated`` (they never run); the first reads as
``"skipped"``, the second as ``terminated`` with :attr:`StepStatus.cancelled` set.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Final, Literal

from asyncjobs import Task, TaskState
from asyncjobs_workflows.constants import CANCELLED_ERROR, SKIPPED_PREFIX
from asyncjobs_workflows.definition import Workflow
from asyncjobs_workflows.record import RunRecord, RunState
from asyncjobs_workflows.render import dot, mermaid

__all__ = ["SKIPPED", "Outcome", "StepState", "StepStatus", "WorkflowRun", "outcome_of", "step_state"]

SKIPPED: Final = "skipped"
StepState = TaskState | Literal["skipped"]


class Outcome(Enum):
    """How a step's task stands, for deciding what its children do."""

    PENDING = "pending"
    """Not final yet: waiting, queued or running."""
    COMPLETE = "complete"
    SKIPPED = "skipped"
    FAILED = "failed"
    """Expired, terminated (a cancel included), unreachable, queue_error, or unknown."""


_WAITING: Final = frozenset({TaskState.NEW, TaskState.BLOCKED, TaskState.RETRY, TaskState.ACTIVE})


def is_skipped(task: Task) -> bool:
    """Whether the task is a skipped step."""
    return task.state == TaskState.TERMINATED and task.last_err.startswith(SKIPPED_PREFIX)


def is_cancelled(task: Task) -> bool:
    """Whether the task is a step that a cancel stopped before it started."""
    return task.state == TaskState.TERMINATED and task.last_err == CANCELLED_ERROR


def outcome_of(task: Task) -> Outcome:
    """The outcome of a step's task."""
    if task.state in _WAITING:
        return Outcome.PENDING
    if task.state == TaskState.COMPLETED:
        return Outcome.COMPLETE
    if is_skipped(task):
        return Outcome.SKIPPED
    return Outcome.FAILED


def step_state(task: Task) -> StepState:
    """The state shown for a step: its task's state, or ``"skipped"``."""
    return SKIPPED if is_skipped(task) else task.state


@dataclass(frozen=True, slots=True)
class StepStatus:
    """One step of a run, as its task stands."""

    name: str
    task_id: str
    state: StepState
    """The task's state (an :class:`asyncjobs.TaskState`), or ``"skipped"``."""
    tries: int = 0
    started: datetime | None = None
    """When its latest try started; ``None`` while it has not started."""
    finished: datetime | None = None
    """When it reached its final state; ``None`` while it is not final."""
    last_error: str = ""
    result: object = None
    """The handler's return value once complete."""
    cancelled: bool = False
    """Whether a cancel stopped it before it started (its state is then ``terminated``)."""

    @property
    def label(self) -> str:
        """A short label for pictures: pending, active, complete, failed, unreachable, skipped or cancelled."""
        if self.cancelled:
            return "cancelled"
        state = self.state
        if state == SKIPPED:
            return SKIPPED
        if state in (TaskState.NEW, TaskState.BLOCKED, TaskState.RETRY):
            return "pending"
        if state in (TaskState.ACTIVE, TaskState.COMPLETED, TaskState.UNREACHABLE):
            return str(state.value if isinstance(state, TaskState) else state)
        return "failed"

    @classmethod
    def of(cls, name: str, task: Task, started: datetime | None) -> StepStatus:
        """The status of step ``name`` from its task, and when its latest try started (from the runs bucket)."""
        outcome = outcome_of(task)
        finished = None
        if outcome is Outcome.COMPLETE and task.result is not None:
            finished = task.result.completed
        elif outcome is not Outcome.PENDING and task.tried_at is not None:
            finished = task.tried
        if task.state in (TaskState.NEW, TaskState.BLOCKED, TaskState.RETRY) or is_skipped(task) or is_cancelled(task):
            started = None
        elif started is not None and finished is not None and started > finished:
            started = finished  # the start is when its event was stored, a hair after the task's own write
        return cls(
            name=name,
            task_id=task.id,
            state=step_state(task),
            tries=task.tries,
            started=started,
            finished=finished,
            last_error=task.last_err,
            result=None if task.result is None else task.result.payload,
            cancelled=is_cancelled(task),
        )


class WorkflowRun:
    """A run of a workflow: its state, and the status of each step.

    Returned by :class:`~asyncjobs_workflows.Workflows` (``submit``, ``get``, ``wait``, ``list``, ...); a snapshot
    taken when it was read, not updated afterwards.
    """

    __slots__ = ("_record", "_steps", "_workflow")

    def __init__(self, record: RunRecord, workflow: Workflow, steps: Mapping[str, StepStatus]) -> None:
        self._record = record
        self._workflow = workflow
        self._steps = types.MappingProxyType(dict(steps))

    @property
    def id(self) -> str:
        """The run id."""
        return self._record.id

    @property
    def name(self) -> str:
        """The workflow's name."""
        return self._record.workflow

    @property
    def state(self) -> RunState:
        """Where the run stands."""
        return self._record.state

    @property
    def queue(self) -> str:
        """The queue its steps run on."""
        return self._record.queue

    @property
    def created(self) -> datetime:
        """When it was submitted (UTC)."""
        return self._record.created.to_datetime()

    @property
    def finished(self) -> datetime | None:
        """When it ended (complete, failed or cancelled), or ``None`` while it runs."""
        return None if self._record.finished is None else self._record.finished.to_datetime()

    @property
    def generation(self) -> int:
        """How many times it was retried."""
        return self._record.generation

    @property
    def workflow(self) -> Workflow:
        """The definition it was submitted with."""
        return self._workflow

    @property
    def steps(self) -> Mapping[str, StepStatus]:
        """Each step's status by name, in definition order (read-only)."""
        return self._steps

    @property
    def done(self) -> bool:
        """Whether the run has ended (complete, failed or cancelled)."""
        return self._record.state is not RunState.RUNNING

    def results(self) -> dict[str, object]:
        """The result of each completed step, by name."""
        return {name: s.result for name, s in self._steps.items() if s.state == TaskState.COMPLETED}

    def labels(self) -> dict[str, str]:
        """Each step's picture label (see :attr:`StepStatus.label`)."""
        return {name: status.label for name, status in self._steps.items()}

    def mermaid(self) -> str:
        """The run as a Mermaid flowchart, each step coloured by its state."""
        return mermaid(self._workflow, self.labels())

    def dot(self) -> str:
        """The run as Graphviz DOT, each step coloured by its state."""
        return dot(self._workflow, self.labels())

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for status in self._steps.values():
            counts[status.label] = counts.get(status.label, 0) + 1
        summary = ", ".join(f"{label}={n}" for label, n in sorted(counts.items()))
        return f"WorkflowRun(id={self.id!r}, name={self.name!r}, state={self.state.value!r}, steps: {summary})"
