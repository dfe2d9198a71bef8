"""JetStream key-value buckets (``CHORIA_AJ_CONFIGURATION``, ``CHORIA_AJ_ELECTIONS``) over the raw JetStream API.

A bucket ``B`` is the stream ``KV_B`` over ``$KV.B.>``; a key's value is the last message on ``$KV.B.<key>`` and its
revision that message's stream sequence, as nats.go and nats-py store them, so Go and Python clients share the
entries. Writes go through :class:`~asyncjobs.jsapi.JetStream`, with its retries of transient failures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from asyncjobs.constants import HDR_EXPECTED_LAST_SUBJECT_SEQ, JS_API_PREFIX
from asyncjobs.errors import TaskNotFound
from asyncjobs.jsapi import JetStream

KV_OPERATION_HEADER: Final = "KV-Operation"
"""Set on delete and purge markers; a value without it is a plain put."""


@dataclass(frozen=True, slots=True)
class Entry:
    """A key's current value."""

    key: str
    value: bytes
    revision: int
    """The stream sequence the value was stored at (pass it to :meth:`KeyValue.update`)."""


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

    async def get(self, key: str) -> Entry | None:
        """The key's value, or ``None`` when it has none (never set, deleted or purged).

        Raises:
            JetStreamError: the bucket does not exist or could not be read.
        """
        try:
            stored = await self.js.get_last(self.stream, self.prefix + key, f"reading {key!r} from {self.bucket}")
        except TaskNotFound:  # the mapping of "no message found"
            return None
        if stored.headers.get(KV_OPERATION_HEADER):
            return None
        return Entry(key, stored.data, stored.seq)

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
