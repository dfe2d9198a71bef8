"""Work queues: their settings and the JetStream stream and consumer that carry them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Final

from asyncjobs.constants import (
    DEFAULT_JOB_RUN_TIME_NS,
    DEFAULT_QUEUE,
    DEFAULT_QUEUE_MAX_CONCURRENT,
    DEFAULT_QUEUE_MAX_TRIES,
    DEFAULT_QUEUE_RUN_TIME_NS,
    QUEUE_CONSUMER,
    QUEUE_STREAM_DESCRIPTION,
    QUEUE_STREAM_PREFIX,
    QUEUE_SUBJECT_PREFIX,
)
from asyncjobs.errors import ConfigurationError
from asyncjobs.task import validate_name
from asyncjobs.wiretime import ns_to_seconds, to_ns

MAX_CONCURRENT_LIMIT: Final = 10_000
DEFAULT_NAMED_QUEUE_RUN_TIME_S: Final = 300.0
# The settings a client may ask for that the server's copy of an existing queue overrides.
SERVER_SETTINGS: Final = ("max_run_time", "max_tries", "max_concurrent", "max_age", "max_entries", "discard_old")


@dataclass(frozen=True, kw_only=True)
class Queue:
    """A work queue: a JetStream work-queue stream ``CHORIA_AJ_Q_<name>`` and its consumer ``WORKERS``.

    When the queue already exists on the server, the server's settings win and are copied back into the
    client's queue when it binds, as the Go implementation does.
    """

    name: str = field(kw_only=False)
    """The queue name; the stream is ``CHORIA_AJ_Q_<name>``."""
    max_run_time: float | timedelta = DEFAULT_NAMED_QUEUE_RUN_TIME_S
    """Seconds a handler may run before it is cancelled and the item is redelivered (consumer ``ack_wait``).

    It is also how long the items of a worker that died wait before another worker gets them, so it is 5 minutes
    by default (Go: an hour); a longer handler extends its deadline with ``task.mark_in_progress()``."""
    max_tries: int = -1
    """Deliveries of one item before JetStream gives up (consumer ``max_deliver``); -1 is unlimited."""
    max_concurrent: int = DEFAULT_QUEUE_MAX_CONCURRENT
    """Tasks in flight across every worker of the queue (consumer ``max_ack_pending``)."""
    max_age: float | timedelta | None = None
    """Seconds an item may wait in the queue before it is dropped; ``None`` keeps items forever."""
    max_entries: int | None = None
    """Items the queue may hold; ``None`` is unlimited."""
    discard_old: bool = False
    """When full, drop the oldest item instead of rejecting new ones."""
    no_create: bool = False
    """Only bind to an existing queue; fail if it does not exist."""

    def __post_init__(self) -> None:
        validate_name(self.name, "queue name")
        if self.max_run_time_ns <= 0:
            raise ConfigurationError(f"queue {self.name!r}: max_run_time must be more than 0 seconds")
        if not _is_int(self.max_tries) or self.max_tries == 0 or self.max_tries < -1:
            raise ConfigurationError(f"queue {self.name!r}: max_tries must be -1 (unlimited) or at least 1")
        if not _is_int(self.max_concurrent) or not 1 <= self.max_concurrent <= MAX_CONCURRENT_LIMIT:
            raise ConfigurationError(
                f"queue {self.name!r}: max_concurrent must be an integer between 1 and {MAX_CONCURRENT_LIMIT}"
            )
        if self.max_entries is not None and (not _is_int(self.max_entries) or self.max_entries < 1):
            raise ConfigurationError(
                f"queue {self.name!r}: max_entries must be an integer of at least 1, or None for unlimited"
            )
        for flag in ("discard_old", "no_create"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigurationError(f"queue {self.name!r}: {flag} must be True or False")
        to_ns(self.max_age, name="max_age")

    @classmethod
    def default(cls) -> Queue:
        """The implicit ``DEFAULT`` queue used when none is named: 1 minute run time, 100 tries."""
        return cls(
            DEFAULT_QUEUE,
            max_run_time=ns_to_seconds(DEFAULT_QUEUE_RUN_TIME_NS),
            max_tries=DEFAULT_QUEUE_MAX_TRIES,
        )

    @property
    def stream(self) -> str:
        """The name of the work-queue stream."""
        return QUEUE_STREAM_PREFIX + self.name

    @property
    def subject_prefix(self) -> str:
        """The prefix of item subjects; an item for task ``id`` is ``<prefix><id>``."""
        return f"{QUEUE_SUBJECT_PREFIX}{self.name}."

    @property
    def max_run_time_ns(self) -> int:
        """``max_run_time`` in nanoseconds."""
        return to_ns(self.max_run_time, name="max_run_time")

    @property
    def max_age_ns(self) -> int:
        """``max_age`` in nanoseconds; 0 is unlimited."""
        return to_ns(self.max_age, name="max_age")

    def stream_config(self, *, replicas: int, memory: bool) -> dict[str, Any]:
        """The stream configuration Go creates for this queue (docs/protocol.md, Work queue streams)."""
        return {
            "name": self.stream,
            "description": QUEUE_STREAM_DESCRIPTION,
            "subjects": [f"{QUEUE_SUBJECT_PREFIX}{self.name}.>"],
            "retention": "workqueue",
            "max_consumers": -1,
            "max_msgs": self.max_entries if self.max_entries else -1,
            "max_bytes": -1,
            "max_age": self.max_age_ns,
            "max_msgs_per_subject": 1,
            "max_msg_size": -1,
            "discard": "old" if self.discard_old else "new",
            "storage": "memory" if memory else "file",
            "num_replicas": replicas,
        }

    def consumer_config(self) -> dict[str, Any]:
        """The ``WORKERS`` consumer configuration (docs/protocol.md, The WORKERS consumer)."""
        return {
            "ack_policy": "explicit",
            "ack_wait": self.max_run_time_ns,
            "deliver_policy": "all",
            "durable_name": QUEUE_CONSUMER,
            "name": QUEUE_CONSUMER,
            "max_ack_pending": self.max_concurrent,
            "max_deliver": self.max_tries,
            "replay_policy": "instant",
            "num_replicas": 0,
        }

    def ignored_settings(self, bound: Queue) -> list[str]:
        """The settings this queue asks for (differing from the defaults) that ``bound``, the server's, overrides."""
        defaults = Queue(self.name)
        ignored = []
        for name in SERVER_SETTINGS:
            wanted, default, actual = getattr(self, name), getattr(defaults, name), getattr(bound, name)
            if name in ("max_run_time", "max_age"):
                wanted, default, actual = (to_ns(v, name=name) for v in (wanted, default, actual))
            if wanted != default and wanted != actual:
                ignored.append(f"{name}={getattr(self, name)!r} (the queue has {getattr(bound, name)!r})")
        return ignored

    def with_server_settings(self, stream: dict[str, Any], consumer: dict[str, Any]) -> Queue:
        """Copy the settings the server holds into a new Queue (an existing queue's config wins)."""
        max_msgs = int(stream.get("max_msgs", -1))
        max_age_ns = int(stream.get("max_age", 0))
        ack_wait_ns = int(consumer.get("ack_wait", DEFAULT_JOB_RUN_TIME_NS))
        max_deliver = int(consumer.get("max_deliver", -1))
        return replace(
            self,
            max_run_time=ns_to_seconds(ack_wait_ns),
            max_tries=max_deliver if max_deliver > 0 else -1,
            max_concurrent=max(1, int(consumer.get("max_ack_pending", DEFAULT_QUEUE_MAX_CONCURRENT))),
            max_age=ns_to_seconds(max_age_ns) if max_age_ns > 0 else None,
            max_entries=max_msgs if max_msgs > 0 else None,
            discard_old=stream.get("discard") == "old",
        )


def _is_int(value: object) -> bool:
    """An int that is not a bool (``True`` would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)
