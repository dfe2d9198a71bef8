"""The taskiq-nats adapter of the peer benchmark (the contract: ``bench/peers/run.py``).

Producers call the task's ``kiq`` on taskiq-nats' ``PullBasedJetStreamBroker`` (JetStream, on ``--nats``); workers
are taskiq's own CLI, ``python -m taskiq worker peer_taskiq_nats_app:broker --workers P [--max-async-tasks C]``.
taskiq sends one message per ``kiq``, so ``enqueue-batch`` is unsupported.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import peer_common as common

REQUIREMENTS = ["taskiq==0.13.0", "taskiq-nats==0.7.0", "nats-py==2.16.0", "redis==8.1.0", "psutil==7.2.2"]

TASKIQ_DEFAULT_MAX_ASYNC_TASKS = 100


async def enqueue(args: argparse.Namespace) -> None:
    import peer_taskiq_nats_app as app  # reads the settings common.export put in the environment

    await app.broker.startup()
    try:
        started = time.perf_counter()
        for i in range(args.n):
            await app.noop.kiq({"i": i})
        seconds = time.perf_counter() - started
    finally:
        await app.broker.shutdown()
    common.emit(enqueued=args.n, seconds=seconds)


async def latency(args: argparse.Namespace) -> None:
    import peer_taskiq_nats_app as app

    sent = 0
    await app.broker.startup()
    try:
        async for i in common.apaced(args.rate, args.seconds):
            await app.noop.kiq(common.latency_payload(i))
            sent += 1
    finally:
        await app.broker.shutdown()
    common.emit(sent=sent)


def worker(args: argparse.Namespace) -> int:
    command = [sys.executable, "-m", "taskiq", "worker", "peer_taskiq_nats_app:broker"]
    command += ["--workers", str(args.processes), "--log-level", "WARNING"]
    if args.concurrency:
        command += ["--max-async-tasks", str(args.concurrency)]
    return common.supervise([command], concurrency=args.concurrency or TASKIQ_DEFAULT_MAX_ASYNC_TASKS)


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
