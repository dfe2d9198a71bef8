"""JSON encoding and decoding of every wire type, byte-compatible with Go's ``encoding/json``.

Encoding follows Go: compact output, struct field order, ``omitempty`` fields left out, ``[]byte`` as padded
standard base64, times as RFC3339 with nanoseconds, durations as integer nanoseconds, and ``<``, ``>``, ``&``,
U+2028 and U+2029 escaped inside strings. Decoding ignores unknown fields and matches keys case-insensitively when
no exact key is present, as Go does.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import time
from dataclasses import dataclass
from typing import Any, Final

import orjson

from asyncjobs.constants import EVENT_LEADER_ELECTED, EVENT_TASK_STATE, ITEM_KIND_TASK, MAX_TASK_ID_LENGTH
from asyncjobs.errors import ConfigurationError, CorruptDataError, InvalidNameError
from asyncjobs.ksuid import new_ksuid
from asyncjobs.task import Task, TaskResult, TaskState, check_json, validate_task_id
from asyncjobs.wiretime import GO_ZERO_TIME, NS_PER_SECOND, WireTime, parse_time
from asyncjobs.wiretime import format_time as _format_time

# A task's created and deadline times are formatted on every save and the event second repeats: cache them. A
# worker saves a task twice within its handler's run, so a small cache keeps those hits; a large one only fills up
# with unique try times (16,384 entries held 3.5 MB per worker under load).
format_time: Final = functools.lru_cache(maxsize=2048)(_format_time)

_ESCAPES: Final = ((b"<", b"\\u003c"), (b">", b"\\u003e"), (b"&", b"\\u0026"))
_LINE_SEPARATORS: Final = ((b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"))

TASK_FIELDS: Final = frozenset(
    {
        "id",
        "type",
        "queue",
        "dependencies",
        "dependency_results",
        "load_dependencies",
        "payload",
        "deadline",
        "max_tries",
        "result",
        "state",
        "created",
        "tried",
        "tries",
        "last_err",
        "signature",
    }
)


def dumps(value: Any) -> bytes:
    """Encode a JSON value compactly, escaping as Go's encoder does."""
    out = orjson.dumps(value)
    for raw, escaped in _ESCAPES:
        if raw in out:
            out = out.replace(raw, escaped)
    if b"\xe2\x80" in out:
        for raw, escaped in _LINE_SEPARATORS:
            out = out.replace(raw, escaped)
    return out


def safe_text(text: str) -> str:
    """Return ``text`` in a form JSON can always encode.

    Lone surrogates (what ``os.fsdecode`` or ``errors="surrogateescape"`` make of undecodable bytes) have no UTF-8
    encoding, so orjson refuses them; each is replaced by its backslash escape (``"\\udcff"``: a backslash and
    five characters), which keeps the original byte visible. Other text is returned as it is; ASCII text costs
    one flag check.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def loads_object(data: bytes | str, what: str) -> dict[str, Any]:
    """Decode a JSON object.

    Raises:
        CorruptDataError: the data is not a JSON object.
    """
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CorruptDataError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise CorruptDataError(f"{what} is not a JSON object")
    return value


def fold_keys(obj: dict[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    """Map keys that differ from the known fields only in case onto them, exact keys winning (Go's rule)."""
    if obj.keys() <= fields:
        return obj
    folded = {key: value for key, value in obj.items() if key in fields}
    lower = {field.lower(): field for field in fields}
    for key, value in obj.items():
        field = lower.get(key.lower())
        if field is not None and field not in folded:
            folded[field] = value
    return folded


def b64decode(value: Any, what: str) -> bytes | None:
    """Decode Go's ``[]byte`` JSON value.

    Raises:
        CorruptDataError: the value is not a base64 string or null.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise CorruptDataError(f"{what} must be a base64 string, not {value!r}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CorruptDataError(f"{what} is not valid base64: {exc}") from exc


def _int(value: Any, what: str) -> int:
    if value is None:  # Go leaves an int at 0 for null
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise CorruptDataError(f"{what} must be an integer, not {value!r}")


def _str(value: Any, what: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    raise CorruptDataError(f"{what} must be a string, not {value!r}")


def _time(value: Any, what: str) -> WireTime:
    if not isinstance(value, str):
        raise CorruptDataError(f"{what} must be an RFC3339 time string, not {value!r}")
    try:
        return parse_time(value)
    except ConfigurationError as exc:
        raise CorruptDataError(f"{what}: {exc}") from exc


def _optional_time(value: Any, what: str) -> WireTime | None:
    return None if value is None else _time(value, what)


def result_to_wire(result: TaskResult) -> dict[str, Any]:
    """The JSON object of a task result."""
    return {"payload": result.payload, "completed": format_time(result.completed_at)}


def result_from_wire(value: Any, what: str) -> TaskResult | None:
    """Decode a task result object (``None`` for null).

    Raises:
        CorruptDataError: the value is not a result object.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise CorruptDataError(f"{what} must be an object, not {value!r}")
    value = fold_keys(value, frozenset({"payload", "completed"}))
    completed = value.get("completed")
    return TaskResult(value.get("payload"), _time(completed, f"{what}.completed") if completed is not None else _ZERO)


_ZERO: Final = GO_ZERO_TIME


def task_to_wire(task: Task) -> dict[str, Any]:
    """The JSON object of a task, in Go's field order with its ``omitempty`` rules."""
    obj: dict[str, Any] = {"id": task.id, "type": task.type, "queue": task.queue}
    if task.dependencies:
        obj["dependencies"] = task.dependencies
    if task.dependency_results:
        # Go writes map keys sorted.
        results = task.dependency_results
        obj["dependency_results"] = {key: result_to_wire(results[key]) for key in sorted(results)}
    if task.load_dependencies:
        obj["load_dependencies"] = True
    obj["payload"] = None if task.payload is None else base64.b64encode(task.payload).decode("ascii")
    if task.deadline_at is not None:
        obj["deadline"] = format_time(task.deadline_at)
    obj["max_tries"] = task.max_tries
    if task.result is not None:
        obj["result"] = result_to_wire(task.result)
    obj["state"] = task.state.value
    obj["created"] = format_time(task.created_at)
    if task.tried_at is not None:
        obj["tried"] = format_time(task.tried_at)
    obj["tries"] = task.tries
    if task.last_err:
        # An error text can carry anything a handler's exception said, file names with bad bytes included.
        obj["last_err"] = safe_text(task.last_err)
    if task.signature:
        obj["signature"] = task.signature
    return obj


def encode_task(task: Task) -> bytes:
    """Encode a task exactly as the Go implementation stores it."""
    return dumps(task_to_wire(task))


def decode_task(data: bytes | str, *, seq: int = 0) -> Task:
    """Decode a stored task; unknown fields are ignored.

    Raises:
        CorruptDataError: the data is not a valid task.
    """
    obj = fold_keys(loads_object(data, "task"), TASK_FIELDS)
    task = Task._blank()
    task.seq = seq
    task.id = _str(obj.get("id"), "task id")
    if not task.id:
        raise CorruptDataError("task has no id")
    task.type = _str(obj.get("type"), "task type")
    task.queue = _str(obj.get("queue"), "task queue")
    deps = obj.get("dependencies") or []
    if not isinstance(deps, list) or not all(isinstance(dep, str) for dep in deps):
        raise CorruptDataError(f"task dependencies must be a list of ids, not {deps!r}")
    task.dependencies = deps
    results = obj.get("dependency_results") or {}
    if not isinstance(results, dict):
        raise CorruptDataError(f"task dependency_results must be an object, not {results!r}")
    task.dependency_results = {}
    for key, value in results.items():
        result = result_from_wire(value, f"dependency_results[{key}]")
        if result is not None:
            task.dependency_results[key] = result
    task.load_dependencies = bool(obj.get("load_dependencies", False))
    task.payload = b64decode(obj.get("payload"), "task payload")
    task.deadline_at = _optional_time(obj.get("deadline"), "task deadline")
    task.max_tries = _int(obj.get("max_tries", 0), "task max_tries")
    task.result = result_from_wire(obj.get("result"), "task result")
    state = _str(obj.get("state"), "task state")
    try:
        task.state = TaskState(state)
    except ValueError:
        raise CorruptDataError(f"task state {state!r} is unknown") from None
    created = obj.get("created")
    task.created_at = _ZERO if created is None else _time(created, "task created")
    task.tried_at = _optional_time(obj.get("tried"), "task tried")
    task.tries = _int(obj.get("tries", 0), "task tries")
    task.last_err = _str(obj.get("last_err"), "task last_err")
    task.signature = _str(obj.get("signature"), "task signature")
    return task


_ITEM_HEAD: Final = b'{"kind":0,"job":"'
_ITEM_MIN: Final = len(_ITEM_HEAD) + 2
_ITEM_JOB_RE: Final = re.compile(rb"[a-zA-Z0-9_:-]{1,%d}" % MAX_TASK_ID_LENGTH)


def encode_item(task_id: str) -> bytes:
    """The work queue item that references a task."""
    return _ITEM_HEAD + task_id.encode() + b'"}'


def decode_item(data: bytes) -> str:
    """Return the task id a work queue item references.

    Raises:
        CorruptDataError: the item is empty, not JSON, of an unknown kind, has no job, or its job is not a valid
            task id (so the worker terminates the item instead of retrying a task it can never load).
    """
    if not data:
        raise CorruptDataError("invalid queue item received: empty body")
    # Fast path for the exact bytes Go and we write: {"kind":0,"job":"<id>"}
    if data.startswith(_ITEM_HEAD) and data.endswith(b'"}') and len(data) > _ITEM_MIN:
        raw_job = data[len(_ITEM_HEAD) : -2]
        if _ITEM_JOB_RE.fullmatch(raw_job) is not None:
            return raw_job.decode("ascii")
    obj = fold_keys(loads_object(data, "queue item"), frozenset({"kind", "job"}))
    kind = obj.get("kind", ITEM_KIND_TASK)
    if kind != ITEM_KIND_TASK:
        raise CorruptDataError(f"corrupt queue item received: unknown kind {kind!r}")
    job = obj.get("job")
    if not isinstance(job, str) or not job:
        raise CorruptDataError("corrupt queue item received: no job id")
    try:
        return validate_task_id(job)
    except InvalidNameError as exc:
        raise CorruptDataError(f"corrupt queue item received: {exc}") from None


@dataclass(frozen=True, slots=True)
class TaskStateEvent:
    """A task changed state (``io.choria.asyncjobs.v1.task_state``)."""

    event_id: str
    timestamp: WireTime
    task_id: str
    state: TaskState
    tries: int
    queue: str
    task_type: str
    last_error: str
    task_age_ns: int
    type: str = EVENT_TASK_STATE


@dataclass(frozen=True, slots=True)
class LeaderElectedEvent:
    """A component became leader (``io.choria.asyncjobs.v1.leader_elected``)."""

    event_id: str
    timestamp: WireTime
    name: str
    component: str
    type: str = EVENT_LEADER_ELECTED


Event = TaskStateEvent | LeaderElectedEvent


_second_text: tuple[int, str] = (-1, "")
"""The last whole second an event was stamped with, formatted: events come many to a second."""


def _event_base(now_ns: int) -> tuple[str, str]:
    global _second_text
    now_s = now_ns // NS_PER_SECOND
    # The timestamp is the KSUID's own time, whole seconds, as upstream derives it.
    second, text = _second_text
    if second != now_s:
        text = format_time(WireTime(now_s * NS_PER_SECOND))
        _second_text = (now_s, text)
    return new_ksuid(now=now_s, secure=False), text


def encode_task_event(task: Task, *, now_ns: int | None = None) -> bytes:
    """The state-change event for a task, as Go publishes it."""
    now = time.time_ns() if now_ns is None else now_ns
    event_id, timestamp = _event_base(now)
    obj: dict[str, Any] = {
        "event_id": event_id,
        "type": EVENT_TASK_STATE,
        "timestamp": timestamp,
        "task_id": task.id,
        "state": task.state.value,
        "tries": task.tries,
    }
    if task.queue:
        obj["queue"] = task.queue
    obj["task_type"] = task.type
    if task.last_err:
        obj["last_error"] = safe_text(task.last_err)
    # Go: time.Since(created.Round(time.Millisecond)), halves rounded up.
    created_ms, rest = divmod(task.created_at.unix_ns, 1_000_000)
    age_ns = now - (created_ms + (1 if rest >= 500_000 else 0)) * 1_000_000
    if age_ns:
        obj["task_age"] = age_ns
    return dumps(obj)


def encode_leader_event(name: str, component: str, *, now_ns: int | None = None) -> bytes:
    """The leader-elected event, as Go publishes it."""
    event_id, timestamp = _event_base(time.time_ns() if now_ns is None else now_ns)
    obj = {"event_id": event_id, "type": EVENT_LEADER_ELECTED, "timestamp": timestamp}
    obj["name"] = name
    obj["component"] = component
    return dumps(obj)


_TASK_EVENT_FIELDS: Final = frozenset(
    {"event_id", "type", "timestamp", "task_id", "state", "tries", "queue", "task_type", "last_error", "task_age"}
)
_LEADER_EVENT_FIELDS: Final = frozenset({"event_id", "type", "timestamp", "name", "component"})


def decode_event(data: bytes | str) -> Event:
    """Decode a lifecycle event, dispatching on its ``type``.

    Raises:
        CorruptDataError: the event is malformed or of an unknown type.
    """
    raw = loads_object(data, "event")
    kind = raw.get("type")
    if kind == EVENT_TASK_STATE:
        obj = fold_keys(raw, _TASK_EVENT_FIELDS)
        state = _str(obj.get("state"), "event state")
        try:
            parsed_state = TaskState(state)
        except ValueError:
            raise CorruptDataError(f"event state {state!r} is unknown") from None
        return TaskStateEvent(
            event_id=_str(obj.get("event_id"), "event_id"),
            timestamp=_optional_time(obj.get("timestamp"), "event timestamp") or _ZERO,
            task_id=_str(obj.get("task_id"), "event task_id"),
            state=parsed_state,
            tries=_int(obj.get("tries", 0), "event tries"),
            queue=_str(obj.get("queue"), "event queue"),
            task_type=_str(obj.get("task_type"), "event task_type"),
            last_error=_str(obj.get("last_error"), "event last_error"),
            task_age_ns=_int(obj.get("task_age", 0), "event task_age"),
        )
    if kind == EVENT_LEADER_ELECTED:
        obj = fold_keys(raw, _LEADER_EVENT_FIELDS)
        return LeaderElectedEvent(
            event_id=_str(obj.get("event_id"), "event_id"),
            timestamp=_optional_time(obj.get("timestamp"), "event timestamp") or _ZERO,
            name=_str(obj.get("name"), "event name"),
            component=_str(obj.get("component"), "event component"),
        )
    raise CorruptDataError(f"unknown event type: {kind}")


def result_payload(value: Any) -> Any:
    """Turn a handler's return value into the JSON value stored as the result payload.

    ``bytes`` become base64 strings, as Go marshals ``[]byte``; other values must be JSON-encodable. Whatever
    this returns encodes with :func:`dumps`.

    Raises:
        ConfigurationError: the value cannot be JSON-encoded: an unsupported type, an integer beyond 64 bits, a
            string with lone surrogates, or a NaN or infinite float.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if value is None or isinstance(value, bool):
        return value
    encoded = check_json(value, "handler result")
    # A scalar that encodes is returned as it is: only containers need the round trip to plain JSON values.
    return value if isinstance(value, str | int | float) else orjson.loads(encoded)
