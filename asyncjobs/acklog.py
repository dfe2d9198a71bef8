"""The recent final acks a worker sends again after a disturbance, kept compactly.

A busy worker acks well over a thousand items a second and keeps each final ack for a minute (see
:class:`~asyncjobs.settle.Settler`). Kept as ``(time, subject, body)`` tuples that was about 220 bytes an ack, 21 MB
for 100,000. Here acks go into buckets of :data:`BUCKET_S` seconds, each one byte string of the subjects, one a
line, written after the part the bucket's subjects share (``$JS.ACK.<stream>.<consumer>.``, kept once a bucket) with
one byte ahead for the body: about 45 bytes an ack. Whole buckets expire, so an ack is kept at least the window and at
most :data:`BUCKET_S` longer (sending an ack again is harmless: the server ignores one for an item already gone).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Final

from asyncjobs.constants import ACK, TERM

__all__ = ["BUCKET_S", "AckLog"]

BUCKET_S: Final = 1.0
"""Acks of this many seconds share a bucket: the granularity of expiry."""
_END: Final = b"\n"  # never in a subject
_KIND: Final = {(ACK, True): b"a", (TERM, True): b"t", (ACK, False): b"A", (TERM, False): b"T"}
"""The byte ahead of each subject: its body, and whether the bucket's prefix was cut off it."""
_UNKIND: Final = {kind[0]: key for key, kind in _KIND.items()}
_PREFIX_TOKENS: Final = 5  # the numbers that follow the consumer in an ack subject: the part that differs


class _Bucket:
    __slots__ = ("count", "data", "first", "last", "prefix", "skip")

    def __init__(self, prefix: str, now: float) -> None:
        self.prefix = prefix
        self.data: bytearray | bytes = bytearray()
        self.skip = 0
        """Bytes of ``data`` dropped already (the log's cap)."""
        self.count = 0
        self.first = now
        self.last = now

    def copy(self) -> _Bucket:
        copied = _Bucket(self.prefix, self.first)
        copied.data = bytes(self.data)  # a closed bucket's data is bytes already: shared, not copied
        copied.skip, copied.count, copied.last = self.skip, self.count, self.last
        return copied


class AckLog:
    """Final acks (``+ACK`` and ``+TERM``), oldest first, for the last ``window_s`` seconds and at most ``limit``.

    Args:
        window_s: how long an ack is kept (at most :data:`BUCKET_S` seconds longer).
        limit: at most this many acks are kept: beyond it the oldest are dropped.
    """

    def __init__(self, *, window_s: float, limit: int) -> None:
        self.window_s = window_s
        self.limit = limit
        self._buckets: deque[_Bucket] = deque()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def append(self, reply: str, body: bytes, now: float) -> None:
        """Log the ack ``body`` (``ACK`` or ``TERM``) sent to ``reply`` at ``now`` (monotonic seconds)."""
        bucket = self._buckets[-1] if self._buckets else None
        if bucket is None or now - bucket.first >= BUCKET_S:
            bucket = self._open(reply, now)
        prefixed = reply.startswith(bucket.prefix)
        data = bucket.data
        assert isinstance(data, bytearray)  # only the newest bucket takes acks
        data += _KIND[body, prefixed]
        data += (reply[len(bucket.prefix) :] if prefixed else reply).encode()
        data += _END
        bucket.count += 1
        bucket.last = now
        self._count += 1
        if self._count > self.limit:
            self._drop_oldest()

    def expire(self, now: float) -> None:
        """Drop the acks older than the window at ``now`` (whole buckets)."""
        horizon = now - self.window_s
        while self._buckets and self._buckets[0].last < horizon:
            self._count -= self._buckets.popleft().count

    def copy(self) -> AckLog:
        """A copy that later acks do not change, for sending them again while new ones are logged."""
        copied = AckLog(window_s=self.window_s, limit=self.limit)
        copied._buckets.extend(bucket.copy() for bucket in self._buckets)
        copied._count = self._count
        return copied

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        """The ``(reply, body)`` pairs, oldest first."""
        for bucket in self._buckets:
            prefix = bucket.prefix
            for line in bytes(bucket.data[bucket.skip :]).split(_END)[: bucket.count]:
                body, prefixed = _UNKIND[line[0]]
                text = line[1:].decode()
                yield (prefix + text if prefixed else text), body

    def _open(self, reply: str, now: float) -> _Bucket:
        if self._buckets:
            closed = self._buckets[-1]
            closed.data = bytes(closed.data)  # no more appends: drop the bytearray's spare room
        self.expire(now)  # on the way, so a log nobody replays stays a window long
        bucket = _Bucket(reply.rsplit(".", _PREFIX_TOKENS)[0] + ".", now)
        self._buckets.append(bucket)
        return bucket

    def _drop_oldest(self) -> None:
        bucket = self._buckets[0]
        bucket.skip = bucket.data.index(_END, bucket.skip) + 1
        bucket.count -= 1
        self._count -= 1
        if not bucket.count:
            self._buckets.popleft()
