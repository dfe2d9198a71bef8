"""``ajc tasks initialize`` and ``ajc tasks configure``: create and change the task store, shown as upstream shows it.

The store is shown with :func:`asyncjobs.cli.ajc.blocks.task_store_block`, as ``ajc info`` shows it.
"""

from __future__ import annotations

from typing import Any

import click

from asyncjobs.cli.ajc.blocks import task_store_block, task_store_json
from asyncjobs.cli.ajc.durations import DURATION
from asyncjobs.cli.ajc.groups import AliasCommand
from asyncjobs.cli.ajc.output import Output
from asyncjobs.cli.ajc.session import connection_options, json_option, run, session
from asyncjobs.cli.ajc.taskviews import missing_as
from asyncjobs.storeinfo import TaskStoreInfo


@click.command("initialize", cls=AliasCommand, help="Initialize the Task storage. An existing store is left as it is.")
@click.option("--memory", is_flag=True, help="Use memory as a storage backend")
@click.option(
    "--retention",
    type=DURATION,
    default=None,
    help="Sets how long Tasks are kept in the Task Store (90s, 10m, 1h30m, 2d; default forever)",
)
@click.option(
    "--replicas",
    type=click.IntRange(1, 5),
    default=1,
    show_default=True,
    help="How many replicas to keep in a JetStream cluster",
)
@json_option
@connection_options()
def initialize(memory: bool, retention: float | None, replicas: int, json_output: bool) -> None:
    """Create the task store (and the configuration and election buckets) when missing; show the store."""

    async def work() -> None:
        async with session().client() as client:
            # Only the store, as upstream's `tasks initialize` does: no queue is created.
            info = await client.admin.create_task_store(retention=retention or None, replicas=replicas, memory=memory)
        show_store(Output(json=json_output), info)

    run(work)


@click.command("configure", cls=AliasCommand, aliases=("config", "cfg"), help="Configures the Task storage")
@click.argument("retention", type=DURATION)
@click.argument("replicas", type=click.IntRange(min=0))
@json_option
@connection_options()
def configure(retention: float, replicas: int, json_output: bool) -> None:
    """Change how long tasks are kept (0 for forever) and the store's replicas (0 leaves them as they are)."""

    async def work() -> None:
        changes: dict[str, Any] = {"retention": retention or None}
        if replicas:
            changes["replicas"] = replicas
        async with session().client() as client:
            with missing_as():
                info = await client.admin.configure_task_store(**changes)
        show_store(Output(json=json_output), info)

    run(work)


def show_store(out: Output, info: TaskStoreInfo) -> None:
    """The task store's block, or its JSON object with ``--json``."""
    if out.json:
        out.print_json(task_store_json(info))
    else:
        task_store_block(out, info)
