"""A worker process for the fault-injection runs (``bench/faults.py``): one ``client.run(router)`` and a handler log.

Usage: ``python -m bench.fault_worker --servers URL[,URL...] --queue NAME --log FILE --parent PID [options]``

The handler appends ``start <task id> <unix ns>`` when it begins and ``done <task id> <unix ns>`` just before it
returns, one ``os.write`` per line to a file opened with ``O_APPEND``, so every finished line survives a SIGKILL.
After connecting, the worker appends ``ready <unix ns>``. SIGTERM or SIGINT stops it gracefully; it also stops when
its parent (the harness) is gone, so an interrupted run leaves no worker behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from typing import Final

import asyncjobs

TASK_TYPE: Final = "faults:work"
"""The type of every task of the fault runs."""
WORK_S: Final = 0.005
"""How long the handler pretends to work."""
PARENT_CHECK_S: Final = 1.0


def record(fd: int, kind: str, task_id: str) -> None:
    """Append one ``<kind> <task id> <unix ns>`` line; a single small ``O_APPEND`` write is never torn."""
    os.write(fd, f"{kind} {task_id} {time.time_ns()}\n".encode())


def make_router(fd: int) -> asyncjobs.Router:
    router = asyncjobs.Router()

    @router.handler(TASK_TYPE)
    async def work(task: asyncjobs.Task) -> str:
        record(fd, "start", task.id)
        await asyncio.sleep(WORK_S)
        record(fd, "done", task.id)
        return "ok"

    return router


async def orphaned(parent: int) -> None:
    """Returns once this process's parent is no longer ``parent`` (it died and we were re-parented)."""
    while True:
        await asyncio.sleep(PARENT_CHECK_S)
        if os.getppid() != parent:
            return


async def serve(args: argparse.Namespace, fd: int) -> None:
    queue = asyncjobs.Queue(args.queue, max_run_time=args.max_run_time)
    client = await asyncjobs.connect(
        args.servers,
        queue=queue,
        concurrency=args.concurrency,
        replicas=args.replicas,
        shutdown_grace=args.shutdown_grace,
    )
    async with client:
        os.write(fd, f"ready {time.time_ns()}\n".encode())
        running = asyncio.create_task(client.run(make_router(fd)), name="fault-worker-run")
        orphan = asyncio.create_task(orphaned(args.parent), name="fault-worker-parent-watch")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, running.cancel)
        try:
            await asyncio.wait({running, orphan}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (running, orphan):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.fault_worker", description=__doc__.splitlines()[0])
    parser.add_argument("--servers", required=True, help="comma-separated NATS URLs")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--log", required=True, help="the handler log to append to")
    parser.add_argument("--parent", type=int, required=True, help="stop when this process is no longer the parent")
    parser.add_argument("--max-run-time", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--shutdown-grace", type=float, default=2.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        asyncio.run(serve(args, fd))
    finally:
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
