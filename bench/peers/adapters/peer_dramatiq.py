"""The Dramatiq adapter of the peer benchmark: ``RedisBroker``, workers by ``dramatiq peer_dramatiq_app``.

Default settings: ``--processes 2`` and Dramatiq's 8 threads per process unless ``--concurrency`` sets the threads.
Dramatiq has no bulk enqueue (a group sends its messages one by one), so ``enqueue-batch`` is unsupported.
"""

from __future__ import annotations

import argparse
import sys
import time

import peer_common as common

REQUIREMENTS = ["dramatiq==2.2.1", "redis==8.1.0"]


def enqueue(args: argparse.Namespace) -> None:
    from peer_dramatiq_app import noop

    started = time.perf_counter()
    for i in range(args.n):
        noop.send({"i": i})
    common.emit(enqueued=args.n, seconds=time.perf_counter() - started)


def latency(args: argparse.Namespace) -> None:
    from peer_dramatiq_app import noop

    sent = 0
    for i in common.paced(args.rate, args.seconds):
        noop.send(common.latency_payload(i))
        sent += 1
    common.emit(sent=sent)


def worker(args: argparse.Namespace) -> int:
    command = [sys.executable, "-m", "dramatiq", "peer_dramatiq_app", "--processes", str(args.processes)]
    command += ["--path", str(common.HERE), "--queues", args.queue]
    if args.concurrency:
        command += ["--threads", str(args.concurrency)]
    return common.supervise([command], concurrency=args.concurrency or 8)


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
