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

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from asyncjobs.constants import HDR_EXPECTED_LAST_SUBJECT_SEQ, JS_API_PREFIX, KV_DELETE, KV_OPERATION_HEADER
from asyncjobs.errors import ConfigurationError, TaskConflict, TaskNotFound
from asyncjobs.jsapi import DEFAULT_ERRORS, TASK_ERRORS, JetStream
from asyncjobs.stored import StoredMessage, decode_stored
from asyncjobs.wiretime import parse_time

if TYPE_CHECKING:
    from asyncjobs.kvwatch import KeyWatch

log = logging.getLogger("asyncjobs")

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
        from asyncjobs.kvwatch import KeyWatch  # the watch module builds on this one

        return KeyWatch(self, keys, heartbeat_s=heartbeat_s)
