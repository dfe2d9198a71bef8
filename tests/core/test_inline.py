"""Messages taken in nats-py's reader (asyncjobs.inline), against a real server."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from asyncjobs.inline import take_inline
from asyncjobs.jsapi import JetStream


async def _flush(nc: NATS) -> None:
    # A round trip through the server: every message published before it has been read once it returns.
    await nc.flush()
    await nc.request("$JS.API.INFO", b"", timeout=5)


async def test_taken_messages_skip_the_callback_and_declined_ones_keep_their_order(nc: NATS) -> None:
    taken: list[bytes] = []
    called: list[bytes] = []
    release, finished = asyncio.Event(), asyncio.Event()

    async def callback(msg: Msg) -> None:
        called.append(msg.data)
        if msg.data == b"slow":
            await release.wait()
        if msg.data == b"c":
            finished.set()

    def take(msg: Msg) -> bool:
        if msg.data == b"slow":
            return False
        taken.append(msg.data)
        return True

    sub = await nc.subscribe("inline.order", cb=callback)
    assert take_inline(sub, take)
    await nc.publish("inline.order", b"a")
    await _flush(nc)
    assert (taken, called) == ([b"a"], [])

    # "slow" goes to the callback, which holds it; the two behind it wait in the queue instead of overtaking it.
    await nc.publish("inline.order", b"slow")
    await _flush(nc)
    await nc.publish("inline.order", b"b")
    await nc.publish("inline.order", b"c")
    await _flush(nc)
    assert (taken, called) == ([b"a"], [b"slow"])
    release.set()
    async with asyncio.timeout(5):
        await finished.wait()
    assert called == [b"slow", b"b", b"c"]
    # The queue is empty again: the next message is taken at once, and no byte is left counted as pending.
    await nc.publish("inline.order", b"d")
    await _flush(nc)
    assert taken == [b"a", b"d"]
    assert sub.pending_bytes == 0 and sub.pending_msgs == 0


async def test_a_failing_take_drops_one_message_and_the_reader_goes_on(
    nc: NATS, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[bytes] = []

    async def callback(msg: Msg) -> None:
        seen.append(b"callback:" + msg.data)

    def take(msg: Msg) -> bool:
        if msg.data == b"boom":
            raise RuntimeError("a bug in take")
        seen.append(msg.data)
        return True

    sub = await nc.subscribe("inline.boom", cb=callback)
    assert take_inline(sub, take)
    with caplog.at_level(logging.ERROR, logger="asyncjobs"):
        for data in (b"1", b"boom", b"2"):
            await nc.publish("inline.boom", data)
        await _flush(nc)
    assert seen == [b"1", b"2"]
    assert "handling a message on inline.boom failed; it is dropped" in caplog.text
    assert nc.is_connected and sub.pending_bytes == 0


async def test_an_unknown_subscription_layout_keeps_the_callback_path() -> None:
    class Changed:
        subject = "x"

    changed: Any = Changed()
    assert take_inline(changed, lambda msg: True) is False
    assert not hasattr(changed, "_pending_queue")


async def test_request_replies_are_taken_inline(nc: NATS) -> None:
    js = JetStream(nc, timeout=2)
    used: list[str] = []
    callback = js._on_reply

    async def counting(msg: Msg) -> None:
        used.append(msg.subject)
        await callback(msg)

    js._on_reply = counting  # type: ignore[method-assign]
    replies = await asyncio.gather(*(js.api("INFO", None, "info") for _ in range(50)))
    assert all("api" in reply for reply in replies)
    assert used == []  # not one reply went through the subscription's task
