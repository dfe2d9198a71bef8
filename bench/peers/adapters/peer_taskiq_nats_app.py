"""The taskiq-nats broker and task of the peer benchmark, loaded by ``taskiq worker peer_taskiq_nats_app:broker``.

The adapter passes the run's settings in environment variables (``peer_common.export``), since taskiq's CLI only
takes an import path. The broker is taskiq-nats' ``PullBasedJetStreamBroker`` with its stream, subject and durable
consumer all named after the queue. The adapter's producer commands import this module too.
"""

from __future__ import annotations

import os
import time

import peer_common as common
import redis.asyncio
from taskiq import TaskiqEvents, TaskiqState
from taskiq_nats import PullBasedJetStreamBroker

PULL_TIMEOUT_S = 1.0
"""How long each pull request waits (the broker's default is for ever).

taskiq's worker stops on an ``asyncio.Event`` set from a plain ``signal.signal`` handler, which does not wake an
event loop blocked on a fetch that has no timer: with the default an idle worker never stops on SIGTERM. A fetch that
expires wakes the loop, so SIGTERM stops it within about a second. A fetch still returns as soon as a message is
there, so this does not change the rates measured.
"""

REDIS_URL, COUNTER = common.settings()
QUEUE = os.environ["PEER_QUEUE"]

broker = PullBasedJetStreamBroker(
    os.environ["PEER_NATS_URL"], subject=QUEUE, stream_name=QUEUE, durable=QUEUE, pull_consume_timeout=PULL_TIMEOUT_S
)


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def _open_counter(state: TaskiqState) -> None:
    state.counter = redis.asyncio.Redis.from_url(REDIS_URL)


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
async def _close_counter(state: TaskiqState) -> None:
    await state.counter.aclose()


@broker.task(task_name=common.TASK_TYPE)
async def noop(payload: dict[str, int]) -> None:
    """The benchmark task: INCR the counter; a latency task also records its enqueue-to-handler time."""
    now = time.time_ns()
    client = broker.state.counter
    await client.incr(COUNTER)
    if "t" in payload:
        await client.rpush(COUNTER + common.LATENCY_SUFFIX, now - payload["t"])
