"""Watching the keys of a bucket: their current values, then every change, through a server restart.

An ordered push consumer over the bucket's stream (last value per key, no acks, flow control, idle heartbeats),
created again whenever its sequence breaks, its heartbeats stop or the connection comes back; values already
yielded are not yielded twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from types import TracebackType
from typing import Self

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from asyncjobs.constants import (
    HDR_CONSUMER_STALLED,
    HDR_LAST_CONSUMER,
    HDR_STATUS,
    KV_DELETE,
    KV_OPERATION_HEADER,
    KV_PURGE,
    STATUS_CONTROL,
)
from asyncjobs.errors import ClientClosedError, JetStreamError
from asyncjobs.kv import (
    WATCH_INACTIVE_THRESHOLD_S,
    WATCH_LOG_EVERY_S,
    WATCH_MISSED_HEARTBEATS,
    WATCH_RETRY_FIRST_S,
    WATCH_RETRY_MAX_S,
    Deleted,
    Entry,
    KeyValue,
    validate_keys,
)

log = logging.getLogger("asyncjobs")

_NS_PER_S = 1_000_000_000


class KeyWatch:
    """The keys matching a pattern, as they are and then as they change: an async iterator and context manager.

    It yields an :class:`Entry` for the current value of each key (deleted keys left out), then ``None`` once
    (the initial values are done; at once for an empty bucket), then an :class:`Entry` for every put and a
    :class:`Deleted` for every delete or purge, until :meth:`aclose`. Keys removed by the bucket's TTL
    (``max_age``) vanish without an event.

    Built on an ordered push consumer (last value per subject, flow control, idle heartbeats, no acks). On a gap
    in the consumer sequence, when nothing (not even a heartbeat) arrives for a few heartbeat intervals (the
    consumer was lost), or after the connection reconnected (a server restart), it creates the consumer again,
    retrying with back-off until the server answers; the changes made meanwhile then arrive as each key's latest
    value or delete, after the last revision already yielded. Use it as
    ``async with kv.watch("a.>") as watch: async for item in watch: ...``.
    """

    def __init__(self, kv: KeyValue, keys: str, *, heartbeat_s: float) -> None:
        self._kv = kv
        self._filter = kv.prefix + validate_keys(keys)
        self._heartbeat_s = heartbeat_s
        self._silent = 0
        """Heartbeat intervals in a row without any message."""
        self._reconnects = 0
        """The connection's reconnect count when the consumer was created."""
        self._sub: Subscription | None = None
        self._consumer = ""
        self._delivered = 0
        """The consumer sequence of the last message of the current consumer."""
        self._last_seq = 0
        """The stream sequence of the last entry yielded; a new consumer skips up to it."""
        self._initial_done = False
        self._marker_due = False
        self._closed = False
        self._started = False
        self._restarts = 0

    @property
    def restarts(self) -> int:
        """How many times the consumer was created again (after gaps, stalls or server restarts)."""
        return self._restarts

    async def _create(self) -> None:
        """Subscribe to a new inbox and create a consumer delivering to it, from each key's last message.

        Raises:
            JetStreamError: the consumer could not be created (e.g. the bucket does not exist).
        """
        kv = self._kv
        nc = kv.js.nc
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        config = {
            "deliver_subject": inbox,
            "deliver_policy": "last_per_subject",
            "filter_subject": self._filter,
            "ack_policy": "none",
            "max_deliver": 1,
            "flow_control": True,
            "idle_heartbeat": int(self._heartbeat_s * _NS_PER_S),
            "mem_storage": True,
            "num_replicas": 1,
            "inactive_threshold": int(WATCH_INACTIVE_THRESHOLD_S * _NS_PER_S),
        }
        try:
            info = await kv.js.api(
                f"CONSUMER.CREATE.{kv.stream}", {"stream_name": kv.stream, "config": config}, f"watching {kv.bucket}"
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            raise
        self._sub, self._consumer, self._delivered = sub, str(info.get("name", "")), 0
        self._reconnects, self._silent = nc.stats["reconnects"], 0
        if not self._initial_done and int(info.get("num_pending", 0)) == 0:
            self._initial_done = self._marker_due = True

    async def _drop(self) -> None:
        """Unsubscribe and delete the current consumer (best effort: the server reaps it anyway)."""
        sub, self._sub = self._sub, None
        consumer, self._consumer = self._consumer, ""
        if sub is not None and not self._kv.js.nc.is_closed:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            if consumer:
                with contextlib.suppress(Exception):
                    await self._kv.js.api(
                        f"CONSUMER.DELETE.{self._kv.stream}.{consumer}", None, "ending a watch", retry=False
                    )

    async def _recreate(self, why: str) -> None:
        """Replace the consumer, retrying with back-off until it is created or the watch is closed."""
        log.debug("watch of %s: %s; creating its consumer again", self._filter, why)
        await self._drop()
        self._restarts += 1
        delay, last_log = WATCH_RETRY_FIRST_S, 0.0
        while not self._closed:
            if self._kv.js.nc.is_closed:
                raise ClientClosedError(f"watching {self._filter}: the NATS connection is closed")
            try:
                await self._create()
                return
            except ClientClosedError:
                raise
            except JetStreamError as exc:
                if time.monotonic() - last_log >= WATCH_LOG_EVERY_S:
                    last_log = time.monotonic()
                    log.warning("watch of %s: cannot create its consumer (%s); retrying", self._filter, exc)
            await asyncio.sleep(delay)
            delay = min(WATCH_RETRY_MAX_S, delay * 2)

    async def _control(self, msg: Msg) -> str | None:
        """Answer a heartbeat or flow-control message; returns why the consumer must be replaced, if it must."""
        headers = msg.headers or {}
        if headers.get(HDR_STATUS) != STATUS_CONTROL:
            return f"status {headers.get(HDR_STATUS)} {msg.data[:100]!r}"
        nc = self._kv.js.nc
        if msg.reply:  # a flow-control request: answering it lets the server send more
            await nc.publish(msg.reply)
        if stalled := headers.get(HDR_CONSUMER_STALLED):
            await nc.publish(stalled)
        last = headers.get(HDR_LAST_CONSUMER)
        if last is not None and int(last) != self._delivered:
            return f"heartbeat says {last} messages were sent, {self._delivered} arrived"
        return None

    def _decode(self, msg: Msg) -> Entry | Deleted | str | None:
        """The item a stored message stands for; a reason string for a gap; ``None`` for an entry to skip."""
        meta = msg.metadata
        if meta.sequence.consumer != self._delivered + 1:
            return f"gap in the consumer sequence ({self._delivered} then {meta.sequence.consumer})"
        self._delivered = meta.sequence.consumer
        initial = not self._initial_done
        if initial and meta.num_pending == 0:
            self._initial_done = self._marker_due = True
        seq = meta.sequence.stream
        if seq <= self._last_seq:  # yielded before the consumer was replaced
            return None
        self._last_seq = seq
        key = msg.subject[len(self._kv.prefix) :]
        operation = (msg.headers or {}).get(KV_OPERATION_HEADER)
        if operation in (KV_DELETE, KV_PURGE):
            return None if initial else Deleted(key, seq, meta.timestamp)  # the initial values leave deleted keys out
        return Entry(key, msg.data, seq, meta.timestamp)

    async def _start(self) -> None:
        if not self._started:
            self._started = True
            await self._create()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Entry | Deleted | None:
        await self._start()
        while not self._closed:
            if self._marker_due:
                self._marker_due = False
                return None
            if self._sub is None:
                await self._recreate("the consumer is gone")
                continue
            try:
                msg = await self._sub.next_msg(timeout=self._heartbeat_s)
            except nats.errors.TimeoutError:
                # An ephemeral consumer rarely outlives the server it ran on: after a reconnect make a new one at
                # once rather than waiting for heartbeats that may never come.
                self._silent += 1
                if self._kv.js.nc.stats["reconnects"] != self._reconnects:
                    await self._recreate("the connection was re-established")
                elif self._silent >= WATCH_MISSED_HEARTBEATS:
                    await self._recreate(f"no heartbeat for {self._silent} intervals")
                continue
            except nats.errors.ConnectionClosedError as exc:
                await self.aclose()
                raise ClientClosedError(f"watching {self._filter}: the NATS connection is closed") from exc
            self._silent = 0
            if not msg.reply or not msg.reply.startswith("$JS.ACK."):
                reason = await self._control(msg)
                if reason is not None:
                    await self._recreate(reason)
                continue
            item = self._decode(msg)
            if isinstance(item, str):
                await self._recreate(item)
            elif item is not None:
                return item
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop watching and delete the consumer; iteration then ends. Idempotent."""
        self._closed = True
        await self._drop()

    async def __aenter__(self) -> Self:
        """Create the consumer now, so that no change made after the ``async with`` line is missed.

        Raises:
            JetStreamError: the bucket does not exist or could not be read.
        """
        await self._start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
