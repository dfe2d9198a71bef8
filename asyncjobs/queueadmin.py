"""Queue administration (part of ``client.admin``): create, read, change, purge and delete work queues."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any, Final

from asyncjobs.constants import (
    CONFIG_BUCKET,
    QUEUE_CONSUMER,
    QUEUE_DISCOVERY_SUBJECT,
    QUEUE_PURGED_KEY_PREFIX,
    QUEUE_STREAM_PREFIX,
)
from asyncjobs.errors import AsyncJobsError, ConfigurationError, QueueNotFound
from asyncjobs.jsapi import QUEUE_ERRORS, JetStream
from asyncjobs.kv import KeyValue
from asyncjobs.provisioning import prepare_queue
from asyncjobs.queue import Queue
from asyncjobs.storeinfo import QueueInfo, stream_created, stream_times
from asyncjobs.task import validate_name

log = logging.getLogger("asyncjobs")

MAX_REPLICAS: Final = 5


class _Unset:
    """The default of a setting :meth:`QueueAdmin.configure_queue` leaves as it is (``None`` means unlimited)."""

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final[Any] = _Unset()
"""A setting left as the server has it."""


class QueueAdmin:
    """The queue half of :class:`asyncjobs.Admin`."""

    _js: JetStream
    _replicas: int
    _memory: bool

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
        try:
            stream = await self._js.stream_info(stream_name, what)
        except QueueNotFound as exc:
            raise _missing(name, exc) from exc
        consumer = await self._js.api(f"CONSUMER.INFO.{stream_name}.{QUEUE_CONSUMER}", None, what, errors=QUEUE_ERRORS)
        config, state = stream.get("config", {}), stream.get("state", {})
        first, last = stream_times(stream)
        return QueueInfo(
            queue=Queue(name).with_server_settings(config, consumer.get("config", {})),
            created=stream_created(stream),
            items=int(state.get("messages", 0)),
            pending=int(consumer.get("num_pending", 0)),
            in_flight=int(consumer.get("num_ack_pending", 0)),
            redelivered=int(consumer.get("num_redelivered", 0)),
            waiting_pulls=int(consumer.get("num_waiting", 0)),
            bytes=int(state.get("bytes", 0)),
            replicas=int(config.get("num_replicas", 1)),
            memory=config.get("storage") == "memory",
            first=first,
            last=last,
        )

    async def create_queue(self, queue: Queue, *, replicas: int | None = None, memory: bool | None = None) -> QueueInfo:
        """Create a queue with these settings, or bind it as it is when it exists (its settings are kept).

        Args:
            queue: the queue and its settings.
            replicas: stream replicas (default: the client's ``replicas``).
            memory: keep it in memory (default: the client's ``memory_storage``).

        Raises:
            ConfigurationError: replicas outside 1 to 5.
            QueueNotFound: ``queue.no_create`` is set and it does not exist.
        """
        replicas = self._replicas if replicas is None else replicas
        check_replicas(replicas)
        memory = self._memory if memory is None else memory
        await prepare_queue(self._js, queue, replicas=replicas, memory=memory)
        return await self.queue_info(queue.name)

    async def configure_queue(
        self,
        name: str,
        *,
        max_age: float | timedelta | None = UNCHANGED,
        max_entries: int | None = UNCHANGED,
        max_tries: int = UNCHANGED,
        max_run_time: float | timedelta = UNCHANGED,
        max_concurrent: int = UNCHANGED,
        replicas: int = UNCHANGED,
    ) -> QueueInfo:
        """Change an existing queue's settings in place; the items and the workers' consumer are kept.

        Settings not given stay as they are. The stream (``max_age``, ``max_entries``, ``replicas``) and the
        ``WORKERS`` consumer (``max_tries``, ``max_run_time``, ``max_concurrent``) are updated on the server;
        running workers pick the consumer settings up at once, and their own copy when they restart.

        Args:
            name: the queue.
            max_age: seconds an item may wait; ``None`` for forever.
            max_entries: items the queue may hold; ``None`` for unlimited.
            max_tries: deliveries of one item; -1 for unlimited.
            max_run_time: seconds a handler may run before its item is redelivered.
            max_concurrent: tasks in flight across every worker.
            replicas: stream replicas (1 to 5; a cluster needs that many servers).

        Raises:
            ConfigurationError: an invalid value (checked as for :class:`Queue`).
            QueueNotFound: no such queue.
        """
        current = (await self.queue_info(name)).queue
        changes = {
            key: value
            for key, value in {
                "max_age": max_age,
                "max_entries": max_entries,
                "max_tries": max_tries,
                "max_run_time": max_run_time,
                "max_concurrent": max_concurrent,
            }.items()
            if value is not UNCHANGED
        }
        try:
            wanted = Queue(**{**_settings(current), **changes})
        except TypeError as exc:
            raise ConfigurationError(f"queue {name!r}: {exc}") from exc
        what = f"configuring queue {name!r}"
        stream_name = QUEUE_STREAM_PREFIX + name
        stream = await self._js.stream_info(stream_name, what)
        config: dict[str, Any] = dict(stream["config"])
        config["max_age"] = wanted.max_age_ns
        config["max_msgs"] = wanted.max_entries if wanted.max_entries else -1
        if replicas is not UNCHANGED:
            check_replicas(replicas)
            config["num_replicas"] = replicas
        await self._js.api(f"STREAM.UPDATE.{stream_name}", config, what, errors=QUEUE_ERRORS)
        consumer = await self._js.api(f"CONSUMER.INFO.{stream_name}.{QUEUE_CONSUMER}", None, what, errors=QUEUE_ERRORS)
        consumer_config: dict[str, Any] = dict(consumer["config"])
        consumer_config.update(
            ack_wait=wanted.max_run_time_ns, max_deliver=wanted.max_tries, max_ack_pending=wanted.max_concurrent
        )
        body = {"stream_name": stream_name, "config": consumer_config, "action": "update"}
        await self._js.api(f"CONSUMER.CREATE.{stream_name}.{QUEUE_CONSUMER}", body, what, errors=QUEUE_ERRORS)
        return await self.queue_info(name)

    async def purge_queue(self, name: str) -> None:
        """Remove every item from a queue.

        The tasks stay in the store; the reconciler of the queue's workers ends those that were waiting as
        ``expired`` (``its work item was removed when queue ... was purged``), since their work was dropped.

        Raises:
            QueueNotFound: no such queue.
        """
        await self._empty(name, "PURGE", "purging")

    async def delete_queue(self, name: str) -> None:
        """Delete a queue and its items (the tasks stay in the store, ended as for :meth:`purge_queue`).

        Raises:
            QueueNotFound: no such queue.
        """
        await self._empty(name, "DELETE", "deleting")

    async def _empty(self, name: str, operation: str, doing: str) -> None:
        validate_name(name, "queue name")
        try:
            await self._js.api(
                f"STREAM.{operation}.{QUEUE_STREAM_PREFIX}{name}", None, f"{doing} queue {name!r}", errors=QUEUE_ERRORS
            )
        except QueueNotFound as exc:
            raise _missing(name, exc) from exc
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


def _missing(name: str, exc: QueueNotFound) -> QueueNotFound:
    return QueueNotFound(
        f"queue {name!r} does not exist: create it with `ajc queues new {name}` (or asyncjobs.Queue({name!r}) in "
        "code), or check the name with `ajc queues list`",
        code=exc.code,
        err_code=exc.err_code,
        description=exc.description,
    )


def _settings(queue: Queue) -> dict[str, Any]:
    return {
        "name": queue.name,
        "max_run_time": queue.max_run_time,
        "max_tries": queue.max_tries,
        "max_concurrent": queue.max_concurrent,
        "max_age": queue.max_age,
        "max_entries": queue.max_entries,
        "discard_old": queue.discard_old,
    }


def check_replicas(replicas: int) -> None:
    """Raise :class:`ConfigurationError` unless ``replicas`` is 1 to 5."""
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= MAX_REPLICAS:
        raise ConfigurationError(f"replicas must be 1 to {MAX_REPLICAS}, not {replicas!r}")
