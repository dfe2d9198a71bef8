"""The arq worker settings of the peer benchmark, loaded by ``arq peer_arq_app.WorkerSettings``.

The adapter passes the run's settings in environment variables (``peer_common.export``), since arq's CLI only takes
an import path; ``PEER_CONCURRENCY`` carries ``max_jobs`` (0 keeps arq's default of 10).
"""

from __future__ import annotations

import os
import time
from typing import Any

import peer_common as common
import redis.asyncio
from arq.connections import RedisSettings
from arq.worker import func

POLL_DELAY_S = 0.01
"""The "tuned poll" setting: arq's default poll delay of 0.5 s leaves a worker idle between polls."""

LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler", "level": "WARNING"}},
    "loggers": {"arq": {"handlers": ["stderr"], "level": "WARNING"}},
}
"""arq's CLI logs two lines per job at INFO; the benchmark runs every system's workers at WARNING."""

REDIS_URL, COUNTER = common.settings()
CONCURRENCY = int(os.environ.get("PEER_CONCURRENCY", "0"))


async def startup(ctx: dict[str, Any]) -> None:
    ctx["counter"] = redis.asyncio.Redis.from_url(REDIS_URL)


async def shutdown(ctx: dict[str, Any]) -> None:
    if "counter" in ctx:
        await ctx["counter"].aclose()


async def noop(ctx: dict[str, Any], payload: dict[str, int]) -> None:
    """The benchmark task: INCR the counter; a latency task also records its enqueue-to-handler time."""
    now = time.time_ns()
    client = ctx["counter"]
    await client.incr(COUNTER)
    if "t" in payload:
        await client.rpush(COUNTER + common.LATENCY_SUFFIX, now - payload["t"])


class WorkerSettings:
    """arq's settings class; what is not set here is arq's default."""

    functions = (func(noop, name=common.TASK_TYPE),)
    queue_name = os.environ["PEER_QUEUE"]
    redis_settings = RedisSettings.from_dsn(REDIS_URL)
    on_startup = startup
    on_shutdown = shutdown
    poll_delay = POLL_DELAY_S
    if CONCURRENCY > 0:
        max_jobs = CONCURRENCY
