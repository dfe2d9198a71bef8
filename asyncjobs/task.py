"""Tasks, their states and results."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Any, Final

import orjson

from asyncjobs.constants import DEFAULT_MAX_TRIES, MAX_TASK_ID_LENGTH, MAX_TASK_TYPE_LENGTH
from asyncjobs.errors import ConfigurationError, HandlerNotSupported
from asyncjobs.ksuid import new_ksuid

# The name checks live in asyncjobs.names; they stay importable from here, where they used to be.
from asyncjobs.names import validate_name as validate_name
from asyncjobs.names import validate_queue_name as validate_queue_name
from asyncjobs.names import validate_task_id as validate_task_id
from asyncjobs.signing import signature_envelope
from asyncjobs.wiretime import WireTime

if TYPE_CHECKING:
    from asyncjobs.delivery import HandlerContext


class TaskState(StrEnum):
    """The lifecycle state of a task; values are the wire strings of the Go implementation."""

    UNKNOWN = ""
    NEW = "new"
    ACTIVE = "active"
    RETRY = "retry"
    EXPIRED = "expired"
    TERMINATED = "terminated"
    COMPLETED = "complete"
    QUEUE_ERROR = "queue_error"
    BLOCKED = "blocked"
    UNREACHABLE = "unreachable"

    @classmethod
    def parse(cls, name: str | TaskState) -> TaskState:
        """Return the state for a wire string, accepting the alias ``completed``.

        Raises:
            ConfigurationError: the name is no known state.
        """
        if isinstance(name, TaskState):
            return name
        if name == "completed":
            return cls.COMPLETED
        try:
            return cls(name)
        except ValueError:
            known = ", ".join(s.value for s in cls if s.value)
            raise ConfigurationError(f"unknown task state {name!r}: use one of {known}") from None


TERMINAL_STATES: Final = frozenset(
    {TaskState.COMPLETED, TaskState.EXPIRED, TaskState.TERMINATED, TaskState.UNREACHABLE}
)
"""States a task never leaves on its own (``retry_task`` can still revive them)."""

FAILED_STATES: Final = frozenset(
    {TaskState.EXPIRED, TaskState.TERMINATED, TaskState.UNREACHABLE, TaskState.QUEUE_ERROR, TaskState.UNKNOWN}
)
"""States of a task that failed for good: nothing will complete it unless someone retries it (``retry_task``).

* ``expired``: past its deadline, out of tries or deliveries, or its queue was purged before it ran.
* ``terminated``: its handler raised :class:`~asyncjobs.TerminateTask` (a remote one replied ``AJ-Terminate``),
  its result could not be stored, or it had no valid signature where one is required.
* ``unreachable``: a task it depends on failed or does not exist, so it can never start.
* ``queue_error``: it was stored but could not be put in its queue.
* ``unknown``: stored without a known state (the empty wire string, Go's ``TaskStateUnknown``); it never
  completes by itself.

``retry`` is not in the set: such a task is still being tried. A dependent task whose parent is in one of these
states becomes ``unreachable`` (docs/protocol.md, Dependencies).
"""

ENQUEUEABLE_STATES: Final = frozenset({TaskState.NEW, TaskState.RETRY, TaskState.BLOCKED})
"""States a task may be in when it is enqueued."""

DISCARDABLE_STATES: Final = frozenset({TaskState.COMPLETED, TaskState.EXPIRED, TaskState.TERMINATED})
"""End states the client may be told to discard instead of storing."""


def encode_payload(payload: Any) -> bytes | None:
    """Encode a task payload: bytes are kept, ``None`` stays ``None``, anything else is JSON-encoded.

    Raises:
        ConfigurationError: the payload cannot be JSON-encoded: an unsupported type, an integer beyond 64 bits,
            a string with lone surrogates, or a NaN or infinite float (which JSON cannot hold).
    """
    if payload is None:
        return None
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray | memoryview):
        return bytes(payload)
    return check_json(payload, "task payload")


def check_json(value: Any, what: str) -> bytes:
    """JSON-encode ``value`` with orjson, refusing what orjson would drop or mangle.

    orjson writes NaN and infinities as ``null`` without a word, so when ``null`` appears in the output the value
    is searched for a non-finite float; values without ``null`` cost nothing more than the encoding.

    Returns:
        The compact JSON encoding.

    Raises:
        ConfigurationError: the value cannot be encoded, or holds a NaN or infinite float.
    """
    try:
        out = orjson.dumps(value)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise ConfigurationError(_encode_problem(value, what, str(exc))) from exc
    if b"null" in out:
        bad = _non_finite(value)
        if bad is not None:
            raise ConfigurationError(
                f"{what} holds the float {bad!r}, which JSON cannot represent (it would be stored as null): "
                "replace NaN and infinities with None or a string"
            )
    return out


def _encode_problem(value: Any, what: str, reason: str) -> str:
    if "64-bit" in reason:
        hint = "integers must fit in 64 bits (-2**63 to 2**64-1): pass larger numbers as strings"
    elif "surrogates" in reason:
        hint = (
            "a string holds a lone surrogate, often from os.fsdecode of undecodable bytes: clean it with "
            "asyncjobs.codec.safe_text(text), or pass bytes"
        )
    else:
        hint = "pass bytes, or JSON values (dict with str keys, list, str, int, float, bool, None)"
    return f"{what} of type {type(value).__name__} cannot be JSON-encoded ({reason}): {hint}"


def _non_finite(value: Any, depth: int = 0) -> float | None:
    """The first NaN or infinite float inside a value orjson encoded, or ``None``."""
    if isinstance(value, float):
        return None if math.isfinite(value) else value
    if depth > _MAX_DEPTH or isinstance(value, str | int | bytes | type(None)):
        return None
    children: Iterable[Any]
    if isinstance(value, dict):
        children = value.values()
    elif isinstance(value, list | tuple):
        children = value
    elif isinstance(value, Enum):
        children = (value.value,)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        children = (getattr(value, f.name) for f in dataclasses.fields(value))
    else:
        return None
    for child in children:
        bad = _non_finite(child, depth + 1)
        if bad is not None:
            return bad
    return None


# orjson refuses nesting deeper than 255, so the search never needs to go further.
_MAX_DEPTH: Final = 256


class TaskResult:
    """What a successful handler returned, stored with the task.

    Attributes:
        payload: the handler's return value as decoded JSON.
    """

    __slots__ = ("completed_at", "payload")

    def __init__(self, payload: Any, completed_at: WireTime) -> None:
        self.payload = payload
        self.completed_at = completed_at

    @property
    def completed(self) -> datetime:
        """When the handler finished (UTC)."""
        return self.completed_at.to_datetime()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskResult):
            return NotImplemented
        return self.payload == other.payload and self.completed_at == other.completed_at

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"TaskResult(payload={self.payload!r}, completed={self.completed.isoformat()})"


class Task:
    """A unit of work stored in JetStream under its id and processed by a handler for its type.

    Args:
        type: the task type, used for routing (``^[a-zA-Z0-9_:-]+$``, at most 255 characters).
        payload: ``bytes`` are stored as they are; a dict, list, str or other JSON value is JSON-encoded (NaN and
            infinities are refused rather than stored as ``null``).
        id: a custom id (same characters, at most 1024 of them); by default a new KSUID (time sortable).
        deadline: an aware datetime, or a timedelta from now, after which the task is not started.
        max_tries: how many times a handler may run it; 0 or less means no task-level limit.
        dependencies: ids of tasks that must complete first; the task starts ``blocked``.
        load_dependencies: give the handler the parents' results in ``dependency_results``.

    Raises:
        InvalidNameError: the type or id breaks the name rule.
        ConfigurationError: an option is invalid.
    """

    __slots__ = (
        "_generated_id",
        "_handler",
        "created_at",
        "deadline_at",
        "dependencies",
        "dependency_results",
        "id",
        "last_err",
        "load_dependencies",
        "max_tries",
        "payload",
        "queue",
        "result",
        "seq",
        "signature",
        "state",
        "tried_at",
        "tries",
        "type",
    )

    def __init__(
        self,
        type: str,
        payload: Any = None,
        *,
        id: str | None = None,
        deadline: datetime | timedelta | None = None,
        max_tries: int = DEFAULT_MAX_TRIES,
        dependencies: Iterable[str] = (),
        load_dependencies: bool = False,
    ) -> None:
        self.type: str = validate_name(type, "task type", max_length=MAX_TASK_TYPE_LENGTH)
        self.id: str = new_ksuid() if id is None else validate_task_id(id)
        self.queue: str = ""
        self.payload: bytes | None = encode_payload(payload)
        self.created_at: WireTime = WireTime.now()
        if deadline is None:
            self.deadline_at: WireTime | None = None
        elif isinstance(deadline, timedelta):
            self.deadline_at = WireTime(self.created_at.unix_ns + deadline // timedelta(microseconds=1) * 1000)
        elif isinstance(deadline, datetime):
            self.deadline_at = WireTime.from_datetime(deadline)
        else:
            kind = deadline.__class__.__name__
            raise ConfigurationError(f"task deadline must be a datetime or timedelta, not {kind}")
        if not isinstance(max_tries, int) or isinstance(max_tries, bool):
            raise ConfigurationError(f"task max_tries must be an int, not {max_tries!r}")
        self.max_tries: int = max_tries
        deps: list[str] = []
        for dep in dependencies:
            validate_name(dep, "task dependency id", max_length=MAX_TASK_ID_LENGTH)
            if dep not in deps:
                deps.append(dep)
        if self.id in deps:
            raise ConfigurationError(f"task {self.id} cannot depend on itself")
        self.dependencies: list[str] = deps
        self.dependency_results: dict[str, TaskResult] = {}
        self.load_dependencies: bool = bool(load_dependencies)
        self.result: TaskResult | None = None
        self.state: TaskState = TaskState.BLOCKED if deps else TaskState.NEW
        self.tried_at: WireTime | None = None
        self.tries: int = 0
        self.last_err: str = ""
        self.signature: str = ""
        self.seq: int = 0
        """The stream sequence this copy was last saved or loaded at (optimistic concurrency)."""
        self._handler: HandlerContext | None = None
        self._generated_id: str | None = self.id if id is None else None
        """The id this library made for the task (a fresh KSUID, nobody else's), if it was not given one."""

    @classmethod
    def _blank(cls) -> Task:
        """An uninitialised task for the codec to fill."""
        task = cls.__new__(cls)
        task._handler = None
        task._generated_id = None
        task.seq = 0
        return task

    @property
    def created(self) -> datetime:
        """When the task was created (UTC)."""
        return self.created_at.to_datetime()

    @property
    def deadline(self) -> datetime | None:
        """After this time the task is not started; ``None`` for no deadline."""
        return None if self.deadline_at is None else self.deadline_at.to_datetime()

    @property
    def tried(self) -> datetime | None:
        """When a handler last started or finished it."""
        return None if self.tried_at is None else self.tried_at.to_datetime()

    def signature_envelope(self) -> bytes:
        """The bytes an ed25519 signature of this task covers (the envelope of docs/protocol.md, Task signatures)."""
        return signature_envelope(
            task_id=self.id,
            queue=self.queue,
            task_type=self.type,
            max_tries=self.max_tries,
            created_ns=self.created_at.unix_ns,
            deadline_ns=None if self.deadline_at is None else self.deadline_at.unix_ns,
            payload=self.payload,
        )

    def payload_json(self) -> Any:
        """Decode the payload as JSON (``None`` for no payload).

        Raises:
            ValueError: the payload is not JSON.
        """
        return None if self.payload is None else orjson.loads(self.payload)

    def is_past_deadline(self, now_ns: int | None = None) -> bool:
        """Whether the task has a deadline that has passed."""
        if self.deadline_at is None:
            return False
        return (WireTime.now().unix_ns if now_ns is None else now_ns) > self.deadline_at.unix_ns

    async def mark_in_progress(self) -> None:
        """Tell JetStream the handler is still working and extend the handler's deadline by the queue's max run time.

        Sends ``+WPI`` for the work item; only when the server confirms is the local deadline extended.

        Raises:
            HandlerNotSupported: called outside a running handler.
            TaskTimeout: the server did not confirm in time; the deadline is unchanged.
        """
        if self._handler is None:
            raise HandlerNotSupported("task is not being processed by a handler: call mark_in_progress() inside one")
        await self._handler.mark_in_progress()

    def __repr__(self) -> str:
        state = self.state.value
        return f"Task(id={self.id!r}, type={self.type!r}, queue={self.queue!r}, state={state!r}, tries={self.tries})"
