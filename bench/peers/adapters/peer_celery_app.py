"""The Celery app of the peer benchmark: Redis broker, results ignored, one task that INCRs the counter."""

from __future__ import annotations

import os
import time
from typing import Any

import peer_common as common
import redis
from celery import Celery

REDIS_URL, COUNTER = common.settings()
app = Celery("peer_celery_app", broker=REDIS_URL)
app.conf.update(
    task_default_queue=os.environ.get("PEER_QUEUE", "peers"),
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
counter = redis.Redis.from_url(REDIS_URL, max_connections=common.REDIS_MAX_CONNECTIONS)


@app.task(name=common.TASK_TYPE)
def noop(payload: dict[str, Any]) -> None:
    now = time.time_ns()
    counter.incr(COUNTER)
    if "t" in payload:
        counter.rpush(COUNTER + common.LATENCY_SUFFIX, now - payload["t"])
