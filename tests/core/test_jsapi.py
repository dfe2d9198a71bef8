"""The raw JetStream request layer: replies, errors and timeouts against a real server."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

import asyncjobs
from asyncjobs.jsapi import JetStream


async def test_replies_errors_and_timeouts(nc: NATS) -> None:
    js = JetStream(nc, timeout=0.5)
    info = await js.account_info()
    assert "memory" in info or "storage" in info
    with pytest.raises(asyncjobs.QueueNotFound, match="stream not found"):
        await js.stream_info("NOPE", "reading NOPE")
    with pytest.raises(asyncjobs.JetStreamError, match="no responders") as no_one:
        await js.publish("nobody.listens", b"x", "publishing")
    assert no_one.value.code == 503

    async def silent(msg: Msg) -> None:
        return None

    await nc.subscribe("silent.service", cb=silent)
    started = time.monotonic()
    with pytest.raises(asyncjobs.RequestTimeout, match="timed out"):
        await js.request_raw("silent.service", b"", "asking a silent service")
    assert 0.5 <= time.monotonic() - started < 1.5
    # Many requests in flight at once all get their own reply.
    replies = await asyncio.gather(*(js.api("INFO", None, "info") for _ in range(200)))
    assert len(replies) == 200 and all("api" in r for r in replies)
