"""What ``ajc tasks cron`` reads and prints: stored schedules as upstream's ``ajc`` shows them, plus our settings.

The commands live in :mod:`asyncjobs_scheduler.ajc`; this module loads the stored ScheduledTask JSON (kept as
stored, so ``--json`` prints what Go's ``ajc`` prints) and lays it out in upstream's block and table.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NoReturn

import asyncjobs
from asyncjobs.cli.ajc.durations import humanize_duration
from asyncjobs.cli.ajc.output import Output, size, table_width, when
from asyncjobs.cli.ajc.session import EXIT_FAILED, fail
from asyncjobs.codec import loads_object
from asyncjobs.constants import CONFIG_BUCKET, JS_ERR_STREAM_NOT_FOUND
from asyncjobs.errors import CorruptDataError, JetStreamError
from asyncjobs.names import validate_name
from asyncjobs_scheduler.codec import decode_schedule
from asyncjobs_scheduler.constants import (
    DEFAULT_CATCHUP_WINDOW_S,
    DEFAULT_DST_GAP,
    DEFAULT_DST_OVERLAP,
    DEFAULT_MISFIRE,
    DEFAULT_OVERLAP,
    SCHEDULE_KEY_PREFIX,
)
from asyncjobs_scheduler.errors import InvalidSchedule, ScheduleExists, ScheduleNotFound
from asyncjobs_scheduler.schedule import Schedule

GO_DESCRIPTOR_WORDS: Final = ("yearly", "annually", "monthly", "weekly", "daily", "midnight", "hourly", "every")
"""Schedules starting with one of these get an ``@`` in front, as upstream's ``ajc tasks cron add`` does."""
LIST_HEADERS: Final = ("Name", "Schedule", "Queue", "Task Type", "Created")
"""Upstream's columns of ``ajc tasks cron list``; ours adds :data:`NEXT_HEADER` after them."""
NEXT_HEADER: Final = "Next"
LOCAL_TIME_FORMAT: Final = "%d %b %y %H:%M:%S %Z"


@dataclass(frozen=True)
class Stored:
    """A schedule as stored: decoded, and its JSON object as written (Go's keys and ours)."""

    schedule: Schedule
    document: dict[str, Any]


def go_spec(spec: str) -> str:
    """The spec as upstream's ``ajc`` stores it: ``daily`` becomes ``@daily``, ``every 10s`` becomes ``@every 10s``."""
    for word in GO_DESCRIPTOR_WORDS:
        if spec.startswith(word):
            return "@" + spec
    return spec


# ---- errors, in the command line's words ---------------------------------------------------------------------------


def not_found(name: str) -> NoReturn:
    """Exit 1: there is no schedule ``name``."""
    fail(f"scheduled task {name!r} not found: list them with `ajc tasks cron list`", status=EXIT_FAILED)


@contextmanager
def cli_errors(name: str) -> Iterator[None]:
    """Turn the library's lookup errors about schedule ``name`` into the command line's messages and exit 1."""
    try:
        yield
    except ScheduleNotFound:
        not_found(name)
    except ScheduleExists:
        fail(
            f"scheduled task {name!r} already exists: remove it first with `ajc tasks cron delete {name}`, "
            "or choose another name",
            status=EXIT_FAILED,
        )
    except JetStreamError as exc:
        if exc.err_code == JS_ERR_STREAM_NOT_FOUND and CONFIG_BUCKET in str(exc):
            not_found(name)  # nothing was ever stored on this server
        raise


# ---- reading ------------------------------------------------------------------------------------------------------


def _decode(data: bytes) -> Stored:
    return Stored(decode_schedule(data), loads_object(data, "scheduled task"))


async def load(client: asyncjobs.Client, name: str) -> Stored:
    """The stored schedule ``name``.

    Raises:
        click.exceptions.Exit: it does not exist (after printing why).
        InvalidNameError: ``name`` is not a valid schedule name.
        CorruptDataError: the stored value cannot be decoded.
    """
    validate_name(name, "schedule name")  # never a key pattern: 'a.*' would read other keys
    try:
        entry = await client.key_value(CONFIG_BUCKET).get(SCHEDULE_KEY_PREFIX + name)
    except JetStreamError as exc:
        if exc.err_code == JS_ERR_STREAM_NOT_FOUND:
            not_found(name)
        raise
    if entry is None:
        not_found(name)
    return _decode(entry.value)


async def load_all(client: asyncjobs.Client) -> tuple[list[Stored], list[str]]:
    """Every stored schedule by name, and a warning for each one that cannot be decoded."""
    try:
        entries = await client.key_value(CONFIG_BUCKET).entries(SCHEDULE_KEY_PREFIX + "*")
    except JetStreamError as exc:
        if exc.err_code == JS_ERR_STREAM_NOT_FOUND:
            return [], []  # nothing was ever stored on this server
        raise
    found: list[Stored] = []
    skipped: list[str] = []
    for entry in entries:
        try:
            found.append(_decode(entry.value))
        except (CorruptDataError, InvalidSchedule) as exc:
            skipped.append(f"skipping {entry.key}: {exc}")
    return sorted(found, key=lambda stored: stored.schedule.name), skipped


# ---- printing -----------------------------------------------------------------------------------------------------


def show(out: Output, stored: Stored) -> None:
    """Upstream's view of a schedule (then our settings that differ from the defaults), or its stored JSON."""
    if out.json:
        out.print_json(stored.document)
        return
    schedule = stored.schedule
    out.block(f"Scheduled Task {schedule.name} created at {when(schedule.created)}", view_rows(schedule))


def view_rows(schedule: Schedule) -> list[tuple[str, str]]:
    """The ``key: value`` rows of a schedule's view: upstream's, then the settings Go does not have, when set."""
    rows = [
        ("Schedule", schedule.wire_spec),
        ("Queue", schedule.queue or ""),
        ("Task Type", schedule.task_type),
        ("Payload", size(len(schedule.payload or b""))),
    ]
    if schedule.deadline:
        rows.append(("Scheduling Deadline", humanize_duration(schedule.deadline)))
    if schedule.max_tries is not None:
        rows.append(("Maximum Tries", f"{schedule.max_tries:,}"))
    if schedule.misfire != DEFAULT_MISFIRE:
        rows.append(("Misfire", schedule.misfire.value))
    if schedule.catchup_window != DEFAULT_CATCHUP_WINDOW_S:
        rows.append(("Catch-up Window", humanize_duration(schedule.catchup_window)))
    if schedule.dst_gap != DEFAULT_DST_GAP:
        rows.append(("DST Gap", schedule.dst_gap.value))
    if schedule.dst_overlap != DEFAULT_DST_OVERLAP:
        rows.append(("DST Overlap", schedule.dst_overlap.value))
    if schedule.overlap != DEFAULT_OVERLAP:
        rows.append(("Overlap", schedule.overlap.value))
    if schedule.jitter:
        rows.append(("Jitter", humanize_duration(schedule.jitter)))
    if schedule.paused:
        rows.append(("Paused", "true"))
    return rows


def list_table(out: Output, found: Sequence[Stored], now: datetime | None = None) -> None:
    """Upstream's table of schedules, with a column for each one's next due time when the terminal is wide enough."""
    now = now or datetime.now(UTC)
    rows: list[list[str]] = []
    for stored in found:
        schedule = stored.schedule
        upcoming = "paused" if schedule.paused else when(schedule.next_after(now))
        row = [schedule.name, schedule.wire_spec, schedule.queue or "", schedule.task_type, when(schedule.created)]
        rows.append([*row, upcoming])
    headers = [*LIST_HEADERS, NEXT_HEADER]
    if out.interactive and table_width(headers, rows) > out.console.width:
        headers, rows = headers[:-1], [row[:-1] for row in rows]  # upstream's columns first: Next goes
    out.table(f"{len(found)} Scheduled Task(s)", headers, rows)


def next_table(out: Output, schedule: Schedule, dues: Sequence[datetime]) -> None:
    """The next due times of a schedule in its zone and in UTC, or them as JSON."""
    if out.json:
        out.print_json(
            {
                "name": schedule.name,
                "schedule": schedule.wire_spec,
                "timezone": schedule.timezone,
                "paused": schedule.paused,
                "next": [
                    {"utc": due.strftime("%Y-%m-%dT%H:%M:%SZ"), "local": due.astimezone(schedule.zone).isoformat()}
                    for due in dues
                ],
            }
        )
        return
    title = f"Next {len(dues)} due time(s) of {schedule.name}" + (" (paused)" if schedule.paused else "")
    rows = [
        [str(number), due.astimezone(schedule.zone).strftime(LOCAL_TIME_FORMAT), when(due)]
        for number, due in enumerate(dues, start=1)
    ]
    out.table(title, ["#", f"Local Time ({schedule.timezone})", "UTC"], rows)
