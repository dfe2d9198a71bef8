"""The SAQ adapter of the peer benchmark (the contract: ``bench/peers/run.py``).

Producers use ``saq.Queue.enqueue``, the task payload as the job's keyword arguments; workers are SAQ's own CLI,
``python -m saq peer_saq_app.settings``, one process per ``--processes``, with ``concurrency`` = ``--concurrency``.
That is what ``--workers P`` runs too (P copies of the same worker, P-1 of them forked), but its main process stops
only its own worker on SIGTERM and then waits forever for the forked ones, which never hear of the signal.
SAQ has no bulk enqueue (``Queue.map`` enqueues and then waits for the results, ``Queue.batch`` only scopes an
abort), so ``enqueue-batch`` is unsupported.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import peer_common as common
from saq import Queue

REQUIREMENTS = ["saq[redis]==0.26.4", "redis==7.4.1", "typing_extensions==4.16.0", "psutil==7.2.2"]
"""SAQ's redis extra wants redis-py below 8 (with 8.1 a worker can take 5 s to stop); saq 0.26.4 imports
typing_extensions without declaring it."""

SAQ_DEFAULT_CONCURRENCY = 10


async def enqueue(args: argparse.Namespace) -> None:
    queue = Queue.from_url(args.redis, name=args.queue)
    await queue.connect()
    try:
        started = time.perf_counter()
        for i in range(args.n):
            await queue.enqueue(common.TASK_TYPE, i=i)
        seconds = time.perf_counter() - started
    finally:
        await queue.disconnect()
    common.emit(enqueued=args.n, seconds=seconds)


async def latency(args: argparse.Namespace) -> None:
    sent = 0
    queue = Queue.from_url(args.redis, name=args.queue)
    await queue.connect()
    try:
        async for i in common.apaced(args.rate, args.seconds):
            await queue.enqueue(common.TASK_TYPE, **common.latency_payload(i))
            sent += 1
    finally:
        await queue.disconnect()
    common.emit(sent=sent)


def worker(args: argparse.Namespace) -> int:
    os.environ["PEER_CONCURRENCY"] = str(args.concurrency)
    command = [sys.executable, "-m", "saq", "peer_saq_app.settings"]
    return common.supervise([command] * args.processes, concurrency=args.concurrency or SAQ_DEFAULT_CONCURRENCY)


def main() -> int:
    args = common.parse()
    common.export(args)
    if args.command == "worker":
        return worker(args)
    if args.command == "enqueue-batch":
        common.emit(unsupported=True)
        return 0
    run = {"enqueue": enqueue, "latency": latency}[args.command]
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
