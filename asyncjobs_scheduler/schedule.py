"""The :class:`Schedule` value object: what to enqueue, when, and how to treat missed, DST-shifted and overlapping runs.

A schedule is validated completely when it is built, so an invalid one never reaches the KV store nor a scheduler.
Its due instants come from :mod:`asyncjobs_scheduler.cron`; its JSON form (Go's ScheduledTask) from
:mod:`asyncjobs_scheduler.codec`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from itertools import islice
from typing import Any, Final, TypeVar
from zoneinfo import ZoneInfo

from asyncjobs import ConfigurationError
from asyncjobs.names import validate_name, validate_queue_name
from asyncjobs.task import encode_payload
from asyncjobs.wiretime import NS_PER_SECOND, WireTime
from asyncjobs_scheduler.constants import (
    CRON_TZ_PREFIX,
    DEFAULT_CATCHUP_WINDOW_S,
    DEFAULT_DST_GAP,
    DEFAULT_DST_OVERLAP,
    DEFAULT_MAX_TRIES,
    DEFAULT_MISFIRE,
    DEFAULT_OVERLAP,
    DEFAULT_TIMEZONE,
    MAX_SCHEDULE_NAME_LENGTH,
    MIN_DEADLINE_S,
    TASK_ID_TIME_FORMAT,
    DstGap,
    DstOverlap,
    Misfire,
    Overlap,
)
from asyncjobs_scheduler.cron import CronSpec, load_zone, parse_spec
from asyncjobs_scheduler.errors import InvalidSchedule

__all__ = ["Schedule"]

_UNIX_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_JITTER_RESOLUTION: Final = timedelta(milliseconds=1)
_EARLIEST_CREATED: Final = 0
_LATEST_CREATED: Final = int(datetime(2200, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000_000
_E = TypeVar("_E", bound=StrEnum)


@dataclass(frozen=True, init=False)
class Schedule:
    """A named cron schedule that enqueues a task of ``task_type`` with ``payload`` at each due time.

    Args:
        name: the schedule name (``^[a-zA-Z0-9_:-]+$``, at most 255 characters); also the prefix of its task ids.
        spec: five cron fields, a descriptor such as ``@daily``, or ``@every <Go duration>`` (``90s``, ``1h30m``),
            optionally after ``CRON_TZ=<zone>``.
        task_type: the type of each task.
        payload: as :class:`asyncjobs.Task` takes it: bytes as they are, any other JSON value JSON-encoded.
        queue: the queue of each task; ``None`` is the queue of the client that stores the schedule.
        timezone: the IANA zone the cron fields are read in. A spec's own ``CRON_TZ=``/``TZ=`` prefix sets it too
            (then ``timezone`` must be left at ``"UTC"`` or name the same zone).
        deadline: seconds (or a ``timedelta``) from a due time after which its task is not started; at least 30.
        max_tries: each task's ``max_tries``; ``None`` is the task default (10).
        misfire: ``skip``, ``run_once`` or ``run_all``: the due times missed while no scheduler led.
        catchup_window: seconds: missed due times older than this are never fired.
        dst_gap: ``shift`` or ``skip``: a fixed-hour local time that a DST change skips.
        dst_overlap: ``once`` or ``twice``: a fixed-hour local time that a DST change repeats.
        overlap: ``allow``, or ``skip`` while the previous task of the schedule is not in a final state.
        jitter: seconds: each task is enqueued up to this much after its due time, the same delay on every
            scheduler (see :meth:`jittered`).
        created_at: when the schedule was stored (``@every`` counts from it); ``None`` until it is stored.
        paused: a paused schedule fires nothing.

    Raises:
        InvalidSchedule: an argument is invalid; the message says which one and how to fix it.
    """

    name: str
    """The schedule name."""
    spec: str
    """The cron spec without its time zone prefix (the zone is in :attr:`timezone`)."""
    task_type: str
    """The type of each task."""
    payload: bytes | None
    """The payload bytes of each task."""
    queue: str | None
    """The queue of each task; ``None``: the storing client's queue."""
    timezone: str
    """The IANA zone the cron fields are read in."""
    deadline: float | None
    """Seconds from a due time to its task's deadline, or ``None``."""
    max_tries: int | None
    """Each task's ``max_tries``, or ``None`` for the task default."""
    misfire: Misfire
    """What to do with due times missed while no scheduler led."""
    catchup_window: float
    """Seconds: missed due times older than this are never fired."""
    dst_gap: DstGap
    """What a fixed-hour schedule does with a local time a DST change skips."""
    dst_overlap: DstOverlap
    """What a fixed-hour schedule does with a local time a DST change repeats."""
    overlap: Overlap
    """Whether to fire while the previous task is not in a final state."""
    jitter: float
    """Seconds: the most a task is enqueued after its due time."""
    created_at: WireTime | None
    """When the schedule was stored, with nanoseconds, or ``None`` before."""
    paused: bool
    """Whether the schedule is paused."""
    _cron: CronSpec = field(init=False, repr=False, compare=False)
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __init__(
        self,
        name: str,
        spec: str,
        task_type: str,
        payload: Any = None,
        *,
        queue: str | None = None,
        timezone: str = DEFAULT_TIMEZONE,
        deadline: float | timedelta | None = None,
        max_tries: int | None = None,
        misfire: Misfire | str = DEFAULT_MISFIRE,
        catchup_window: float | timedelta = DEFAULT_CATCHUP_WINDOW_S,
        dst_gap: DstGap | str = DEFAULT_DST_GAP,
        dst_overlap: DstOverlap | str = DEFAULT_DST_OVERLAP,
        overlap: Overlap | str = DEFAULT_OVERLAP,
        jitter: float | timedelta = 0,
        created_at: datetime | WireTime | None = None,
        paused: bool = False,
    ) -> None:
        put = object.__setattr__
        put(self, "name", _checked_name(name, "schedule name", MAX_SCHEDULE_NAME_LENGTH))
        put(self, "task_type", _checked_name(task_type, "task type", None))
        if queue is not None:
            try:
                validate_queue_name(queue)
            except ConfigurationError as exc:
                raise InvalidSchedule(f"schedule {name!r}: {exc}") from exc
        put(self, "queue", queue)
        try:
            put(self, "payload", encode_payload(payload))
        except ConfigurationError as exc:
            raise InvalidSchedule(f"schedule {name!r}: {exc}") from exc

        cron = parse_spec(spec)
        if not isinstance(timezone, str):
            raise InvalidSchedule(f"schedule {name!r}: timezone must be an IANA zone name string such as 'UTC'")
        if cron.timezone is not None and timezone != DEFAULT_TIMEZONE and cron.timezone != timezone:
            raise InvalidSchedule(
                f"schedule {name!r}: the spec names the zone {cron.timezone!r} but timezone={timezone!r}: "
                "give the zone once, either as timezone= or as the spec's CRON_TZ= prefix"
            )
        zone_name = cron.timezone if cron.timezone is not None else timezone
        put(self, "_zone", load_zone(zone_name))
        put(self, "_cron", cron)
        put(self, "spec", cron.expression)
        put(self, "timezone", zone_name)

        put(self, "deadline", _seconds(deadline, "deadline", name) if deadline is not None else None)
        if self.deadline is not None and self.deadline < MIN_DEADLINE_S:
            raise InvalidSchedule(
                f"schedule {name!r}: deadline {self.deadline:g} s is too short: use at least {MIN_DEADLINE_S} s "
                "(Go's scheduler refuses less), or None for no deadline"
            )
        if max_tries is not None and (not isinstance(max_tries, int) or isinstance(max_tries, bool) or max_tries < 1):
            raise InvalidSchedule(
                f"schedule {name!r}: max_tries must be a whole number of at least 1, or None for the task default "
                f"({DEFAULT_MAX_TRIES}), not {max_tries!r}"
            )
        put(self, "max_tries", max_tries)
        put(self, "misfire", _policy(Misfire, misfire, "misfire", name))
        put(self, "catchup_window", _seconds(catchup_window, "catchup_window", name))
        put(self, "dst_gap", _policy(DstGap, dst_gap, "dst_gap", name))
        put(self, "dst_overlap", _policy(DstOverlap, dst_overlap, "dst_overlap", name))
        put(self, "overlap", _policy(Overlap, overlap, "overlap", name))
        put(self, "jitter", _seconds(jitter, "jitter", name))
        if cron.every_s is not None and self.jitter >= cron.every_s:
            raise InvalidSchedule(
                f"schedule {name!r}: jitter {self.jitter:g} s is not shorter than the @every interval "
                f"{cron.every_s} s: use a smaller jitter, or tasks would fire out of order"
            )
        put(self, "created_at", _wire_time(created_at, name))
        if not isinstance(paused, bool):
            raise InvalidSchedule(f"schedule {name!r}: paused must be True or False, not {paused!r}")
        put(self, "paused", paused)

    # -- derived values ----------------------------------------------------------------------------------------------

    @property
    def cron(self) -> CronSpec:
        """The parsed spec."""
        return self._cron

    @property
    def zone(self) -> ZoneInfo:
        """The time zone the cron fields are read in."""
        return self._zone

    @property
    def wire_spec(self) -> str:
        """The spec as stored for Go: with a ``CRON_TZ=<zone>`` prefix unless the zone is UTC."""
        if self.timezone == DEFAULT_TIMEZONE:
            return self.spec
        return f"{CRON_TZ_PREFIX}{self.timezone} {self.spec}"

    @property
    def created(self) -> datetime | None:
        """:attr:`created_at` as an aware UTC ``datetime`` (microseconds), or ``None``."""
        return None if self.created_at is None else self.created_at.to_datetime()

    @property
    def anchor(self) -> datetime:
        """Where ``@every`` counts from: :attr:`created_at` to the whole second, or the Unix epoch before storing."""
        if self.created_at is None:
            return _UNIX_EPOCH
        return _UNIX_EPOCH + timedelta(seconds=self.created_at.unix_ns // NS_PER_SECOND)

    @property
    def deadline_ns(self) -> int:
        """The deadline in nanoseconds as Go stores it; 0 for none."""
        return 0 if self.deadline is None else round(self.deadline * NS_PER_SECOND)

    @property
    def task_max_tries(self) -> int:
        """The ``max_tries`` of each task: :attr:`max_tries`, or the task default."""
        return DEFAULT_MAX_TRIES if self.max_tries is None else self.max_tries

    # -- due times ---------------------------------------------------------------------------------------------------

    def iter_due(self, after: datetime) -> Iterator[datetime]:
        """Yield the due instants strictly after the aware ``after``, ascending, without end (UTC datetimes).

        Raises:
            asyncjobs.ConfigurationError: ``after`` is naive.
        """
        return self._cron.iter_after(
            _aware(after, "after"),
            zone=self._zone,
            anchor=self.anchor,
            dst_gap=self.dst_gap,
            dst_overlap=self.dst_overlap,
        )

    def next_times(self, after: datetime, count: int = 1) -> list[datetime]:
        """The next ``count`` due instants strictly after the aware ``after``, with the zone and DST policy applied.

        Returns:
            Aware UTC datetimes, ascending.

        Raises:
            asyncjobs.ConfigurationError: ``after`` is naive or ``count`` is negative.
        """
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ConfigurationError(f"next_times count must be a whole number of at least 0, not {count!r}")
        return list(islice(self.iter_due(after), count))

    def next_after(self, after: datetime) -> datetime:
        """The first due instant strictly after the aware ``after`` (UTC).

        Raises:
            asyncjobs.ConfigurationError: ``after`` is naive.
        """
        return next(self.iter_due(after))

    def due_between(self, after: datetime, until: datetime, *, limit: int | None = None) -> list[datetime]:
        """The due instants ``d`` with ``after < d <= until``, ascending; at most the last ``limit`` of them.

        Raises:
            asyncjobs.ConfigurationError: a time is naive.
        """
        end = _aware(until, "until")
        found: list[datetime] = []
        for due in self.iter_due(after):
            if due > end:
                break
            found.append(due)
            if limit is not None and len(found) > limit:
                del found[0]
        return found

    def task_id(self, due: datetime) -> str:
        """The id of the task fired for the due instant ``due``: ``<name>:<due in UTC as 20260308T070000Z>``.

        Every scheduler derives the same id, so a due time fired twice (by two leaders) is one task. Fractions of a
        second are dropped: due instants are whole seconds.

        Raises:
            asyncjobs.ConfigurationError: ``due`` is naive.
        """
        return f"{self.name}:{_aware(due, 'due').astimezone(UTC).strftime(TASK_ID_TIME_FORMAT)}"

    def jittered(self, due: datetime) -> datetime:
        """When to enqueue the task of ``due``: ``due`` plus a delay in ``[0, jitter]`` seconds.

        The delay is drawn from a hash of the schedule name and the due time, so every scheduler computes the same
        instant for the same due time; the task id stays :meth:`task_id` of ``due``.

        Raises:
            asyncjobs.ConfigurationError: ``due`` is naive.
        """
        due = _aware(due, "due").astimezone(UTC)
        steps = int(timedelta(seconds=self.jitter) / _JITTER_RESOLUTION)
        if steps <= 0:
            return due
        digest = hashlib.sha256(self.task_id(due).encode()).digest()
        return due + _JITTER_RESOLUTION * (int.from_bytes(digest[:8], "big") % (steps + 1))

    # -- copies ------------------------------------------------------------------------------------------------------

    def replace(self, **changes: Any) -> Schedule:
        """A copy with the given fields changed, validated like a new schedule.

        Raises:
            InvalidSchedule: a changed value is invalid.
        """
        return dataclasses.replace(self, **changes)


def _checked_name(value: str, what: str, max_length: int | None) -> str:
    try:
        return validate_name(value, what, max_length=max_length)
    except ConfigurationError as exc:
        raise InvalidSchedule(str(exc)) from exc


def _policy(enum: type[_E], value: Any, what: str, name: str) -> _E:
    try:
        return enum(value)
    except ValueError:
        choices = " or ".join(repr(member.value) for member in enum)
        raise InvalidSchedule(f"schedule {name!r}: unknown {what} policy {value!r}: use {choices}") from None


def _seconds(value: Any, what: str, name: str) -> float:
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise InvalidSchedule(
            f"schedule {name!r}: {what} must be seconds as a number or a timedelta, not {type(value).__name__}"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidSchedule(f"schedule {name!r}: {what} must be a finite number of seconds, at least 0: {value!r}")
    return seconds


def _wire_time(value: datetime | WireTime | None, name: str) -> WireTime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise InvalidSchedule(f"schedule {name!r}: created_at must be an aware datetime, e.g. in UTC")
        value = WireTime.from_datetime(value.astimezone(UTC))
    if not isinstance(value, WireTime):
        raise InvalidSchedule(f"schedule {name!r}: created_at must be a datetime, not {type(value).__name__}")
    if not _EARLIEST_CREATED <= value.unix_ns < _LATEST_CREATED:
        raise InvalidSchedule(
            f"schedule {name!r}: created_at {value.to_datetime().isoformat()} is out of range: give a time between "
            "1970 and 2200 (when the schedule was made)"
        )
    return value


def _aware(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ConfigurationError(f"{what} must be an aware datetime (e.g. datetime.now(UTC)), not {value!r}")
    return value
