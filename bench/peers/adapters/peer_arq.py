"""The arq adapter of the peer benchmark (the contract: ``bench/peers/run.py``).

Producers use ``arq.create_pool(...).enqueue_job``; workers are arq's own CLI, ``python -m arq
peer_arq_app.WorkerSettings``, one process per ``--processes`` (arq has no multi-process mode), with ``max_jobs`` =
``--concurrency`` and the poll delay tuned to 10 ms. arq has no bulk enqueue: ``enqueue-batch`` is unsupported.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import peer_common as common
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

REQUIREMENTS = ["arq==0.28.0", "redis==5.3.1", "hiredis==3.5.0", "psutil==7.2.2"]
"""arq 0.28 requires redis-py below 6 (with hiredis)."""

ARQ_DEFAULT_MAX_JOBS = 10


async def _pool(args: argparse.Namespace) -> ArqRedis:
    return await create_pool(RedisSettings.from_dsn(args.redis), default_queue_name=args.queue)


async def enqueue(args: argparse.Namespace) -> None:
    pool = await _pool(args)
    try:
        started = time.perf_counter()
        for i in range(args.n):
            await pool.enqueue_job(common.TASK_TYPE, {"i": i})
        seconds = time.perf_counter() - started
    finally:
        await pool.aclose()
    common.emit(enqueued=args.n, seconds=seconds)


async def latency(args: argparse.Namespace) -> None:
    sent = 0
    pool = await _pool(args)
    try:
        async for i in common.apaced(args.rate, args.seconds):
            await pool.enqueue_job(common.TASK_TYPE, common.latency_payload(i))
            sent += 1
    finally:
        await pool.aclose()
    common.emit(sent=sent)


def worker(args: argparse.Namespace) -> int:
    os.environ["PEER_CONCURRENCY"] = str(args.concurrency)
    command = [sys.executable, "-m", "arq", "peer_arq_app.WorkerSettings"]
    command += ["--custom-log-dict", "peer_arq_app.LOG_CONFIG"]
    return common.supervise([command] * args.processes, concurrency=args.concurrency or ARQ_DEFAULT_MAX_JOBS)


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
