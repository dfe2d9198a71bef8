"""A worker process for workflow steps: every handler call appends the task id to a calls file, then returns.

Usage: python -m tests.workflows.apps.worker NATS_URL QUEUE CALLS_FILE [--hang TYPE] [--fail TYPE]
[--concurrency N] [--reconcile SECONDS]

Every task type is handled: the handler appends ``<task id>`` as a line to CALLS_FILE (one short ``O_APPEND``
write, so several workers may share the file), sleeps 20 ms and returns ``{"id": <task id>}``. Tasks of the
``--hang`` type block after their line is written until the process is killed; tasks of the ``--fail`` type end
``terminated``. ``--reconcile S`` runs the core's reconciler every S seconds with a grace of S seconds (instead
of 60 s and 120 s).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import Any

import asyncjobs
from tests.workflows.apps._running import serve

HANDLER_S = 0.02


def record(calls: str, task_id: str) -> None:
    fd = os.open(calls, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{task_id}\n".encode())
    finally:
        os.close(fd)


async def main(args: argparse.Namespace) -> None:
    router = asyncjobs.Router()

    @router.handler("")
    async def handle(task: asyncjobs.Task) -> dict[str, str]:
        record(args.calls, task.id)
        if task.type == args.hang:
            await asyncio.Event().wait()  # until the test kills this process
        await asyncio.sleep(HANDLER_S)
        if task.type == args.fail:
            raise asyncjobs.TerminateTask(f"{task.type} fails")
        return {"id": task.id}

    options: dict[str, Any] = {"concurrency": args.concurrency}
    if args.reconcile is not None:
        options.update(reconcile_interval=args.reconcile, reconcile_grace=args.reconcile)
    async with await asyncjobs.connect(args.url, queue=args.queue, **options) as client:
        await serve("worker", client.run(router))


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="worker")
    parser.add_argument("url")
    parser.add_argument("queue")
    parser.add_argument("calls")
    parser.add_argument("--hang")
    parser.add_argument("--fail")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--reconcile", type=float)
    return parser.parse_args()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(main(parse()))
