"""Schedules as Go's ScheduledTask JSON, the value stored at ``scheduled_tasks.<name>``.

Go's fields come first, in Go's order and encoding (docs/protocol.md, Scheduled tasks); our settings follow as extra
fields that Go ignores, each left out while it has its default, so a schedule using only what Go knows encodes to
exactly Go's bytes. A zone other than UTC is written as a ``CRON_TZ=`` prefix of ``schedule``, so a Go scheduler fires
at the same wall-clock times; decoding moves it back into ``timezone``.

Decoding matches keys regardless of case, as Go does, and also reads the keys of old Go versions (``Deadline``,
``MaxTries``, ``TaskType``, ``CreatedAt``).
"""

from __future__ import annotations

import base64
from typing import Any, Final

from asyncjobs import CorruptDataError
from asyncjobs.codec import b64decode, dumps, loads_object
from asyncjobs.wiretime import NS_PER_SECOND, WireTime, format_time, parse_time
from asyncjobs_scheduler.constants import (
    DEFAULT_CATCHUP_WINDOW_S,
    DEFAULT_DST_GAP,
    DEFAULT_DST_OVERLAP,
    DEFAULT_MISFIRE,
    DEFAULT_OVERLAP,
    KEY_CATCHUP_WINDOW,
    KEY_CREATED_AT,
    KEY_DEADLINE,
    KEY_DST_GAP,
    KEY_DST_OVERLAP,
    KEY_JITTER,
    KEY_MAX_TRIES,
    KEY_MISFIRE,
    KEY_NAME,
    KEY_OVERLAP,
    KEY_PAUSED,
    KEY_PAYLOAD,
    KEY_QUEUE,
    KEY_SCHEDULE,
    KEY_TASK_TYPE,
)
from asyncjobs_scheduler.errors import InvalidSchedule
from asyncjobs_scheduler.schedule import Schedule

__all__ = ["decode_schedule", "encode_schedule", "go_task_payload"]

_FIELDS: Final = (
    KEY_NAME,
    KEY_SCHEDULE,
    KEY_QUEUE,
    KEY_TASK_TYPE,
    KEY_PAYLOAD,
    KEY_DEADLINE,
    KEY_MAX_TRIES,
    KEY_CREATED_AT,
    KEY_MISFIRE,
    KEY_CATCHUP_WINDOW,
    KEY_DST_GAP,
    KEY_DST_OVERLAP,
    KEY_OVERLAP,
    KEY_JITTER,
    KEY_PAUSED,
)


def _fold(key: str) -> str:
    # Case and underscores do not count, so Go's old untagged "MaxTries" finds "max_tries".
    return key.lower().replace("_", "")


_FOLDED: Final = {_fold(key): key for key in _FIELDS}


def encode_schedule(schedule: Schedule, queue: str | None = None) -> bytes:
    """Encode a schedule as the ScheduledTask JSON Go reads.

    Args:
        schedule: the schedule; a ``created_at`` of ``None`` is written as the current time.
        queue: the queue to write when the schedule has none (the storing client's queue).

    Raises:
        InvalidSchedule: neither the schedule nor ``queue`` names a queue.
    """
    queue_name = schedule.queue or queue
    if not queue_name:
        raise InvalidSchedule(
            f"schedule {schedule.name!r} has no queue: pass queue= to Schedule, "
            "or store it with a client bound to a queue"
        )
    created = schedule.created_at if schedule.created_at is not None else WireTime.now()
    obj: dict[str, Any] = {
        KEY_NAME: schedule.name,
        KEY_SCHEDULE: schedule.wire_spec,
        KEY_QUEUE: queue_name,
        KEY_TASK_TYPE: schedule.task_type,
        KEY_PAYLOAD: None if schedule.payload is None else base64.b64encode(schedule.payload).decode("ascii"),
    }
    if schedule.deadline_ns:
        obj[KEY_DEADLINE] = schedule.deadline_ns
    obj[KEY_MAX_TRIES] = schedule.task_max_tries
    obj[KEY_CREATED_AT] = format_time(created)
    if schedule.misfire != DEFAULT_MISFIRE:
        obj[KEY_MISFIRE] = schedule.misfire.value
    if schedule.catchup_window != DEFAULT_CATCHUP_WINDOW_S:
        obj[KEY_CATCHUP_WINDOW] = round(schedule.catchup_window * NS_PER_SECOND)
    if schedule.dst_gap != DEFAULT_DST_GAP:
        obj[KEY_DST_GAP] = schedule.dst_gap.value
    if schedule.dst_overlap != DEFAULT_DST_OVERLAP:
        obj[KEY_DST_OVERLAP] = schedule.dst_overlap.value
    if schedule.overlap != DEFAULT_OVERLAP:
        obj[KEY_OVERLAP] = schedule.overlap.value
    if schedule.jitter:
        obj[KEY_JITTER] = round(schedule.jitter * NS_PER_SECOND)
    if schedule.paused:
        obj[KEY_PAUSED] = True
    return dumps(obj)


def decode_schedule(data: bytes | str) -> Schedule:
    """Decode ScheduledTask JSON written by Go, ``ajc`` or this package.

    Missing extra fields take the :class:`Schedule` defaults, also for schedules Go wrote; a ``max_tries`` of 0 or
    less (Go's "task default") becomes ``None``.

    Raises:
        CorruptDataError: the data is not a ScheduledTask, or a value is invalid; the message names the key.
    """
    raw = loads_object(data, "scheduled task")
    obj: dict[str, Any] = {}
    for key, value in raw.items():  # exact keys win over folded ones, as in Go
        if key in _FIELDS:
            obj[key] = value
    for key, value in raw.items():
        field = _FOLDED.get(_fold(key))
        if field is not None and field not in obj:
            obj[field] = value

    name = _string(obj, KEY_NAME, required=True)
    what = f"scheduled task {name!r}"
    queue = _string(obj, KEY_QUEUE, required=True, what=what)
    deadline_ns = _integer(obj, KEY_DEADLINE, what)
    max_tries = _integer(obj, KEY_MAX_TRIES, what)
    created = obj.get(KEY_CREATED_AT)
    options: dict[str, Any] = {
        "queue": queue,
        "deadline": deadline_ns / NS_PER_SECOND if deadline_ns else None,
        "max_tries": max_tries if max_tries > 0 else None,
        "created_at": _time(created, what) if created is not None else None,
    }
    for key in (KEY_MISFIRE, KEY_DST_GAP, KEY_DST_OVERLAP, KEY_OVERLAP):
        if obj.get(key) is not None:
            options[key] = _string(obj, key, what=what)
    for key in (KEY_CATCHUP_WINDOW, KEY_JITTER):
        if obj.get(key) is not None:
            options[key] = _integer(obj, key, what) / NS_PER_SECOND
    if obj.get(KEY_PAUSED) is not None:
        paused = obj[KEY_PAUSED]
        if not isinstance(paused, bool):
            raise CorruptDataError(f"{what}: {KEY_PAUSED!r} must be true or false, not {paused!r}")
        options["paused"] = paused
    try:
        payload = b64decode(obj.get(KEY_PAYLOAD), f"{what}: {KEY_PAYLOAD!r}")
        return Schedule(
            name,
            _string(obj, KEY_SCHEDULE, required=True, what=what),
            _string(obj, KEY_TASK_TYPE, required=True, what=what),
            payload,
            **options,
        )
    except InvalidSchedule as exc:
        raise CorruptDataError(f"{what} is invalid: {exc}") from exc


def go_task_payload(payload: bytes | None) -> bytes:
    """The payload Go's scheduler gives the tasks of a schedule with ``payload``.

    Go JSON-encodes the stored bytes once more: its tasks carry a JSON string of their base64, and ``null`` when
    the schedule has no payload (docs/protocol.md, Scheduled tasks). This package's scheduler does not; this is for
    handlers and tests that must recognise tasks fired by Go.
    """
    if payload is None:
        return b"null"
    return dumps(base64.b64encode(payload).decode("ascii"))


def _string(obj: dict[str, Any], key: str, *, required: bool = False, what: str = "scheduled task") -> str:
    value = obj.get(key)
    if value is None or value == "":
        if required:
            raise CorruptDataError(f"{what}: {key!r} is missing or empty: every scheduled task needs one")
        return ""
    if not isinstance(value, str):
        raise CorruptDataError(f"{what}: {key!r} must be a string, not {value!r}")
    return value


def _integer(obj: dict[str, Any], key: str, what: str) -> int:
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise CorruptDataError(f"{what}: {key!r} must be an integer, not {value!r}")


def _time(value: Any, what: str) -> WireTime:
    if not isinstance(value, str):
        raise CorruptDataError(f"{what}: {KEY_CREATED_AT!r} must be an RFC 3339 time string, not {value!r}")
    try:
        return parse_time(value)
    except ValueError as exc:
        raise CorruptDataError(f"{what}: {KEY_CREATED_AT!r}: {exc}") from exc
