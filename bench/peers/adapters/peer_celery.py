"""The Celery adapter of the peer benchmark: Redis broker, no result backend, ``--pool threads``.

``--processes 2`` starts two ``celery worker`` processes (node names ``w0@``, ``w1@``), each with ``-c`` threads
(Celery's default: the number of CPUs). Gossip, mingle and heartbeats are off, as usually advised for throughput.
Celery has no bulk enqueue for plain tasks (a group publishes one message per task): ``enqueue-batch`` is unsupported.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import peer_common as common

REQUIREMENTS = ["celery==5.7.0", "redis==8.1.0", "packaging==26.3"]
"""kombu's Redis transport imports ``packaging`` without requiring it."""


def enqueue(args: argparse.Namespace) -> None:
    from peer_celery_app import noop

    started = time.perf_counter()
    for i in range(args.n):
        noop.delay({"i": i})
    common.emit(enqueued=args.n, seconds=time.perf_counter() - started)


def latency(args: argparse.Namespace) -> None:
    from peer_celery_app import noop

    sent = 0
    for i in common.paced(args.rate, args.seconds):
        noop.delay(common.latency_payload(i))
        sent += 1
    common.emit(sent=sent)


def worker(args: argparse.Namespace) -> int:
    command = [sys.executable, "-m", "celery", "-A", "peer_celery_app", "worker", "--pool", "threads"]
    command += [
        "-Q",
        args.queue,
        "--loglevel",
        "WARNING",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if args.concurrency:
        command += ["--concurrency", str(args.concurrency)]
    commands = [[*command, "-n", f"w{n}@%h"] for n in range(args.processes)]
    return common.supervise(commands, concurrency=args.concurrency or os.cpu_count())


def main() -> int:
    args = common.parse()
    common.export(args)
    if args.command == "worker":
        return worker(args)
    if args.command == "enqueue-batch":
        common.emit(unsupported=True)
    elif args.command == "enqueue":
        enqueue(args)
    else:
        latency(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
