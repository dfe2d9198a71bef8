"""How a run is stored: its record in the runs bucket, and the ids of its step tasks.

A run's record (``run.<run id>``) is small and changes as the run goes (state, finish time, generation); its
definition (``def.<run id>``) is written once. Step task ids are ``wf:<run id>:<step name>``, so a submit repeated
with the same run id stores the same tasks, and any task event names its run and step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final

from asyncjobs.codec import dumps, loads_object
from asyncjobs.errors import CorruptDataError
from asyncjobs.ksuid import new_ksuid
from asyncjobs.wiretime import WireTime, format_time, parse_time
from asyncjobs_workflows.constants import MAX_RUN_ID_LENGTH, RUN_KEY_PREFIX, STARTED_KEY_PREFIX, STEP_TASK_ID_PREFIX
from asyncjobs_workflows.errors import InvalidWorkflow

__all__ = [
    "RunRecord",
    "RunState",
    "new_run_id",
    "parse_step_task_id",
    "run_key",
    "started_key",
    "step_of_started_key",
    "step_task_id",
    "validate_run_id",
]

_RUN_ID_RE: Final = re.compile(r"[a-zA-Z0-9_-]+")


class RunState(StrEnum):
    """Where a workflow run stands."""

    RUNNING = "running"
    """Some step can still run."""
    COMPLETE = "complete"
    """Every step completed or was skipped."""
    FAILED = "failed"
    """No step can run any more, and at least one failed (ended ``expired``, ``terminated`` or ``unreachable``)."""
    CANCELLED = "cancelled"
    """The run was cancelled: its steps that had not started never start."""


FINISHED_RUN_STATES: Final = frozenset({RunState.COMPLETE, RunState.FAILED, RunState.CANCELLED})


def new_run_id() -> str:
    """A new run id: a KSUID, so ids sort by creation time."""
    return new_ksuid()


def validate_run_id(run_id: Any) -> str:
    """Check a caller's run id (``^[a-zA-Z0-9_-]+$``, at most 64 characters; no ``:``, which separates it).

    Raises:
        InvalidWorkflow: the id breaks the rule.
    """
    if not isinstance(run_id, str) or _RUN_ID_RE.fullmatch(run_id) is None or len(run_id) > MAX_RUN_ID_LENGTH:
        raise InvalidWorkflow(
            f"run id {run_id!r} is invalid: use 1 to {MAX_RUN_ID_LENGTH} letters, digits, '_' or '-' (a hash of your "
            "natural key, for instance)"
        )
    return run_id


def step_task_id(run_id: str, step: str) -> str:
    """The id of the task a run stores for a step."""
    return f"{STEP_TASK_ID_PREFIX}{run_id}:{step}"


def parse_step_task_id(task_id: str) -> tuple[str, str] | None:
    """The run id and step name of a step task id, or ``None`` for any other task."""
    if not task_id.startswith(STEP_TASK_ID_PREFIX):
        return None
    run_id, sep, step = task_id[len(STEP_TASK_ID_PREFIX) :].partition(":")
    if not sep or not run_id or not step:
        return None
    return run_id, step


def run_key(run_id: str) -> str:
    """The runs-bucket key of a run's record."""
    return RUN_KEY_PREFIX + run_id


def started_key(run_id: str, step: str) -> str:
    """The runs-bucket key of when a step's latest try started: ``started.<run id>.<step>``.

    Key-value keys may not hold ``:`` (nats.go refuses them), step names may: it is written ``=``, which step names
    never hold.
    """
    return f"{STARTED_KEY_PREFIX}{run_id}.{step.replace(':', '=')}"


def step_of_started_key(suffix: str) -> str:
    """The step name from the part of a start-time key after ``started.<run id>.``."""
    return suffix.replace("=", ":")


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run as stored in ``run.<run id>``."""

    id: str
    workflow: str
    """The workflow's name."""
    queue: str
    """The queue its step tasks go to."""
    state: RunState
    created: WireTime
    """When the run was submitted; also the ``created`` time of every step task, so a repeated submit matches."""
    finished: WireTime | None = None
    generation: int = 0
    """How many times the run was retried."""
    submitted: bool = False
    """Whether every step task was stored and the roots released (a crashed submit leaves it false)."""
    digest: str = ""
    """The SHA-256 of the definition it was submitted with (hex): submits of one run id with another definition are
    refused by it, whatever they find under ``def.<run id>`` meanwhile."""
    revision: int = 0
    """The bucket revision this copy was read at (not stored)."""

    def with_changes(self, **changes: Any) -> RunRecord:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def encode(self) -> bytes:
        """The stored JSON."""
        obj: dict[str, Any] = {
            "id": self.id,
            "workflow": self.workflow,
            "queue": self.queue,
            "state": self.state.value,
            "created": format_time(self.created),
            "generation": self.generation,
            "submitted": self.submitted,
        }
        if self.finished is not None:
            obj["finished"] = format_time(self.finished)
        if self.digest:
            obj["digest"] = self.digest
        return dumps(obj)

    @classmethod
    def decode(cls, data: bytes, *, revision: int = 0) -> RunRecord:
        """Read a stored record.

        Raises:
            CorruptDataError: the value is not a run record.
        """
        obj = loads_object(data, "workflow run")
        try:
            finished = obj.get("finished")
            return cls(
                id=str(obj["id"]),
                workflow=str(obj["workflow"]),
                queue=str(obj["queue"]),
                state=RunState(obj["state"]),
                created=parse_time(obj["created"]),
                finished=None if finished is None else parse_time(finished),
                generation=int(obj.get("generation", 0)),
                submitted=bool(obj.get("submitted", False)),
                digest=str(obj.get("digest", "")),
                revision=revision,
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise CorruptDataError(f"stored workflow run is not valid: {exc!r}") from exc
