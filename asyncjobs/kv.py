"""JetStream key-value buckets (``CHORIA_AJ_CONFIGURATION``, ``CHORIA_AJ_ELECTIONS``) over the raw JetStream API.

A bucket ``B`` is the stream ``KV_B`` over ``$KV.B.>``; a key's value is the last message on ``$KV.B.<key>`` and its
revision that message's stream sequence, as nats.go and nats-py store them, so Go and Python clients share the
entries. A delete is an empty message with the header ``KV-Operation: DEL`` (``PURGE`` from a purge), which reads
as "no value". Writes go through :class:`~asyncjobs.jsapi.JetStream`, with its retries of transient failures.

:meth:`KeyValue.watch` follows keys live (the current values, one ``None`` marker, then every change) through an
ordered push consumer that is created again after a gap or the loss of the consumer, so it outlives server
restarts; :meth:`KeyValue.entries` is the first part of a watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Final, Self

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from asyncjobs.constants import HDR_EXPECTED_LAST_SUBJECT_SEQ, HDR_STATUS, JS_API_PREFIX
from asyncjobs.errors import ClientClosedError, ConfigurationError, JetStreamError, TaskConflict, TaskNotFound
from asyncjobs.jsapi import DEFAULT_ERRORS, TASK_ERRORS, JetStream
from asyncjobs.stored import StoredMessage, decode_stored
from asyncjobs.wiretime import parse_time

log = logging.getLogger("asyncjobs")

KV_OPERATION_HEADER: Final = "KV-Operation"
"""Set on delete and purge markers; a value without it is a plain put."""
KV_DELETE: Final = "DEL"
KV_PURGE: Final = "PURGE"
HDR_LAST_CONSUMER: Final = "Nats-Last-Consumer"
HDR_CONSUMER_STALLED: Final = "Nats-Consumer-Stalled"
STATUS_CONTROL: Final = "100"
"""The status of idle heartbeats and flow-control requests on a push consumer's deliver subject."""
WATCH_HEARTBEAT_S: Final = 1.0
WATCH_MISSED_HEARTBEATS: Final = 3
"""A watch that hears nothing (not even a heartbeat) for this many heartbeat intervals creates its consumer again."""
WATCH_INACTIVE_THRESHOLD_S: Final = 30.0
WATCH_RETRY_FIRST_S: Final = 0.1
WATCH_RETRY_MAX_S: Final = 2.0
WATCH_LOG_EVERY_S: Final = 10.0
_NS_PER_S: Final = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Entry:
    """A key's current value."""

    key: str
    value: bytes
    revision: int
    """The stream sequence the value was stored at (pass it to :meth:`KeyValue.update`)."""
    created: datetime
    """When the server stored it (aware UTC), as the server's clock read it."""


@dataclass(frozen=True, slots=True)
class Deleted:
    """A key was deleted or purged (seen by :meth:`KeyValue.watch`)."""

    key: str
    revision: int
    """The stream sequence of the delete marker."""
    created: datetime
    """When the server stored the marker (aware UTC)."""


def validate_keys(keys: str) -> str:
    """Check a key pattern (``a.b``, ``a.*``, ``a.>``, ``>``): dot-separated tokens, ``>`` only last.

    Raises:
        ConfigurationError: the pattern is malformed.
    """
    tokens = keys.split(".")
    if not keys or any(not t or any(c.isspace() for c in t) for t in tokens) or ">" in tokens[:-1]:
        raise ConfigurationError(f"invalid key pattern {keys!r}: use dot-separated keys like 'a.b', 'a.*' or 'a.>'")
    return keys


class KeyValue:
    """One key-value bucket.

    Args:
        js: the JetStream API of a connection.
        bucket: the bucket name (its stream is ``KV_<bucket>``).
    """

    def __init__(self, js: JetStream, bucket: str) -> None:
        self.js = js
        self.bucket = bucket
        self.stream = f"KV_{bucket}"
        self.prefix = f"$KV.{bucket}."
        # Through a JetStream domain or API prefix, writes go to `<prefix>.$KV.<bucket>.<key>` (as nats.go does): the
        # server carries that subject to the domain's JetStream, not a bare `$KV.` one.
        self.write_prefix = self.prefix if js.prefix == JS_API_PREFIX else f"{js.prefix}.{self.prefix}"

    async def ttl(self) -> float | None:
        """The bucket's TTL in seconds (its stream's ``max_age``); ``None`` when values never expire.

        Raises:
            JetStreamError: the bucket does not exist or could not be read.
        """
        info = await self.js.stream_info(
            self.stream, f"reading the settings of bucket {self.bucket}", errors=DEFAULT_ERRORS
        )
        max_age_ns = int(info.get("config", {}).get("max_age", 0) or 0)
        return max_age_ns / _NS_PER_S if max_age_ns > 0 else None

    async def _last(self, key: str) -> tuple[StoredMessage, datetime] | None:
        """The key's last message, delete markers included, and when it was stored; ``None`` when there is none."""
        what = f"reading {key!r} from {self.bucket}"
        body = b'{"last_by_subj":"' + (self.prefix + key).encode() + b'"}'
        try:
            reply = await self.js.request(
                f"{self.js.prefix}.STREAM.MSG.GET.{self.stream}", body, what, errors=TASK_ERRORS
            )
        except TaskNotFound:  # the mapping of "no message found"
            return None
        stored = decode_stored(reply, what)
        raw_time = reply["message"].get("time")
        created = parse_time(raw_time).to_datetime() if isinstance(raw_time, str) else datetime.now(UTC)
        return stored, created

    async def get(self, key: str) -> Entry | None:
        """The key's value, or ``None`` when it has none (never set, deleted or purged).

        Raises:
            JetStreamError: the bucket does not exist or could not be read.
        """
        last = await self._last(key)
        if last is None or last[0].headers.get(KV_OPERATION_HEADER):
            return None
        stored, created = last
        return Entry(key, stored.data, stored.seq, created)

    async def put(self, key: str, value: bytes) -> int:
        """Store a value whatever the key holds; returns its revision.

        Raises:
            JetStreamError: the bucket does not exist or refused the write.
        """
        ack = await self.js.publish(
            self.write_prefix + key, value, f"writing {key!r} to {self.bucket}", stream=self.stream
        )
        return ack.seq

    async def update(self, key: str, value: bytes, *, revision: int) -> int:
        """Store a value only if the key is still at ``revision`` (0: only if it was never set); returns the new one.

        A write whose reply was lost is retried; if it had landed, the retry conflicts (``attempts`` on the error
        is then more than 1), so read the key again before concluding that someone else changed it.

        Raises:
            TaskConflict: the key changed since ``revision`` (the name is the store's conflict error).
            JetStreamError: the bucket does not exist or refused the write.
        """
        ack = await self.js.publish(
            self.write_prefix + key,
            value,
            f"updating {key!r} in {self.bucket}",
            headers={HDR_EXPECTED_LAST_SUBJECT_SEQ: str(revision)},
            stream=self.stream,
        )
        return ack.seq

    async def create(self, key: str, value: bytes) -> int:
        """Store a value only if the key has none (never set, deleted, purged or expired); returns its revision.

        Like nats.go: a conflict on revision 0 is retried once at the revision of the delete or purge marker the
        key holds. As with :meth:`update`, a retried write that had landed reads as a conflict.

        Raises:
            TaskConflict: the key holds a value (or changed in between).
            JetStreamError: the bucket does not exist or refused the write.
        """
        try:
            return await self.update(key, value, revision=0)
        except TaskConflict:
            last = await self._last(key)
            if last is None or not last[0].headers.get(KV_OPERATION_HEADER):
                raise
        return await self.update(key, value, revision=last[0].seq)

    async def delete(self, key: str, *, revision: int | None = None) -> int:
        """Delete the key (a ``KV-Operation: DEL`` marker), only if it is still at ``revision`` when given.

        Returns the marker's revision.

        Raises:
            TaskConflict: ``revision`` was given and the key changed since.
            JetStreamError: the bucket does not exist or refused the write.
        """
        headers = {KV_OPERATION_HEADER: KV_DELETE}
        if revision is not None:
            headers[HDR_EXPECTED_LAST_SUBJECT_SEQ] = str(revision)
        ack = await self.js.publish(
            self.write_prefix + key, b"", f"deleting {key!r} from {self.bucket}", headers=headers, stream=self.stream
        )
        return ack.seq

    async def entries(self, keys: str = ">") -> list[Entry]:
        """The current value of every key matching ``keys`` (``a.b``, ``a.*``, ``a.>``), oldest revision first.

        Deleted keys are left out. Only each key's last message is read, however much history the bucket keeps.

        Raises:
            ConfigurationError: ``keys`` is malformed.
            JetStreamError: the bucket does not exist or could not be read.
        """
        found: list[Entry] = []
        async with self.watch(keys) as watch:
            async for item in watch:
                if item is None:
                    break
                if isinstance(item, Entry):
                    found.append(item)
        return found

    def watch(self, keys: str = ">", *, heartbeat_s: float = WATCH_HEARTBEAT_S) -> KeyWatch:
        """Follow the keys matching ``keys``: see :class:`KeyWatch`.

        Raises:
            ConfigurationError: ``keys`` is malformed.
        """
        return KeyWatch(self, keys, heartbeat_s=heartbeat_s)


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
