"""The SAQ worker settings of the peer benchmark, loaded by ``saq peer_saq_app.settings``.

The adapter passes the run's settings in environment variables (``peer_common.export``), since SAQ's CLI only takes
an import path; ``PEER_CONCURRENCY`` carries the worker's ``concurrency`` (0 keeps SAQ's default of 10).
``settings`` is a callable, so each worker process builds its own queue and Redis clients.
"""

from __future__ import annotations

import os
import time
from typing import Any

import peer_common as common
import redis.asyncio
from saq import Queue

REDIS_URL, COUNTER = common.settings()
CONCURRENCY = int(os.environ.get("PEER_CONCURRENCY", "0"))


async def startup(ctx: dict[str, Any]) -> None:
    ctx["counter"] = redis.asyncio.Redis.from_url(REDIS_URL)


async def shutdown(ctx: dict[str, Any]) -> None:
    if "counter" in ctx:
        await ctx["counter"].aclose()


async def noop(ctx: dict[str, Any], *, i: int, t: int | None = None) -> None:
    """The benchmark task: INCR the counter; a latency task (``t`` set) also records its enqueue-to-handler time."""
    now = time.time_ns()
    client = ctx["counter"]
    await client.incr(COUNTER)
    if t is not None:
        await client.rpush(COUNTER + common.LATENCY_SUFFIX, now - t)


def settings() -> dict[str, Any]:
    """SAQ's worker settings; what is not set here is SAQ's default."""
    config: dict[str, Any] = {
        "queue": Queue.from_url(REDIS_URL, name=os.environ["PEER_QUEUE"]),
        "functions": [(common.TASK_TYPE, noop)],
        "startup": startup,
        "shutdown": shutdown,
    }
    if CONCURRENCY > 0:
        config["concurrency"] = CONCURRENCY
    return config
