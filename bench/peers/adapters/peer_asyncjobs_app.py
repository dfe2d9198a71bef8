"""The router the asyncjobs workers of the peer benchmark run: one handler that INCRs the counter in Redis."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import peer_common as common

import asyncjobs

REDIS_URL, COUNTER = common.settings()
router = asyncjobs.Router()
_client: asyncio.Future[Any] | None = None


async def _connect() -> Any:
    try:
        import redis.asyncio
    except ImportError:
        # Only when the smoke test runs the adapter with the project's own Python, which has no Redis client:
        # the orchestrator's few-command RESP client stands in.
        sys.path.insert(0, str(common.HERE.parents[2]))
        from bench.peers.env import Resp

        port = int(REDIS_URL.rsplit(":", 1)[1].split("/", 1)[0])
        return await Resp.connect(port)
    return redis.asyncio.Redis.from_url(REDIS_URL, max_connections=common.REDIS_MAX_CONNECTIONS)


async def _redis() -> Any:
    global _client
    if _client is None:
        _client = asyncio.ensure_future(_connect())
    return await _client


@router.handler(common.TASK_TYPE)
async def noop(task: asyncjobs.Task) -> None:
    now = time.time_ns()
    payload = task.payload_json()
    client = await _redis()
    await client.execute_command("INCR", COUNTER)
    if "t" in payload:
        await client.execute_command("RPUSH", COUNTER + common.LATENCY_SUFFIX, now - payload["t"])
