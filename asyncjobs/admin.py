"""Administration of queues and the task store (Go's ``StorageAdmin``; docs/protocol.md, Administration)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from asyncjobs.constants import (
    CONFIG_BUCKET,
    QUEUE_CONSUMER,
    QUEUE_DISCOVERY_SUBJECT,
    QUEUE_PURGED_KEY_PREFIX,
    QUEUE_STREAM_PREFIX,
    TASKS_STREAM,
)
from asyncjobs.errors import AsyncJobsError, ConfigurationError
from asyncjobs.jsapi import QUEUE_ERRORS, JetStream
from asyncjobs.kv import KeyValue
from asyncjobs.listing import stored_tasks
from asyncjobs.provisioning import bucket_stream_config, ensure_stream, prepare_events
from asyncjobs.queue import Queue
from asyncjobs.storage import Storage
from asyncjobs.task import FAILED_STATES, Task, TaskState, validate_name
from asyncjobs.wiretime import WireTime, parse_time, to_ns

log = logging.getLogger("asyncjobs")

LIST_BATCH: Final = 256
LIST_FETCH_TIMEOUT_S: Final = 2.0


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


class Admin:
    """Queue and task-store administration for a connected client (``client.admin``)."""

    def __init__(
        self, storage: Storage, js: JetStream, *, replicas: int = 1, memory: bool = False, events_retention_ns: int = 0
    ) -> None:
        self._storage = storage
        self._js = js
        self._replicas = replicas
        self._memory = memory
        self._events_retention_ns = events_retention_ns

    async def ensure_events_stream(self) -> None:
        """Create the stream that keeps lifecycle events (``CHORIA_AJ_EVENTS``) when it does not exist.

        A client with ``persist_events=True`` does this when it connects. It is created with the client's
        ``replicas``, storage and ``events_retention``; an existing stream is used as it is.

        Raises:
            JetStreamError: the stream could not be created.
        """
        await prepare_events(
            self._js, replicas=self._replicas, memory=self._memory, retention_ns=self._events_retention_ns
        )

    async def ensure_bucket(
        self, bucket: str, *, description: str = "", ttl: float | timedelta | None = None
    ) -> KeyValue:
        """Create a key-value bucket laid out as nats.go lays one out, when it does not exist; return it.

        Extensions keep their state this way (the workflow runs bucket, for one). The bucket keeps one value per key,
        with the client's ``replicas`` and storage; an existing bucket is used as it is.

        Args:
            bucket: the bucket name (``^[a-zA-Z0-9_-]+$``).
            description: the description of its stream.
            ttl: seconds after which a value is removed; ``None`` keeps values until deleted.

        Raises:
            ConfigurationError: an invalid name or ttl.
            JetStreamError: the bucket could not be created.
        """
        validate_name(bucket, "bucket name")
        if ":" in bucket:
            raise ConfigurationError(f"bucket name {bucket!r} may not contain ':': use '_' or '-'")
        config = bucket_stream_config(
            bucket, description, ttl_ns=to_ns(ttl, name="ttl"), replicas=self._replicas, memory=self._memory
        )
        await ensure_stream(self._js, config, f"preparing the {bucket} bucket")
        return KeyValue(self._js, bucket)

    async def queue_names(self) -> list[str]:
        """Names of every queue on the server."""
        names: list[str] = []
        offset = 0
        while True:
            reply = await self._js.api(
                "STREAM.NAMES", {"subject": QUEUE_DISCOVERY_SUBJECT, "offset": offset}, "listing queues"
            )
            streams = reply.get("streams") or []
            names.extend(s[len(QUEUE_STREAM_PREFIX) :] for s in streams if s.startswith(QUEUE_STREAM_PREFIX))
            offset += len(streams)
            if not streams or offset >= int(reply.get("total", 0)):
                return sorted(names)

    async def queues(self) -> list[QueueInfo]:
        """Information on every queue."""
        return [await self.queue_info(name) for name in await self.queue_names()]

    async def queue_info(self, name: str) -> QueueInfo:
        """A queue's settings and counts.

        Raises:
            QueueNotFound: no such queue.
        """
        validate_name(name, "queue name")
        stream_name = QUEUE_STREAM_PREFIX + name
        what = f"reading queue {name!r}"
        stream = await self._js.stream_info(stream_name, what)
        consumer = await self._js.api(f"CONSUMER.INFO.{stream_name}.{QUEUE_CONSUMER}", None, what, errors=QUEUE_ERRORS)
        queue = Queue(name).with_server_settings(stream.get("config", {}), consumer.get("config", {}))
        created = stream.get("created")
        return QueueInfo(
            queue=queue,
            created=parse_time(created).to_datetime() if isinstance(created, str) else None,
            items=int(stream.get("state", {}).get("messages", 0)),
            pending=int(consumer.get("num_pending", 0)),
            in_flight=int(consumer.get("num_ack_pending", 0)),
            redelivered=int(consumer.get("num_redelivered", 0)),
            waiting_pulls=int(consumer.get("num_waiting", 0)),
        )

    async def purge_queue(self, name: str) -> None:
        """Remove every item from a queue.

        The tasks stay in the store; the reconciler of the queue's workers ends those that were waiting as
        ``expired`` (``its work item was removed when queue ... was purged``), since their work was dropped.

        Raises:
            QueueNotFound: no such queue.
        """
        validate_name(name, "queue name")
        await self._js.api(
            f"STREAM.PURGE.{QUEUE_STREAM_PREFIX}{name}", None, f"purging queue {name!r}", errors=QUEUE_ERRORS
        )
        await self._record_purge(name)

    async def delete_queue(self, name: str) -> None:
        """Delete a queue and its items (the tasks stay in the store, ended as for :meth:`purge_queue`).

        Raises:
            QueueNotFound: no such queue.
        """
        validate_name(name, "queue name")
        await self._js.api(
            f"STREAM.DELETE.{QUEUE_STREAM_PREFIX}{name}", None, f"deleting queue {name!r}", errors=QUEUE_ERRORS
        )
        await self._record_purge(name)

    async def _record_purge(self, name: str) -> None:
        # The reconciler ends the queue's tasks whose items an operator removed, rather than queueing them again.
        try:
            await KeyValue(self._js, CONFIG_BUCKET).put(QUEUE_PURGED_KEY_PREFIX + name, str(time.time_ns()).encode())
        except AsyncJobsError as exc:
            log.warning(
                "queue %r: could not record its purge (%s); the reconciler will queue its waiting tasks again",
                name,
                exc,
            )

    async def tasks_info(self) -> TaskStoreInfo:
        """The task store's size and settings."""
        info = await self._js.stream_info(TASKS_STREAM, "reading the task store")
        config, state = info.get("config", {}), info.get("state", {})
        max_age = int(config.get("max_age", 0))
        return TaskStoreInfo(
            tasks=int(state.get("messages", 0)),
            bytes=int(state.get("bytes", 0)),
            retention=max_age / 1e9 if max_age else None,
            replicas=int(config.get("num_replicas", 1)),
            memory=config.get("storage") == "memory",
        )

    async def purge_tasks(self) -> None:
        """Delete every stored task (queue items whose task is gone are terminated when delivered)."""
        await self._js.api(f"STREAM.PURGE.{TASKS_STREAM}", None, "purging the task store")

    async def set_task_retention(self, retention: float | timedelta | None) -> None:
        """Change how long tasks are kept; ``None`` keeps them forever.

        Raises:
            ConfigurationError: negative retention.
        """
        max_age = to_ns(retention, name="retention")
        info = await self._js.stream_info(TASKS_STREAM, "reading the task store")
        config: dict[str, Any] = dict(info["config"])
        config["max_age"] = max_age
        await self._js.api(f"STREAM.UPDATE.{TASKS_STREAM}", config, "changing the task retention")

    async def delete_task(self, task_id: str) -> None:
        """Erase one task.

        Raises:
            TaskNotFound: no such task.
        """
        await self._storage.delete_task(validate_name(task_id, "task id"))

    async def tasks(
        self,
        *,
        states: Iterable[TaskState | str] = (),
        task_type: str | None = None,
        queue: str | None = None,
        created_since: datetime | None = None,
        limit: int | None = None,
        after_seq: int = 0,
    ) -> AsyncGenerator[Task, None]:
        """Iterate over stored tasks, oldest first, keeping those that match every filter given.

        Reads a snapshot through a temporary consumer; tasks stored after the call starts may be missed. A task
        that cannot be decoded is skipped with a WARNING naming its stream sequence and subject.

        Args:
            states: keep tasks in these states (any :class:`TaskState` or its wire name, ``queue_error`` included).
            task_type: keep tasks of this type.
            queue: keep tasks of this queue.
            created_since: keep tasks created at or after this time.
            limit: stop after this many tasks.
            after_seq: read only tasks stored at a stream sequence above this one (``Task.seq`` of the last task
                seen), to resume a listing or page through a large store; 0 reads all.

        Raises:
            ConfigurationError: an invalid filter.
            RequestTimeout: the server stopped sending tasks before the end of the store (the listing is partial).
        """
        wanted = frozenset(TaskState.parse(s) for s in states)
        since_ns = None if created_since is None else WireTime.from_datetime(created_since).unix_ns
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigurationError(f"limit must be an integer of at least 1, or None for no limit, not {limit!r}")
        if isinstance(after_seq, bool) or not isinstance(after_seq, int) or after_seq < 0:
            raise ConfigurationError(f"after_seq must be a stream sequence (an integer >= 0), not {after_seq!r}")
        found = 0
        async for task in stored_tasks(self._js, after_seq=after_seq):
            if (
                (wanted and task.state not in wanted)
                or (task_type is not None and task.type != task_type)
                or (queue is not None and task.queue != queue)
                or (since_ns is not None and task.created_at.unix_ns < since_ns)
            ):
                continue
            yield task
            found += 1
            if limit is not None and found >= limit:
                return

    async def failed_tasks(
        self,
        *,
        task_type: str | None = None,
        queue: str | None = None,
        created_since: datetime | None = None,
        limit: int | None = None,
        after_seq: int = 0,
    ) -> AsyncGenerator[Task, None]:
        """Iterate over the tasks that failed for good (in :data:`~asyncjobs.FAILED_STATES`), oldest first.

        The same listing as :meth:`tasks` with ``states=FAILED_STATES``: ``expired``, ``terminated``,
        ``unreachable``, ``queue_error`` and unknown states; tasks in ``retry`` are still being tried and are left
        out. Each task's ``last_err`` says why it failed::

            async for task in client.admin.failed_tasks(queue="EMAIL", limit=100):
                print(task.id, task.state, task.last_err)  # then retry_task() or delete_task() it

        Args:
            task_type: keep tasks of this type.
            queue: keep tasks of this queue.
            created_since: keep tasks created at or after this time.
            limit: stop after this many tasks.
            after_seq: read only tasks stored above this stream sequence (``Task.seq`` of the last task seen).

        Raises:
            ConfigurationError: an invalid filter.
            RequestTimeout: the server stopped sending tasks before the end of the store (the listing is partial).
        """
        listing = self.tasks(
            states=FAILED_STATES,
            task_type=task_type,
            queue=queue,
            created_since=created_since,
            limit=limit,
            after_seq=after_seq,
        )
        # Closed at once when the caller stops early, so its temporary consumer is released now.
        async with contextlib.aclosing(listing) as tasks:
            async for task in tasks:
                yield task
