"""``ajc tasks cron``: the scheduler's commands, attached to ``ajc`` through the ``asyncjobs.ajc`` entry point.

Upstream's commands (``add``, ``view``, ``delete``, ``list``, ``scheduler``) take upstream's arguments and print
upstream's layouts, so schedules added by either ``ajc`` read the same in both. Ours adds the schedule policies as
``add`` flags, ``--json`` everywhere, and ``pause``, ``resume``, ``trigger`` and ``next``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import click

import asyncjobs
from asyncjobs.cli.ajc.groups import AliasGroup
from asyncjobs.cli.ajc.output import Output
from asyncjobs.cli.ajc.session import (
    EXIT_FAILED,
    EXIT_USAGE,
    connection_options,
    fail,
    force_option,
    json_option,
    run,
    session,
)
from asyncjobs.codec import dumps, encode_task
from asyncjobs.constants import DEFAULT_QUEUE
from asyncjobs.errors import QueueNotFound
from asyncjobs_scheduler.ajc_views import cli_errors, go_spec, list_table, load, load_all, next_table, show
from asyncjobs_scheduler.constants import (
    DEFAULT_DST_GAP,
    DEFAULT_DST_OVERLAP,
    DEFAULT_MISFIRE,
    DEFAULT_OVERLAP,
    DEFAULT_TIMEZONE,
    DstGap,
    DstOverlap,
    Misfire,
    Overlap,
)
from asyncjobs_scheduler.durations import parse_go_duration
from asyncjobs_scheduler.errors import InvalidSchedule
from asyncjobs_scheduler.schedule import Schedule
from asyncjobs_scheduler.schedules import Schedules

NS_PER_SECOND: Final = 1_000_000_000
DEFAULT_NEXT_COUNT: Final = 5
MAX_NEXT_COUNT: Final = 10_000
ADD_HELP: Final = """Adds a Scheduled Task entry

NAME: a unique name for this Scheduled Task (letters, digits, _, : and -). SCHEDULE: five cron fields such as
'*/5 * * * *', a descriptor (@daily, @hourly, ...; the words daily, hourly, every ... get the @ added), or
'@every 10m'; the zone is --timezone or a 'CRON_TZ=<zone> ' prefix. TYPE: the type of each task."""
SCHEDULER_HELP: Final = """Runs the Scheduled Task Scheduler

NAME (env AJC_SCHEDULER_NAME): this scheduler's name in the leader election, unique among the schedulers. Run
several (Go's among them): the elected leader fires the schedules. The first SIGTERM or SIGINT hands the leadership
over and exits 0; a second one exits at once."""


@click.group(cls=AliasGroup, aliases=("c",), help="Manage Scheduled Tasks")
@connection_options()
def cron() -> None:
    """``ajc tasks cron``: manage the stored schedules and run a scheduler."""


def _choice(enum: Any) -> click.Choice[str]:
    return click.Choice([member.value for member in enum])


def _seconds(text: str | None, flag: str) -> float | None:
    """A Go duration flag (``90s``, ``1h30m``) in seconds; ``None`` when not given."""
    if text is None:
        return None
    try:
        ns = parse_go_duration(text)
    except InvalidSchedule as exc:
        fail(f"{flag}: {exc}", status=EXIT_USAGE)
    if ns < 0:
        fail(f"{flag}: {text!r} is negative: give a duration such as '90s' or '1h'", status=EXIT_USAGE)
    return ns / NS_PER_SECOND


@cron.command("add", aliases=("new", "a"), help=ADD_HELP)
@click.argument("name")
@click.argument("schedule")
@click.argument("task_type", metavar="TYPE")
@click.option("--payload", default="", help="the task payload, stored as a JSON string, as Go's ajc stores it")
@click.option("--raw-payload", is_flag=True, help="store --payload's bytes as they are (e.g. a JSON object)")
@click.option("--queue", "-q", default=DEFAULT_QUEUE, show_default=True, help="the queue to add the tasks to")
@click.option("--deadline", metavar="DURATION", help="how long after its due time a task may start (at least 30s)")
@click.option("--tries", type=click.IntRange(min=0), default=0, help="each task's maximum tries (0: the default, 10)")
@click.option("--timezone", "--tz", default=DEFAULT_TIMEZONE, show_default=True, help="IANA zone of the cron fields")
@click.option("--misfire", type=_choice(Misfire), default=DEFAULT_MISFIRE.value, show_default=True,
              help="due times missed while no scheduler led")  # fmt: skip
@click.option("--catchup-window", metavar="DURATION", help="never fire missed due times older than this (default 1h)")
@click.option("--dst-gap", type=_choice(DstGap), default=DEFAULT_DST_GAP.value, show_default=True,
              help="a fixed-hour local time that a DST change skips")  # fmt: skip
@click.option("--dst-overlap", type=_choice(DstOverlap), default=DEFAULT_DST_OVERLAP.value, show_default=True,
              help="a fixed-hour local time that a DST change repeats")  # fmt: skip
@click.option("--overlap", type=_choice(Overlap), default=DEFAULT_OVERLAP.value, show_default=True,
              help="skip: do not fire while the previous task is not final")  # fmt: skip
@click.option("--jitter", metavar="DURATION", help="enqueue each task up to this long after its due time")
@click.option("--paused", is_flag=True, help="add it paused (start it with `resume`)")
@json_option
def add(
    name: str,
    schedule: str,
    task_type: str,
    payload: str,
    raw_payload: bool,
    queue: str,
    deadline: str | None,
    tries: int,
    timezone: str,
    misfire: str,
    catchup_window: str | None,
    dst_gap: str,
    dst_overlap: str,
    overlap: str,
    jitter: str | None,
    paused: bool,
    json_output: bool,
) -> None:
    """``ajc tasks cron add``: store a schedule as upstream's ajc does, with our policies when given."""
    options: dict[str, Any] = {
        "queue": queue,
        "timezone": timezone,
        "deadline": _seconds(deadline, "--deadline") or None,
        "max_tries": tries or None,
        "misfire": misfire,
        "dst_gap": dst_gap,
        "dst_overlap": dst_overlap,
        "overlap": overlap,
        "jitter": _seconds(jitter, "--jitter") or 0,
        "paused": paused,
    }
    window = _seconds(catchup_window, "--catchup-window")
    if window is not None:
        options["catchup_window"] = window
    data: bytes | None = None
    if payload:
        data = payload.encode() if raw_payload else dumps(payload)
    try:  # before connecting: a bad spec, zone or setting is a usage error, with the library's message
        wanted = Schedule(name, go_spec(schedule), task_type, data, **options)
    except InvalidSchedule as exc:
        fail(str(exc), status=EXIT_USAGE)
    out = Output(json=json_output)

    async def work() -> None:
        # Like upstream's ajc, create the task store and the DEFAULT queue when missing; any other queue must exist.
        bound = queue if queue == DEFAULT_QUEUE else asyncjobs.Queue(queue, no_create=True)
        try:
            async with session().client(queue=bound, init=True) as client:
                with cli_errors(name):
                    await Schedules(client).add(wanted)
                show(out, await load(client, name))
        except QueueNotFound:
            fail(
                f"queue {queue!r} does not exist: create it with `ajc queues add {queue}`, or name another with -q",
                status=EXIT_FAILED,
            )

    run(work)


@cron.command("view", aliases=("show", "v"), help="Views a Scheduled Task\n\nNAME: the name of the Schedule to view.")
@click.argument("name")
@json_option
def view(name: str, json_output: bool) -> None:
    """``ajc tasks cron view``: upstream's view of a schedule, or its stored JSON."""
    out = Output(json=json_output)

    async def work() -> None:
        async with session().client() as client:
            show(out, await load(client, name))

    run(work)


@cron.command("delete", aliases=("del", "rm"), help="Removes a Scheduled Task entry\n\nTasks it already enqueued stay.")
@click.argument("name")
@force_option
def delete(name: str, force: bool) -> None:
    """``ajc tasks cron delete``: remove a schedule, after asking unless ``-f``."""
    out = Output()

    async def work() -> None:
        async with session().client() as client:
            await load(client, name)  # a missing one fails before anyone is asked
            out.confirm(f"Really remove Scheduled Task {name}", force=force)
            with cli_errors(name):
                await Schedules(client).remove(name)
        out.line(f"Removed Scheduled Task {name}")

    run(work)


@cron.command("list", aliases=("ls",), help="List Scheduled Tasks")
@click.option("--names", is_flag=True, help="show only the names")
@json_option
def list_(names: bool, json_output: bool) -> None:
    """``ajc tasks cron list``: upstream's table of schedules (plus when each is next due), names or JSON."""
    out = Output(json=json_output)

    async def work() -> None:
        async with session().client() as client:
            found, skipped = await load_all(client)
        for warning in skipped:
            click.echo(f"ajc: warning: {warning}", err=True)
        if json_output:
            out.print_json([stored.schedule.name if names else stored.document for stored in found])
        elif names:
            for stored in found:
                out.line(stored.schedule.name)
        elif not found:
            out.line("No Scheduled Tasks found")
        else:
            list_table(out, found)

    run(work)


@cron.command("scheduler", help=SCHEDULER_HELP)
@click.argument("name", envvar="AJC_SCHEDULER_NAME", required=False)
@click.option("--monitor", type=click.IntRange(min=0, max=65535), envvar="AJC_MONITOR", metavar="PORT",
              help="serve /metrics, /healthz and /readyz on this port (env AJC_MONITOR)")  # fmt: skip
def scheduler(name: str | None, monitor: int | None) -> None:
    """``ajc tasks cron scheduler``: run a leader-elected scheduler until SIGTERM or SIGINT."""
    if not name:
        fail(
            "the scheduler needs a name, unique among the schedulers: `ajc tasks cron scheduler NAME`, "
            "or set AJC_SCHEDULER_NAME",
            status=EXIT_USAGE,
        )
    # Imported here: only this command needs the runner (the one of `python -m asyncjobs_scheduler`).
    from asyncjobs_scheduler.cli import run_scheduler

    elected_as: str = name
    options: dict[str, object] = dict(session().client_options())
    if monitor:
        options["prometheus_port"] = monitor

    async def work() -> None:
        await run_scheduler(elected_as, DEFAULT_QUEUE, options)

    run(work, service=True)


@cron.command("pause", help="Stops firing a Scheduled Task until it is resumed")
@click.argument("name")
def pause(name: str) -> None:
    """``ajc tasks cron pause``: stop firing a schedule."""
    _set_paused(name, True)


@cron.command("resume", help="Fires a paused Scheduled Task again, from its next due time")
@click.argument("name")
def resume(name: str) -> None:
    """``ajc tasks cron resume``: fire a paused schedule again from its next due time."""
    _set_paused(name, False)


def _set_paused(name: str, paused: bool) -> None:
    out = Output()

    async def work() -> None:
        async with session().client() as client:
            await load(client, name)
            with cli_errors(name):
                if paused:
                    await Schedules(client).pause(name)
                else:
                    await Schedules(client).resume(name)
        out.line(f"{'Paused' if paused else 'Resumed'} Scheduled Task {name}")

    run(work)


@cron.command("trigger", help="Enqueues a task of a Scheduled Task now, outside its schedule\n\n"
          "The task gets a fresh id, so it never stands in for a due time's task; a paused schedule can be "
          "triggered too.")  # fmt: skip
@click.argument("name")
@json_option
def trigger(name: str, json_output: bool) -> None:
    """``ajc tasks cron trigger``: enqueue one task of a schedule now and print its id."""
    out = Output(json=json_output)

    async def work() -> None:
        async with session().client() as client:
            stored = await load(client, name)
            with cli_errors(name):
                try:
                    task = await Schedules(client).trigger(name)
                except QueueNotFound:
                    fail(
                        f"queue {stored.schedule.queue!r} of scheduled task {name!r} does not exist: create it with "
                        f"`ajc queues add {stored.schedule.queue}`",
                        status=EXIT_FAILED,
                    )
        if json_output:
            out.print_json_bytes(encode_task(task))
        else:
            out.line(f"Enqueued task {task.id}")

    run(work)


@cron.command("next", help="Shows when a Scheduled Task is next due, in its zone and in UTC\n\n"
          "COUNT: how many due times to show (default 5).")  # fmt: skip
@click.argument("name")
@click.argument("count", type=click.IntRange(min=1, max=MAX_NEXT_COUNT), default=DEFAULT_NEXT_COUNT)
@json_option
def next_(name: str, count: int, json_output: bool) -> None:
    """``ajc tasks cron next``: the next ``count`` due times of a schedule, in its zone and in UTC."""
    out = Output(json=json_output)

    async def work() -> None:
        async with session().client() as client:
            stored = await load(client, name)
        next_table(out, stored.schedule, stored.schedule.next_times(datetime.now(UTC), count))

    run(work)
