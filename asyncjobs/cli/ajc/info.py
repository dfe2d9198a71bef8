"""``ajc info``: the task store, the configuration and election buckets, and every queue.

As upstream's, it sets up the task store and the ``DEFAULT`` queue when they are missing, with ``--replica``,
``--memory`` and ``--retention`` applying only to what it creates.
"""

from __future__ import annotations

from typing import Any

import click

from asyncjobs.cli.ajc.blocks import (
    bucket_block,
    bucket_json,
    queue_block,
    queue_json,
    task_store_block,
    task_store_json,
)
from asyncjobs.cli.ajc.durations import DURATION
from asyncjobs.cli.ajc.output import Output
from asyncjobs.cli.ajc.session import connection_options, json_option, run, session
from asyncjobs.constants import CONFIG_BUCKET, ELECTIONS_BUCKET


@click.command(help="Shows general Task and Queue information")
@click.option("--replica", "-R", "replicas", type=click.IntRange(1, 5), default=1, show_default=True,
              help="When initializing, do so with this many replicas")  # fmt: skip
@click.option("--memory", is_flag=True, help="When initializing, do so with memory storage")
@click.option("--retention", type=DURATION, help="When initializing, sets how long Tasks are kept (e.g. 30d)")
@json_option
@connection_options()
def info(replicas: int, memory: bool, retention: float | None, json_output: bool) -> None:
    out = Output(json=json_output)

    async def show() -> None:
        async with session().client(
            init=True, replicas=replicas, memory_storage=memory, task_retention=retention
        ) as client:
            admin = client.admin
            store = await admin.tasks_info()
            config = await admin.bucket_info(CONFIG_BUCKET)
            elections = await admin.bucket_info(ELECTIONS_BUCKET)
            leaders = await _leaders(client) if elections is not None else {}
            queues = await admin.queues()
        if out.json:
            out.print_json(
                {
                    "tasks": task_store_json(store),
                    "configuration": bucket_json(config),
                    "elections": None if elections is None else {**(bucket_json(elections) or {}), "leaders": leaders},
                    "queues": [queue_json(q) for q in queues],
                }
            )
            return
        task_store_block(out, store)
        out.line()
        bucket_block(out, "Configuration Storage:", config)
        out.line()
        rows: list[tuple[str, Any]] = [("Elections", "none" if not leaders else "")]
        rows += [("", f"{name}: {leader}") for name, leader in sorted(leaders.items())]
        bucket_block(out, "Leader Elections:", elections, rows if elections is not None else None)
        for queue in queues:
            out.line()
            queue_block(out, queue)

    run(show)


async def _leaders(client: Any) -> dict[str, str]:
    """Each election's current leader (the values of the election bucket)."""
    entries = await client.key_value(ELECTIONS_BUCKET).entries()
    return {entry.key: entry.value.decode(errors="replace") for entry in entries}
