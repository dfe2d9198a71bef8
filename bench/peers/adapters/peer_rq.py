"""The RQ adapter of the peer benchmark: ``rq worker --worker-class rq.worker.SimpleWorker`` (no fork per job).

RQ runs one job at a time per worker, so ``--processes 2`` starts two ``rq worker`` processes and ``--concurrency``
has no knob to turn. ``enqueue-batch`` is ``Queue.enqueue_many`` (one Redis pipeline per chunk).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import peer_common as common

REQUIREMENTS = ["rq==2.12.0", "redis==8.1.0"]


def _queue(args: argparse.Namespace) -> Any:
    import redis
    from rq import Queue

    return Queue(args.queue, connection=redis.Redis.from_url(args.redis))


def enqueue(args: argparse.Namespace) -> None:
    from peer_rq_app import noop

    queue = _queue(args)
    started = time.perf_counter()
    for i in range(args.n):
        queue.enqueue(noop, {"i": i})
    common.emit(enqueued=args.n, seconds=time.perf_counter() - started)


def enqueue_batch(args: argparse.Namespace) -> None:
    from peer_rq_app import noop
    from rq import Queue

    queue = _queue(args)
    started = time.perf_counter()
    for first in range(0, args.n, common.BATCH_CHUNK):
        last = min(args.n, first + common.BATCH_CHUNK)
        queue.enqueue_many([Queue.prepare_data(noop, ({"i": i},)) for i in range(first, last)])
    common.emit(enqueued=args.n, seconds=time.perf_counter() - started)


def latency(args: argparse.Namespace) -> None:
    from peer_rq_app import noop

    queue, sent = _queue(args), 0
    for i in common.paced(args.rate, args.seconds):
        queue.enqueue(noop, common.latency_payload(i))
        sent += 1
    common.emit(sent=sent)


def worker(args: argparse.Namespace) -> int:
    command = [common.bin_path("rq"), "worker", "--url", args.redis, "--path", str(common.HERE)]
    command += ["--worker-class", "rq.worker.SimpleWorker", "--logging_level", "WARNING", args.queue]
    return common.supervise(
        [[*command, "--name", f"{args.queue}-{n}"] for n in range(args.processes)], concurrency="n/a"
    )


def main() -> int:
    args = common.parse()
    common.export(args)
    if args.command == "worker":
        return worker(args)
    {"enqueue": enqueue, "enqueue-batch": enqueue_batch, "latency": latency}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
