"""``ajc tasks``: add, view, list, retry, delete, purge and watch tasks; initialize and configure the task store."""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import timedelta
from typing import Any

import click

from asyncjobs.cli.ajc.blocks import task_store_block
from asyncjobs.cli.ajc.durations import DURATION
from asyncjobs.cli.ajc.groups import AliasGroup
from asyncjobs.cli.ajc.output import Output, when
from asyncjobs.cli.ajc.session import EXIT_FAILED, connection_options, fail, force_option, json_option, run, session
from asyncjobs.cli.ajc.taskstore import configure, initialize
from asyncjobs.cli.ajc.taskviews import missing_as, show_task, watch
from asyncjobs.task import FAILED_STATES, Task, TaskState

__all__ = ["task_store_block", "tasks"]

DEFAULT_QUEUE = "DEFAULT"
DEFAULT_LIST_LIMIT = 200
RETRY_IN_FLIGHT = 200
"""Bulk retries sent at once (``tasks retry --failed``/``--state``)."""
STATE_NAMES = tuple(state.value for state in TaskState if state.value)
"""The task states a filter may name (the wire names)."""


@click.group(cls=AliasGroup, aliases=("t", "task"), help="Manage Tasks")
@click.option("--sign", metavar="SEED", help="Signs tasks using an ed25519 seed (64 hex characters, or a file of them)")
@click.option(
    "--verify", metavar="KEY", help="Verifies tasks using an ed25519 public key (64 hex characters, or a file of them)"
)
@connection_options()
@click.pass_context
def tasks(ctx: click.Context, sign: str | None, verify: str | None) -> None:
    session().signing.update(signing_options(sign, verify))


for _command in (watch, initialize, configure):
    tasks.add_command(_command)


def signing_options(sign: str | None, verify: str | None) -> dict[str, str]:
    """The :func:`asyncjobs.connect` options for ``--sign`` and ``--verify``: a key, or the file holding it."""
    options: dict[str, str] = {}
    if sign:
        options["signing_seed_file" if os.path.isfile(sign) else "signing_seed"] = sign
    if verify:
        options["verification_key_file" if os.path.isfile(verify) else "verification_key"] = verify
    return options


def queue_binding(name: str) -> Any:
    """The queue a command that enqueues binds: ``DEFAULT`` is created when missing (as by any client), any other
    queue must exist, so a typo is not silently made into a new queue."""
    import asyncjobs

    return name if name == DEFAULT_QUEUE else asyncjobs.Queue(name, no_create=True)


def queue_missing(name: str) -> str:
    """The error for a queue that does not exist."""
    return f"queue {name!r} not found: create it with ajc queues new {name}"


def split_ids(values: tuple[str, ...]) -> list[str]:
    """Task ids given comma-separated, repeated, or both."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


@tasks.command("add", aliases=("new", "a", "enqueue"), help="Adds a new Task to a queue")
@click.argument("type")
@click.argument("payload")
@click.option(
    "--queue",
    "-q",
    "queue_name",
    default=DEFAULT_QUEUE,
    show_default=True,
    help="The name of the queue to add the task to (it must exist, except DEFAULT)",
)
@click.option(
    "--deadline",
    type=DURATION,
    default=None,
    help="How long from now a handler may still start the task (90s, 10m, 1h30m, 2d)",
)
@click.option(
    "--tries", type=click.IntRange(min=1), default=None, help="Sets the maximum amount of times this task may be tried"
)
@click.option(
    "--depends", multiple=True, metavar="IDS", help="Sets IDs to depend on, comma separated or pass multiple times"
)
@click.option("--load/--no-load", default=False, help="Loads results from dependencies before executing task")
@json_option
def add(
    type: str,
    payload: str,
    queue_name: str,
    deadline: float | None,
    tries: int | None,
    depends: tuple[str, ...],
    load: bool,
    json_output: bool,
) -> None:
    """Enqueue a task whose payload is the argument as a JSON string, as upstream's ``ajc`` stores it."""
    import asyncjobs
    from asyncjobs.codec import dumps, task_to_wire

    options: dict[str, Any] = {"dependencies": split_ids(depends), "load_dependencies": load}
    if deadline:
        options["deadline"] = timedelta(seconds=deadline)
    if tries is not None:
        options["max_tries"] = tries

    async def work() -> None:
        # The payload bytes are the JSON string literal, HTML-escaped as Go's encoder writes it.
        task = asyncjobs.Task(type, dumps(payload), **options)
        try:
            async with session().client(queue=queue_binding(queue_name), init=True) as client:
                await client.enqueue(task)
        except asyncjobs.QueueNotFound:
            fail(queue_missing(queue_name))
        out = Output(json=json_output)
        if json_output:
            out.print_json(task_to_wire(task))
        else:
            out.line(f"Enqueued task {task.id}")

    run(work)


@tasks.command(
    "retry",
    help="Retries delivery of a task currently in the Task Store. With --failed or --state instead of an id, retries "
    "every task that matches (narrowed by --type, --in-queue and --limit), asking first unless -f.",
)
@click.argument("id", required=False)
@click.option(
    "--queue",
    "-q",
    "queue_name",
    default=None,
    help="The name of the queue to add the task to [default: DEFAULT; with --failed or --state: each task's own queue]",
)
@click.option(
    "--failed",
    is_flag=True,
    help="retry every task that failed for good (expired, terminated, unreachable, queue_error)",
)
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(STATE_NAMES),
    help="retry every task in this state (repeat for more)",
)
@click.option("--type", "task_type", default=None, help="with --failed or --state: only tasks of this type")
@click.option("--in-queue", default=None, help="with --failed or --state: only tasks now in this queue")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="with --failed or --state: at most this many")
@click.option(
    "--force",
    "-f",
    is_flag=True,
    help="do not ask for confirmation, and retry active tasks too (their handler may still be running)",
)
def retry(
    id: str | None,
    queue_name: str | None,
    failed: bool,
    states: tuple[str, ...],
    task_type: str | None,
    in_queue: str | None,
    limit: int | None,
    force: bool,
) -> None:
    """Retry one task and show it, as upstream does, or every task that matches the filters."""
    bulk = failed or bool(states)
    if id is not None and (bulk or task_type or in_queue or limit):
        raise click.UsageError("give a task id, or --failed/--state (with --type, --in-queue, --limit), not both")
    if id is None and not bulk:
        raise click.UsageError("give the id of the task to retry, or --failed or --state to retry every matching task")
    if id is not None:
        run(lambda: _retry_one(id, queue_name or DEFAULT_QUEUE, force))
        return
    selected = tuple(FAILED_STATES) if failed else ()
    run(lambda: _retry_many((*selected, *states), task_type, in_queue, limit, queue_name, force))


async def _retry_one(task_id: str, queue_name: str, force: bool) -> None:
    import asyncjobs

    try:
        async with session().client(queue=queue_binding(queue_name), init=True) as client:
            with missing_as(task_id):
                try:
                    await client.retry_task(task_id, force=force)
                except asyncjobs.InvalidTaskStateError:
                    fail(
                        f"task {task_id} is active (a handler is running it): retrying it now would run it twice "
                        "at once; wait for it, or pass -f if its worker is gone"
                    )
                task = await client.get_task(task_id)
    except asyncjobs.QueueNotFound:
        fail(queue_missing(queue_name))
    show_task(Output(), task)


async def _retry_many(
    states: tuple[str, ...],
    task_type: str | None,
    in_queue: str | None,
    limit: int | None,
    queue_name: str | None,
    force: bool,
) -> None:
    import asyncjobs

    out = Output()
    async with session().client() as client:
        with missing_as():
            listing = client.admin.tasks(states=states, task_type=task_type, queue=in_queue, limit=limit)
            found = [task async for task in listing]
    if not found:
        out.line("No tasks to retry")
        return
    out.confirm(f"Really retry {len(found):,} tasks", force=force)
    targets = {task.id: queue_name or task.queue or DEFAULT_QUEUE for task in found}
    clients: dict[str, Any] = {}  # one client per target queue, or why there is none
    async with contextlib.AsyncExitStack() as stack:
        for target in dict.fromkeys(targets.values()):
            try:
                binding = queue_binding(target)
                clients[target] = await stack.enter_async_context(session().client(queue=binding, init=True))
            except asyncjobs.QueueNotFound:
                clients[target] = queue_missing(target)
            except asyncjobs.AsyncJobsError as exc:
                clients[target] = str(exc)

        async def retry_one(task_id: str) -> str | None:
            client = clients[targets[task_id]]
            try:
                if isinstance(client, str):
                    return f"task {task_id}: {client}"
                await client.retry_task(task_id, force=force)
                return None
            except asyncjobs.AsyncJobsError as exc:
                return f"task {task_id}: {exc}"
            finally:
                bar.advance()

        outcomes: list[str | None] = []
        with out.progress("Retrying tasks", total=len(found)) as bar:
            # A few hundred at a time: each retry is a load, a save and a publish, which overlap.
            for start in range(0, len(found), RETRY_IN_FLIGHT):
                chunk = found[start : start + RETRY_IN_FLIGHT]
                outcomes += await asyncio.gather(*(retry_one(task.id) for task in chunk))
    failures = [outcome for outcome in outcomes if outcome is not None]
    for failure in failures:
        click.echo(f"ajc: error: {failure}", err=True)
    retried = len(found) - len(failures)
    if failures:
        out.line(f"Retried {retried:,} of {len(found):,} tasks")
        raise click.exceptions.Exit(EXIT_FAILED)
    out.line(f"Retried {retried:,} tasks")


@tasks.command("view", aliases=("show", "v", "info", "i"), help="Views the status of a Task")
@click.argument("id")
@json_option
def view(id: str, json_output: bool) -> None:
    """Show one task (upstream's block, or its stored JSON)."""

    async def work() -> None:
        async with session().client() as client:
            with missing_as(id):
                task = await client.get_task(id)
        show_task(Output(json=json_output), task)

    run(work)


@tasks.command("delete", aliases=("del", "rm"), help="Removes a task from the tasks storage")
@click.argument("id")
@force_option
def delete(id: str, force: bool) -> None:
    """Erase one task from the store (its queue item, if any, is ended when delivered)."""
    out = Output()
    out.confirm(f"Really remove Task {id}, work queue entries will not be removed", force=force)

    async def work() -> None:
        async with session().client() as client:
            with missing_as(id):
                await client.delete_task(id)
        out.line(f"Removed Task {id}")

    run(work)


@tasks.command(
    "list",
    aliases=("ls",),
    help="List Tasks. Shows the oldest LIMIT tasks (200 by default); --state, --type and --queue keep only the "
    "tasks that match (each may be repeated); --json prints a JSON array of the tasks as stored.",
)
@click.argument("limit", type=click.IntRange(min=1), default=DEFAULT_LIST_LIMIT, required=False)
@click.option("--state", "states", multiple=True, type=click.Choice(STATE_NAMES), help="only tasks in this state")
@click.option("--type", "types", multiple=True, help="only tasks of this type")
@click.option("--queue", "queues", multiple=True, help="only tasks of this queue")
@json_option
def list_tasks(
    limit: int, states: tuple[str, ...], types: tuple[str, ...], queues: tuple[str, ...], json_output: bool
) -> None:
    """The stored tasks in upstream's table (``N Tasks`` or ``N of M Tasks``), or a JSON array of them."""
    from asyncjobs.codec import task_to_wire
    from asyncjobs.constants import JS_ERR_STREAM_NOT_FOUND
    from asyncjobs.errors import JetStreamError

    filtered = bool(states or types or queues)

    async def work() -> None:
        out = Output(json=json_output)
        async with session().client() as client:
            try:
                total = (await client.admin.tasks_info()).tasks
            except JetStreamError as exc:
                if exc.err_code != JS_ERR_STREAM_NOT_FOUND:
                    raise
                total = 0  # no store yet: no tasks, as upstream (which creates the store first) says
            found, matched = await _select(client.admin, states, types, queues, limit) if total else ([], 0)
        if not filtered:
            matched = max(total, len(found))
        if json_output:
            out.print_json([task_to_wire(task) for task in found])
            return
        if not found:
            fail("no tasks found")
        title = f"{len(found)} of {matched} Tasks" if matched > len(found) else f"{len(found)} Tasks"
        rows = [(t.id, t.type, when(t.created), out.state(t.state.value), t.queue, t.tries) for t in found]
        out.table(title, ("ID", "Type", "Created", "State", "Queue", "Tries"), rows)

    run(work)


async def _select(
    admin: Any, states: tuple[str, ...], types: tuple[str, ...], queues: tuple[str, ...], limit: int
) -> tuple[list[Task], int]:
    """Up to ``limit`` tasks that match the filters, and how many match in all (filtered listings only)."""
    filtered = bool(states or types or queues)
    found: list[Task] = []
    matched = 0
    async for task in admin.tasks(states=states, limit=None if filtered else limit):
        if (types and task.type not in types) or (queues and task.queue not in queues):
            continue
        matched += 1  # a filtered listing is read to the end, so its title can say how many matched
        if len(found) < limit:
            found.append(task)
    return found, matched


@tasks.command("purge", help="Purge all entries from the Tasks store")
@force_option
def purge(force: bool) -> None:
    """Delete every stored task; work queue items stay (a worker ends each whose task is gone)."""
    out = Output()

    async def work() -> None:
        async with session().client() as client:
            with missing_as():
                if not force:
                    count = (await client.admin.tasks_info()).tasks
                    out.confirm(
                        f"Really purge the Task Store of {count:,} entries, work queue entries will not be removed",
                        force=False,
                    )
                await client.admin.purge_tasks()
        out.line("Purged all task entries")

    run(work)
