"""``ajc queues``: create, list, inspect, configure, purge and delete work queues."""

from __future__ import annotations

from typing import Any

import click

from asyncjobs.cli.ajc.blocks import QUEUE_HEADERS, queue_block, queue_json, queue_row
from asyncjobs.cli.ajc.durations import DURATION
from asyncjobs.cli.ajc.groups import AliasGroup
from asyncjobs.cli.ajc.output import Output
from asyncjobs.cli.ajc.session import connection_options, fail, force_option, json_option, run, session

QUEUE_ARG = click.argument("queue")
UNLIMITED_TRIES = -1
UPSTREAM_RUN_TIME_S = 3600.0
"""``queues new --run-time`` defaults to an hour, as upstream's does (a queue made in code defaults to 5 minutes)."""


@click.group(cls=AliasGroup, aliases=("q", "queue"), help="Manage Work Queues")
@connection_options()
def queues() -> None:
    pass


@queues.command("new", aliases=("add", "n", "a"), help="Creates a new Queue")
@QUEUE_ARG
@click.option("--age", type=DURATION, default="0s", show_default=True,
              help="Sets the maximum age for entries to keep, 0s for unlimited")  # fmt: skip
@click.option("--entries", type=click.IntRange(min=0), default=0, show_default=True,
              help="Sets the maximum amount of entries to keep, 0 for unlimited")  # fmt: skip
@click.option("--tries", type=int, default=UNLIMITED_TRIES, show_default=True,
              help="Maximum delivery attempts to allow per message, -1 for unlimited")  # fmt: skip
@click.option("--run-time", type=DURATION, default="1h", show_default=True, help="Maximum run-time to allow per task")
@click.option("--concurrent", type=click.IntRange(min=1), default=100, show_default=True,
              help="Maximum concurrent jobs that can be ran")  # fmt: skip
@click.option("--memory", is_flag=True, help="Store the Queue in memory")
@click.option("--replicas", type=click.IntRange(1, 5), default=1, show_default=True,
              help="Number of storage replicas to configure")  # fmt: skip
@click.option("--discard-old", is_flag=True, help="When full, discard old entries")
@json_option
def new(
    queue: str,
    age: float,
    entries: int,
    tries: int,
    run_time: float,
    concurrent: int,
    memory: bool,
    replicas: int,
    discard_old: bool,
    json_output: bool,
) -> None:
    import asyncjobs

    out = Output(json=json_output)
    if tries == 0 or tries < UNLIMITED_TRIES:
        fail(f"--tries must be -1 (unlimited) or at least 1, not {tries}", status=2)

    async def create() -> None:
        wanted = asyncjobs.Queue(
            queue,
            max_age=age or None,
            max_entries=entries or None,
            max_tries=tries,
            max_run_time=run_time or UPSTREAM_RUN_TIME_S,
            max_concurrent=concurrent,
            discard_old=discard_old,
        )
        async with session().client() as client:
            info = await client.admin.create_queue(wanted, replicas=replicas, memory=memory)
        _show(out, info)

    run(create)


@queues.command("list", aliases=("ls",), help="List Queues")
@json_option
def list_(json_output: bool) -> None:
    out = Output(json=json_output)

    async def show() -> None:
        async with session().client() as client:
            found = await client.admin.queues()
        if out.json:
            out.print_json([queue_json(q) for q in found])
        elif not found:
            out.line("No Work Queues defined")
        else:
            out.table("Work Queues", QUEUE_HEADERS, [queue_row(q) for q in found])

    run(show)


@queues.command("info", aliases=("view", "i"), help="Shows information about a queue")
@QUEUE_ARG
@json_option
def info(queue: str, json_output: bool) -> None:
    out = Output(json=json_output)

    async def show() -> None:
        async with session().client() as client:
            found = await client.admin.queue_info(queue)
        _show(out, found)

    run(show)


@queues.command("configure", aliases=("config", "cfg"), help="Configures a Queue storage")
@QUEUE_ARG
@click.option("--age", type=DURATION, help="Sets the maximum age for entries to keep, 0s for unlimited")
@click.option(
    "--entries", type=click.IntRange(min=0), help="Sets the maximum amount of entries to keep, 0 for unlimited"
)
@click.option("--tries", type=int, help="Maximum delivery attempts to allow per message, -1 for unlimited")
@click.option("--run-time", type=DURATION, help="Maximum run-time to allow per task")
@click.option("--concurrent", type=click.IntRange(min=1), help="Maximum concurrent jobs that can be ran")
@click.option("--replicas", type=click.IntRange(1, 5), help="Number of storage replicas to configure")
@json_option
def configure(
    queue: str,
    age: float | None,
    entries: int | None,
    tries: int | None,
    run_time: float | None,
    concurrent: int | None,
    replicas: int | None,
    json_output: bool,
) -> None:
    out = Output(json=json_output)
    changes: dict[str, Any] = {}
    if age is not None:
        changes["max_age"] = age or None
    if entries is not None:
        changes["max_entries"] = entries or None
    if tries is not None:
        if tries == 0 or tries < UNLIMITED_TRIES:
            fail(f"--tries must be -1 (unlimited) or at least 1, not {tries}", status=2)
        changes["max_tries"] = tries
    if run_time is not None:
        if run_time <= 0:
            fail("--run-time must be more than 0s", status=2)
        changes["max_run_time"] = run_time
    if concurrent is not None:
        changes["max_concurrent"] = concurrent
    if replicas is not None:
        changes["replicas"] = replicas
    if not changes:
        fail("nothing to change: pass at least one of --age, --entries, --tries, --run-time, --concurrent, --replicas",
             status=2)  # fmt: skip

    async def change() -> None:
        async with session().client() as client:
            found = await client.admin.configure_queue(queue, **changes)
        _show(out, found)

    run(change)


@queues.command("purge", help="Removes all items from a work queue")
@QUEUE_ARG
@force_option
def purge(queue: str, force: bool) -> None:
    out = Output()

    async def remove() -> None:
        async with session().client() as client:
            found = await client.admin.queue_info(queue)  # before asking: a typo fails here
            out.confirm(f"Purge {found.items} item(s) from queue {queue}?", force=force)
            await client.admin.purge_queue(queue)
        out.line(f"Queue {queue} was purged")

    run(remove)


@queues.command("delete", aliases=("rm", "del"), help="Removes the entire work queue")
@QUEUE_ARG
@force_option
def delete(queue: str, force: bool) -> None:
    out = Output()

    async def remove() -> None:
        async with session().client() as client:
            found = await client.admin.queue_info(queue)
            out.confirm(f"Delete queue {queue} and its {found.items} item(s)?", force=force)
            await client.admin.delete_queue(queue)
        out.line(f"Queue {queue} was removed")

    run(remove)


def _show(out: Output, info: Any) -> None:
    if out.json:
        out.print_json(queue_json(info))
    else:
        queue_block(out, info)
