"""What administration reads back about queues, the task store and key-value buckets (``client.admin``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncjobs.queue import Queue
from asyncjobs.wiretime import parse_time


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A queue's settings and what is in it right now."""

    queue: Queue
    """The queue's settings as the server holds them."""
    created: datetime | None
    """When the queue's stream was created."""
    items: int
    """Items stored in the queue (waiting, in flight, or being retried)."""
    pending: int
    """Items not yet delivered to any worker."""
    in_flight: int
    """Items delivered and not yet acknowledged (``ack_pending``)."""
    redelivered: int
    """Items delivered more than once and not yet acknowledged."""
    waiting_pulls: int
    """Pull requests workers have outstanding."""
    bytes: int = 0
    """Bytes the queue's items take."""
    replicas: int = 1
    """Stream replicas."""
    memory: bool = False
    """Whether the queue is kept in memory."""
    first: datetime | None = None
    """When the oldest item still queued was added; ``None`` when empty."""
    last: datetime | None = None
    """When the newest item was added; ``None`` when empty."""


@dataclass(frozen=True, slots=True)
class TaskStoreInfo:
    """The task store's settings and size."""

    tasks: int
    """Tasks stored."""
    bytes: int
    """Bytes stored."""
    retention: float | None
    """Seconds tasks are kept, ``None`` for forever."""
    replicas: int
    """Stream replicas."""
    memory: bool
    """Whether the store is in memory."""
    first: datetime | None = None
    """When the oldest stored task was last written; ``None`` when empty."""
    last: datetime | None = None
    """When a task was last written; ``None`` when empty."""


@dataclass(frozen=True, slots=True)
class BucketInfo:
    """A key-value bucket's settings and size (the configuration and election buckets, an extension's own)."""

    bucket: str
    """The bucket name (its stream is ``KV_<bucket>``)."""
    values: int
    """Values stored (every kept revision of every key)."""
    bytes: int
    """Bytes stored."""
    ttl: float | None
    """Seconds a value is kept, ``None`` for forever."""
    replicas: int
    """Stream replicas."""
    memory: bool
    """Whether the bucket is in memory."""


def stream_times(info: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
    """The first and last message times of a ``STREAM.INFO`` reply (``None`` when the stream is empty)."""
    state = info.get("state", {})
    if not int(state.get("messages", 0)):
        return None, None
    return _time(state.get("first_ts")), _time(state.get("last_ts"))


def _time(value: object) -> datetime | None:
    if not isinstance(value, str) or value.startswith("0001-"):
        return None
    return parse_time(value).to_datetime()


def stream_created(info: dict[str, Any]) -> datetime | None:
    """When a stream was created, from its ``STREAM.INFO`` reply."""
    return _time(info.get("created"))
