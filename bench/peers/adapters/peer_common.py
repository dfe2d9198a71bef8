"""What every adapter shares: the command line of the adapter contract, the JSON line, pacing and worker supervision.

Standard library only, so it imports in every virtualenv. The file name starts with ``peer_`` like the adapters, so
the adapters directory (first on ``sys.path`` when an adapter runs as a script) never shadows a real package.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TASK_TYPE = "peer:noop"
"""The task type (or name) of the one benchmark task, where a system names tasks."""
BATCH_CHUNK = 1000
"""Tasks per bulk enqueue call."""
STOP_GRACE_S = 10.0
"""How long the adapter waits for its workers after forwarding SIGTERM, before SIGKILL."""
REDIS_MAX_CONNECTIONS = 10_000
"""The handler's counter client's pool: redis-py 8 caps a pool at 100 connections and then fails the command, which
at concurrency 200 would fail handlers instead of measuring them."""
LATENCY_SUFFIX = ":lat"
"""The handler RPUSHes each latency sample (ns) to ``<counter>:lat``."""


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The adapter contract's command line (``/tmp/peers_spec.md``): a command and its options."""
    parser = argparse.ArgumentParser(description="peer benchmark adapter")
    parser.add_argument("command", choices=("enqueue", "enqueue-batch", "worker", "latency"))
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="the counter's Redis (and broker)")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222", help="the NATS server, for NATS systems")
    parser.add_argument("--queue", default="peers", help="the queue name")
    parser.add_argument("--counter", default="peers:count", help="the Redis key the handler INCRs")
    parser.add_argument("--n", type=int, default=1000, help="tasks to enqueue")
    parser.add_argument("--processes", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=0, help="per worker process; 0: the system's default")
    parser.add_argument("--rate", type=float, default=100.0, help="latency: tasks per second")
    parser.add_argument("--seconds", type=float, default=5.0, help="latency: how long to enqueue")
    return parser.parse_args(argv)


def export(args: argparse.Namespace) -> None:
    """Put the settings where the app modules read them, in this process and the workers it starts."""
    os.environ.update(
        PEER_REDIS_URL=args.redis, PEER_NATS_URL=args.nats, PEER_QUEUE=args.queue, PEER_COUNTER=args.counter
    )
    paths = [str(HERE), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))


def settings() -> tuple[str, str]:
    """The Redis URL and counter key a worker's handler uses."""
    return os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/0"), os.environ.get("PEER_COUNTER", "peers:count")


def emit(**fields: Any) -> None:
    """The adapter's one JSON line on stdout."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def latency_payload(i: int) -> dict[str, int]:
    """A latency task's payload: its index and the enqueue time, taken just before the enqueue call."""
    return {"i": i, "t": time.time_ns()}


def paced(rate: float, seconds: float) -> Iterator[int]:
    """Indices at ``rate`` per second for ``seconds``, sleeping until each one is due (a blocking producer)."""
    started, total = time.monotonic(), int(rate * seconds)
    for i in range(total):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield i


async def apaced(rate: float, seconds: float) -> AsyncIterator[int]:
    """:func:`paced` for an asyncio producer."""
    started, total = time.monotonic(), int(rate * seconds)
    for i in range(total):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        yield i


def supervise(commands: list[list[str]], **ready: Any) -> int:
    """Start ``commands`` as child processes, print ``{"ready": true}``, and run until SIGTERM or a child exits.

    SIGTERM (or SIGINT) is forwarded to every child; a child still running ``STOP_GRACE_S`` later is killed.
    Returns 0 after a signal, else the exit status of the child that stopped first.
    """
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # The children's output goes to our stderr (the orchestrator's log file); stdout carries only the JSON line.
    children = [subprocess.Popen(command, cwd=HERE, stdout=sys.stderr.fileno()) for command in commands]
    emit(ready=True, **ready)
    status = 0
    while not stop.wait(0.2):
        ended = [child.returncode for child in children if child.poll() is not None]
        if ended:
            status = ended[0] or 1
            break
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return status


def bin_path(name: str) -> str:
    """A console script of this virtualenv (next to its Python)."""
    return str(Path(sys.executable).parent / name)
