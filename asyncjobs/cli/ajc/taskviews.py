"""How ``ajc tasks`` shows tasks and lifecycle events, in upstream's layouts; ``tasks watch``."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any, Final

import click

from asyncjobs.cli.ajc.durations import DURATION, humanize_duration
from asyncjobs.cli.ajc.groups import AliasCommand
from asyncjobs.cli.ajc.output import Output, size, when
from asyncjobs.cli.ajc.session import connection_options, fail, json_option, run, session
from asyncjobs.codec import Event, LeaderElectedEvent, TaskStateEvent, format_time, task_to_wire
from asyncjobs.task import Task

# ---- errors ------------------------------------------------------------------------------------------------------

NO_TASK_STORE: Final = "the task store does not exist: create it with ajc tasks initialize, or add a task"


@contextlib.contextmanager
def missing_as(task_id: str | None = None, *, no_store: str = NO_TASK_STORE) -> Iterator[None]:
    """Turn the library's errors for a task or a task store that does not exist into short ones (exit 1).

    Args:
        task_id: the task looked up: ``task <id> not found``, as upstream says (also when there is no store).
        no_store: the message when the task store does not exist and no task is looked up.
    """
    from asyncjobs.constants import JS_ERR_STREAM_NOT_FOUND
    from asyncjobs.errors import JetStreamError, TaskNotFound

    try:
        yield
    except TaskNotFound:
        fail(f"task {task_id} not found")
    except JetStreamError as exc:
        if exc.err_code != JS_ERR_STREAM_NOT_FOUND:
            raise
        fail(no_store if task_id is None else f"task {task_id} not found")


# ---- a task ------------------------------------------------------------------------------------------------------


def task_rows(out: Output, task: Task) -> list[tuple[str, Any]]:
    """The ``key: value`` rows of upstream's task view, in its order, with the same rows left out."""
    rows: list[tuple[str, Any]] = [
        ("Task Type", task.type),
        ("Payload", size(len(task.payload or b""))),
        ("Status", out.state(task.state.value)),
    ]
    if task.dependencies:
        rows.append(("Dependencies", ", ".join(task.dependencies)))
        rows.append(("Load Dep Results", "true" if task.load_dependencies else "false"))
    if task.result is not None:
        completed = task.result.completed
        rows.append(
            ("Completed", f"{when(completed)} ({humanize_duration((completed - task.created).total_seconds())})")
        )
    else:
        if task.tried is not None:
            rows.append(("Last Processed", when(task.tried)))
        if task.last_err:
            rows.append(("Last Error", task.last_err))
    if task.queue:
        rows.append(("Queue", task.queue))
    rows.append(("Tries", task.tries))
    if task.deadline is not None:
        rows.append(("Scheduling Deadline", when(task.deadline)))
    if task.max_tries > 0:
        rows.append(("Maximum Tries", task.max_tries))
    return rows


def show_task(out: Output, task: Task) -> None:
    """Print a task as upstream's ``ajc tasks view`` does, or its stored JSON with ``--json``."""
    if out.json:
        out.print_json(task_to_wire(task))
        return
    out.block(f"Task {task.id} created at {when(task.created)}", task_rows(out, task))


# ---- lifecycle events --------------------------------------------------------------------------------------------


def event_to_wire(event: Event) -> dict[str, Any]:
    """An event as its JSON object on the wire, in Go's field order with its ``omitempty`` rules."""
    obj: dict[str, Any] = {"event_id": event.event_id, "type": event.type, "timestamp": format_time(event.timestamp)}
    if isinstance(event, TaskStateEvent):
        obj.update(task_id=event.task_id, state=event.state.value, tries=event.tries)
        if event.queue:
            obj["queue"] = event.queue
        obj["task_type"] = event.task_type
        if event.last_error:
            obj["last_error"] = event.last_error
        if event.task_age_ns:
            obj["task_age"] = event.task_age_ns
    else:
        obj.update(name=event.name, component=event.component)
    return obj


def event_line(event: Event) -> str:
    """One line of upstream's ``ajc tasks watch``: ``[06:12:59] <id>: queue: Q type: T tries: 0 state: new``."""
    stamp = event.timestamp.to_datetime().astimezone().strftime("%H:%M:%S")  # local time, as Go prints it
    if isinstance(event, LeaderElectedEvent):
        return f"[{stamp}] {event.name}: elected leader of {event.component}"
    line = (
        f"[{stamp}] {event.task_id}: queue: {event.queue} type: {event.task_type} tries: {event.tries} "
        f"state: {event.state.value}"
    )
    return f"{line} error: {event.last_error}" if event.last_error else line


# ---- watch ---------------------------------------------------------------------------------------------------------


@click.command(
    "watch",
    cls=AliasCommand,
    help="Watch job updates in real time. Runs until Ctrl-C, or --count events or --for a time; --json prints "
    "each event as a JSON line.",
)
@click.option("--task", "task_id", default=None, help="Watch for updates related to a specific task ID")
@click.option("--count", type=click.IntRange(min=1), default=None, help="stop after this many events")
@click.option("--for", "duration", type=DURATION, default=None, help="stop after this long (90s, 10m, 1h)")
@json_option
@connection_options()
def watch(task_id: str | None, count: int | None, duration: float | None, json_output: bool) -> None:
    """Print lifecycle events as they happen, one line each (one JSON object per line with ``--json``)."""
    run(lambda: _watch(Output(json=json_output), task_id, count, duration))


async def _watch(out: Output, task_id: str | None, count: int | None, duration: float | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:  # Ctrl-C or a service stop ends the watch normally (exit 0), as the operator meant it to
        loop.add_signal_handler(sig, stop.set)
    try:
        async with session().client() as client, client.events(task_id) as events:
            printer = asyncio.ensure_future(_print_events(out, events, count))
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({printer, stopper}, timeout=duration, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
                printer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await printer  # surfaces a failure of the subscription
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


async def _print_events(out: Output, events: AsyncIterator[Event], count: int | None) -> None:
    seen = 0
    async for event in events:
        if out.json:
            out.print_json(event_to_wire(event), lines=True)
        else:
            out.line(event_line(event))
            sys.stdout.flush()  # each line as it happens, also into a pipe
        seen += 1
        if count is not None and seen >= count:
            return
