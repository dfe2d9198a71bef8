"""The Dramatiq broker and actor of the peer benchmark: one actor that INCRs the counter in Redis."""

from __future__ import annotations

import os
import time
from typing import Any

import dramatiq
import peer_common as common
import redis
from dramatiq.brokers.redis import RedisBroker

REDIS_URL, COUNTER = common.settings()
broker = RedisBroker(url=REDIS_URL)
dramatiq.set_broker(broker)
counter = redis.Redis.from_url(REDIS_URL, max_connections=common.REDIS_MAX_CONNECTIONS)


@dramatiq.actor(queue_name=os.environ.get("PEER_QUEUE", "peers"), max_retries=0)
def noop(payload: dict[str, Any]) -> None:
    now = time.time_ns()
    counter.incr(COUNTER)
    if "t" in payload:
        counter.rpush(COUNTER + common.LATENCY_SUFFIX, now - payload["t"])
