"""The raw JetStream limits, measured with nats-py alone: publish with ack, and pull with ack.

These bound what any Python client on one connection can do against this server; the task scenarios do several
of these operations per task.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, RetentionPolicy, StorageType

from bench.common import PIPELINE_WINDOW, REQUEST_TIMEOUT_S, Results, Settings, connect, rate, timed, wait_until

log = logging.getLogger("bench")

RAW_STREAM: Final = "BENCH_RAW"
RAW_SUBJECT: Final = "BENCH.RAW."
WQ_STREAM: Final = "BENCH_RAW_WQ"
WQ_SUBJECT: Final = "BENCH.RAW_WQ."
WQ_CONSUMER: Final = "RAW"
PULL_BATCH: Final = 100
# About the size of a stored task, so the store does comparable work per message.
PAYLOAD: Final = (
    b'{"id":"0123456789abcdefghijklmnopq","type":"bench:noop","queue":"BENCH","payload":"eyJpIjoxfQ==",'
    + (b'"max_tries":10,"state":"new","created":"2026-01-01T00:00:00.123456789Z","tries":0}')
)


async def pipelined(count: int, window: int, one: Callable[[int], Awaitable[None]]) -> None:
    """Call ``one(i)`` for i in ``range(count)`` with at most ``window`` calls in flight (a sliding window)."""
    counter = itertools.count()

    async def lane() -> None:
        while (i := next(counter)) < count:
            await one(i)

    await asyncio.gather(*(lane() for _ in range(min(window, count))))


def check_ack(data: bytes, what: str) -> None:
    """Fail loudly on a JetStream error reply: a benchmark that silently loses writes measures nothing."""
    if b'"error"' in data:
        raise RuntimeError(f"{what} failed: {data[:300]!r}")


async def publish_many(nc: NATS, subject_prefix: str, count: int, *, offset: int = 0) -> None:
    """Publish ``count`` messages with ack, each to its own subject, ``PIPELINE_WINDOW`` in flight."""

    async def one(i: int) -> None:
        reply = await nc.request(f"{subject_prefix}{offset + i}", PAYLOAD, timeout=REQUEST_TIMEOUT_S)
        check_ack(reply.data, "publish")

    await pipelined(count, PIPELINE_WINDOW, one)


async def bench_publish(url: str, settings: Settings, results: Results) -> None:
    """Publish-with-ack rate into a file stream, pipelined."""
    nc = await connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=RAW_STREAM, subjects=[RAW_SUBJECT + ">"], storage=StorageType.FILE)
        await publish_many(nc, RAW_SUBJECT, settings.warmup)
        elapsed = await asyncio.wait_for(
            timed(publish_many(nc, RAW_SUBJECT, settings.tasks, offset=settings.warmup)), settings.scenario_timeout_s
        )
        value = rate(settings.tasks, elapsed)
        log.info("raw publish: %.0f msgs/s", value)
        results.add("raw_publish", f"publish with ack ({PIPELINE_WINDOW} in flight), msgs/s", "msgs/s", value)
    finally:
        await nc.close()


async def _pull_and_ack(nc: NATS, count: int, timeout_s: float) -> None:
    js = nc.jetstream()
    sub = await js.pull_subscribe_bind(WQ_CONSUMER, WQ_STREAM)
    acked = 0
    try:
        while acked < count:
            for msg in await sub.fetch(min(PULL_BATCH, count - acked), timeout=REQUEST_TIMEOUT_S):
                await msg.ack()
                acked += 1
        await nc.flush()

        async def drained() -> bool:
            return (await js.stream_info(WQ_STREAM)).state.messages == 0

        await wait_until(drained, "an empty raw work queue", timeout_s)
    finally:
        await sub.unsubscribe()


async def bench_pull(url: str, settings: Settings, results: Results) -> None:
    """Pull-and-ack rate from a file work-queue stream with a durable pull consumer (batches of PULL_BATCH)."""
    nc = await connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(
            name=WQ_STREAM,
            subjects=[WQ_SUBJECT + ">"],
            storage=StorageType.FILE,
            retention=RetentionPolicy.WORK_QUEUE,
        )
        await js.add_consumer(WQ_STREAM, ConsumerConfig(durable_name=WQ_CONSUMER, max_ack_pending=-1))
        await publish_many(nc, WQ_SUBJECT, settings.warmup)
        await _pull_and_ack(nc, settings.warmup, settings.scenario_timeout_s)
        await publish_many(nc, WQ_SUBJECT, settings.tasks, offset=settings.warmup)
        elapsed = await asyncio.wait_for(
            timed(_pull_and_ack(nc, settings.tasks, settings.scenario_timeout_s)), settings.scenario_timeout_s
        )
        value = rate(settings.tasks, elapsed)
        log.info("raw pull+ack: %.0f msgs/s", value)
        results.add("raw_pull", f"pull + ack (batch {PULL_BATCH}), msgs/s", "msgs/s", value)
    finally:
        await nc.close()
