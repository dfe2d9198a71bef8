"""The asyncjobs adapter of the peer benchmark (the contract: ``bench/peers/run.py``).

Producers use ``asyncjobs.connect(url, queue=NAME)``; workers are the project's own CLI,
``python -m asyncjobs worker peer_asyncjobs_app:router --processes P [--concurrency C]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import peer_common as common

REQUIREMENTS = ["<project>[uvloop]", "redis==8.1.0"]
"""The working tree (installed editable, with the uvloop extra the worker command uses when present) and the
handler's Redis client."""


async def enqueue(args: argparse.Namespace) -> None:
    import asyncjobs

    async with await asyncjobs.connect(args.nats, queue=args.queue) as client:
        started = time.perf_counter()
        for i in range(args.n):
            await client.enqueue(asyncjobs.Task(common.TASK_TYPE, {"i": i}))
        seconds = time.perf_counter() - started
    common.emit(enqueued=args.n, seconds=seconds)


async def enqueue_batch(args: argparse.Namespace) -> None:
    import asyncjobs

    async with await asyncjobs.connect(args.nats, queue=args.queue) as client:
        started = time.perf_counter()
        for first in range(0, args.n, common.BATCH_CHUNK):
            last = min(args.n, first + common.BATCH_CHUNK)
            await client.enqueue_many([asyncjobs.Task(common.TASK_TYPE, {"i": i}) for i in range(first, last)])
        seconds = time.perf_counter() - started
    common.emit(enqueued=args.n, seconds=seconds)


async def latency(args: argparse.Namespace) -> None:
    import asyncjobs

    sent = 0
    async with await asyncjobs.connect(args.nats, queue=args.queue) as client:
        async for i in common.apaced(args.rate, args.seconds):
            await client.enqueue(asyncjobs.Task(common.TASK_TYPE, common.latency_payload(i)))
            sent += 1
    common.emit(sent=sent)


def worker(args: argparse.Namespace) -> int:
    command = [sys.executable, "-m", "asyncjobs", "worker", "peer_asyncjobs_app:router"]
    command += ["--server", args.nats, "--queue", args.queue, "--processes", str(args.processes)]
    command += ["--app-dir", str(common.HERE), "--log-level", "warning"]
    if args.concurrency:
        command += ["--concurrency", str(args.concurrency)]
    from asyncjobs.constants import WORKER_CONCURRENCY

    return common.supervise([command], concurrency=args.concurrency or WORKER_CONCURRENCY)


def main() -> int:
    args = common.parse()
    common.export(args)
    if args.command == "worker":
        return worker(args)
    run = {"enqueue": enqueue, "enqueue-batch": enqueue_batch, "latency": latency}[args.command]
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
