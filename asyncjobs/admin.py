"""Administration of queues and the task store (Go's ``StorageAdmin``; docs/protocol.md, Administration)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Iterable
from datetime import datetime, timedelta
from typing import Any, Final

from asyncjobs.constants import KV_STREAM_PREFIX, TASKS_STREAM
from asyncjobs.errors import ConfigurationError, JetStreamError, QueueNotFound
from asyncjobs.jsapi import JetStream
from asyncjobs.kv import KeyValue
from asyncjobs.listing import stored_tasks
from asyncjobs.provisioning import bucket_stream_config, ensure_stream, prepare_events, prepare_tasks
from asyncjobs.queueadmin import UNCHANGED, QueueAdmin, check_replicas
from asyncjobs.storage import Storage
from asyncjobs.storeinfo import BucketInfo, TaskStoreInfo, stream_times
from asyncjobs.task import FAILED_STATES, Task, TaskState, validate_name
from asyncjobs.wiretime import WireTime, to_ns

log = logging.getLogger("asyncjobs")

LIST_BATCH: Final = 256
LIST_FETCH_TIMEOUT_S: Final = 2.0


class Admin(QueueAdmin):
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

    async def tasks_info(self) -> TaskStoreInfo:
        """The task store's size and settings.

        Raises:
            JetStreamError: the task store does not exist (no client has set up storage yet).
        """
        info = await self._task_stream()
        config, state = info.get("config", {}), info.get("state", {})
        max_age = int(config.get("max_age", 0))
        first, last = stream_times(info)
        return TaskStoreInfo(
            tasks=int(state.get("messages", 0)),
            bytes=int(state.get("bytes", 0)),
            retention=max_age / 1e9 if max_age else None,
            replicas=int(config.get("num_replicas", 1)),
            memory=config.get("storage") == "memory",
            first=first,
            last=last,
        )

    async def create_task_store(
        self,
        *,
        retention: float | timedelta | None = None,
        replicas: int | None = None,
        memory: bool | None = None,
    ) -> TaskStoreInfo:
        """Create the task store (and the configuration and election buckets) when missing; an existing store is
        kept as it is. No queue is created.

        Args:
            retention: seconds tasks are kept; ``None`` keeps them forever.
            replicas: stream replicas (default: the client's ``replicas``).
            memory: keep the store in memory (default: the client's ``memory_storage``).

        Raises:
            ConfigurationError: a negative retention or replicas outside 1 to 5.
        """
        replicas = self._replicas if replicas is None else replicas
        check_replicas(replicas)
        await prepare_tasks(
            self._js,
            replicas=replicas,
            memory=self._memory if memory is None else memory,
            retention_ns=to_ns(retention, name="retention"),
        )
        return await self.tasks_info()

    async def _task_stream(self) -> dict[str, Any]:
        try:
            return await self._js.stream_info(TASKS_STREAM, "reading the task store")
        except QueueNotFound as exc:
            raise JetStreamError(
                f"the task store (stream {TASKS_STREAM}) does not exist: connect a client that sets up storage "
                "(without no_storage_init), or run `ajc tasks initialize`",
                code=exc.code,
                err_code=exc.err_code,
                description=exc.description,
            ) from exc

    async def configure_task_store(
        self, *, retention: float | timedelta | None = UNCHANGED, replicas: int = UNCHANGED
    ) -> TaskStoreInfo:
        """Change how long tasks are kept and the store's replicas; settings not given stay as they are.

        Args:
            retention: seconds tasks are kept; ``None`` keeps them forever.
            replicas: stream replicas (1 to 5; a cluster needs that many servers).

        Raises:
            ConfigurationError: a negative retention or replicas outside 1 to 5.
            JetStreamError: the task store does not exist.
        """
        info = await self._task_stream()
        config: dict[str, Any] = dict(info["config"])
        if retention is not UNCHANGED:
            config["max_age"] = to_ns(retention, name="retention")
        if replicas is not UNCHANGED:
            check_replicas(replicas)
            config["num_replicas"] = replicas
        await self._js.api(f"STREAM.UPDATE.{TASKS_STREAM}", config, "configuring the task store")
        return await self.tasks_info()

    async def bucket_info(self, bucket: str) -> BucketInfo | None:
        """A key-value bucket's size and settings; ``None`` when it does not exist.

        Raises:
            ConfigurationError: an invalid bucket name.
        """
        validate_name(bucket, "bucket name")
        try:
            info = await self._js.stream_info(f"{KV_STREAM_PREFIX}{bucket}", f"reading bucket {bucket!r}")
        except QueueNotFound:  # the stream-not-found error, whatever the stream holds
            return None
        config, state = info.get("config", {}), info.get("state", {})
        max_age = int(config.get("max_age", 0))
        return BucketInfo(
            bucket=bucket,
            values=int(state.get("messages", 0)),
            bytes=int(state.get("bytes", 0)),
            ttl=max_age / 1e9 if max_age else None,
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
        await self.configure_task_store(retention=retention)

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
