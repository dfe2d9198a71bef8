"""The RQ job function of the peer benchmark: INCR the counter in Redis."""

from __future__ import annotations

import time
from typing import Any

import peer_common as common
import redis

REDIS_URL, COUNTER = common.settings()
counter = redis.Redis.from_url(REDIS_URL, max_connections=common.REDIS_MAX_CONNECTIONS)


def noop(payload: dict[str, Any]) -> None:
    now = time.time_ns()
    counter.incr(COUNTER)
    if "t" in payload:
        counter.rpush(COUNTER + common.LATENCY_SUFFIX, now - payload["t"])
