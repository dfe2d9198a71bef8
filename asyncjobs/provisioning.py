"""Provisioning: the streams, buckets and queues a client creates or binds when it connects.

See docs/protocol.md, sections Connecting and provisioning, and Streams and buckets.

Each configuration is the one the Go implementation creates, so Go and Python clients can create them in any order.
An existing stream is used as it is: the server's settings win, as upstream.
"""

from __future__ import annotations

import logging
from typing import Any

from asyncjobs.constants import (
    CONFIG_BUCKET,
    CONFIG_BUCKET_DESCRIPTION,
    DUPLICATE_WINDOW_NS,
    ELECTIONS_BUCKET,
    ELECTIONS_BUCKET_DESCRIPTION,
    ELECTIONS_TTL_NS,
    EVENTS_STREAM,
    EVENTS_STREAM_DESCRIPTION,
    EVENTS_SUBJECTS,
    QUEUE_CONSUMER,
    TASKS_STREAM,
    TASKS_STREAM_DESCRIPTION,
    TASKS_SUBJECTS,
)
from asyncjobs.errors import AsyncJobsError, JetStreamError, QueueNotFound
from asyncjobs.jsapi import QUEUE_ERRORS, JetStream
from asyncjobs.queue import Queue

log = logging.getLogger("asyncjobs")


def tasks_stream_config(*, replicas: int, memory: bool, retention_ns: int) -> dict[str, Any]:
    """The ``CHORIA_AJ_TASKS`` configuration (docs/protocol.md, Task store stream)."""
    return {
        "name": TASKS_STREAM,
        "description": TASKS_STREAM_DESCRIPTION,
        "subjects": [TASKS_SUBJECTS],
        "retention": "limits",
        "max_consumers": -1,
        "max_msgs": -1,
        "max_bytes": -1,
        "max_age": retention_ns,
        "max_msgs_per_subject": 1,
        "max_msg_size": -1,
        "discard": "old",
        "storage": "memory" if memory else "file",
        "num_replicas": replicas,
        "duplicate_window": DUPLICATE_WINDOW_NS,
    }


def bucket_stream_config(bucket: str, description: str, *, ttl_ns: int, replicas: int, memory: bool) -> dict[str, Any]:
    """A KV bucket's stream configuration as nats.go creates it (docs/protocol.md, Key-value buckets)."""
    return {
        "name": f"KV_{bucket}",
        "description": description,
        "subjects": [f"$KV.{bucket}.>"],
        "retention": "limits",
        "max_consumers": -1,
        "max_msgs": -1,
        "max_bytes": -1,
        "max_age": ttl_ns,
        "max_msgs_per_subject": 1,
        "max_msg_size": -1,
        "discard": "new",
        "storage": "memory" if memory else "file",
        "num_replicas": replicas,
        "duplicate_window": min(DUPLICATE_WINDOW_NS, ttl_ns) if ttl_ns else DUPLICATE_WINDOW_NS,
        "allow_rollup_hdrs": True,
        "deny_delete": True,
        "allow_direct": True,
    }


def events_stream_config(*, replicas: int, memory: bool, retention_ns: int) -> dict[str, Any]:
    """Our optional stream that keeps lifecycle events for replay (Go clients ignore it)."""
    return {
        "name": EVENTS_STREAM,
        "description": EVENTS_STREAM_DESCRIPTION,
        "subjects": [EVENTS_SUBJECTS],
        "retention": "limits",
        "max_age": retention_ns,
        "discard": "old",
        "storage": "memory" if memory else "file",
        "num_replicas": replicas,
    }


async def ensure_stream(js: JetStream, config: dict[str, Any], what: str) -> tuple[dict[str, Any], bool]:
    """Load a stream, creating it with ``config`` when it does not exist (an existing one is used as it is).

    Returns:
        The stream's info, and whether this call created it.
    """
    name = config["name"]
    try:
        info = await js.stream_info(name, what)
    except QueueNotFound:
        pass
    else:
        _check_replicas(info, config.get("num_replicas", 1))
        return info, False
    try:
        return await js.api(f"STREAM.CREATE.{name}", config, what), True
    except JetStreamError as exc:
        # Another process may have created it between our INFO and CREATE; if not, the CREATE error stands.
        try:
            return await js.stream_info(name, what), False
        except QueueNotFound:
            raise exc from None


def _check_replicas(info: dict[str, Any], wanted: int) -> None:
    """Warn when an existing stream has fewer replicas than asked for: the setting only applies on creation."""
    config = info.get("config", {})
    have = config.get("num_replicas", 1) or 1
    if wanted > have:
        name = config.get("name", "?")
        log.warning(
            "stream %s already exists with %d replica(s), so replicas=%d is ignored (it applies only when a stream is "
            "created): raise it on the server, e.g. `nats stream edit %s --replicas %d`",
            name,
            have,
            wanted,
            name,
            wanted,
        )


async def prepare_tasks(js: JetStream, *, replicas: int, memory: bool, retention_ns: int) -> None:
    """Create or load ``CHORIA_AJ_TASKS`` and the configuration and election buckets."""
    await ensure_stream(
        js, tasks_stream_config(replicas=replicas, memory=memory, retention_ns=retention_ns), "preparing the task store"
    )
    for bucket, description, ttl in (
        (CONFIG_BUCKET, CONFIG_BUCKET_DESCRIPTION, 0),
        (ELECTIONS_BUCKET, ELECTIONS_BUCKET_DESCRIPTION, ELECTIONS_TTL_NS),
    ):
        config = bucket_stream_config(bucket, description, ttl_ns=ttl, replicas=replicas, memory=memory)
        await ensure_stream(js, config, f"preparing the {bucket} bucket")


async def prepare_events(js: JetStream, *, replicas: int, memory: bool, retention_ns: int) -> None:
    """Create or load the stream that keeps lifecycle events."""
    config = events_stream_config(replicas=replicas, memory=memory, retention_ns=retention_ns)
    await ensure_stream(js, config, "preparing the events stream")


async def prepare_queue(js: JetStream, queue: Queue, *, replicas: int, memory: bool) -> tuple[Queue, bool]:
    """Create or bind a queue's stream and ``WORKERS`` consumer.

    Returns:
        The queue with the server's settings, and whether this call created its stream.

    Raises:
        QueueNotFound: ``no_create`` is set and the queue does not exist.
        QueueConsumerNotFound: ``no_create`` is set and the queue has no ``WORKERS`` consumer.
    """
    what = f"binding queue {queue.name!r}"
    created = False
    if queue.no_create:
        try:
            stream = await js.stream_info(queue.stream, what)
        except QueueNotFound as exc:
            raise QueueNotFound(
                f"queue {queue.name!r} does not exist: create it first (Queue({queue.name!r}) without "
                f"no_create=True, or `ajc queue add {queue.name}`)",
                code=exc.code,
                err_code=exc.err_code,
            ) from exc
        consumer = await js.api(f"CONSUMER.INFO.{queue.stream}.{QUEUE_CONSUMER}", None, what, errors=QUEUE_ERRORS)
    else:
        stream, created = await ensure_stream(js, queue.stream_config(replicas=replicas, memory=memory), what)
        if created:
            log.info("created queue %r (stream %s)", queue.name, queue.stream)
        try:
            consumer = await js.api(f"CONSUMER.INFO.{queue.stream}.{QUEUE_CONSUMER}", None, what, errors=QUEUE_ERRORS)
        except JetStreamError:
            body = {"stream_name": queue.stream, "config": queue.consumer_config(), "action": ""}
            consumer = await js.api(f"CONSUMER.CREATE.{queue.stream}.{QUEUE_CONSUMER}", body, what, errors=QUEUE_ERRORS)
    bound = queue.with_server_settings(stream.get("config", {}), consumer.get("config", {}))
    ignored = queue.ignored_settings(bound)
    if ignored:
        log.warning(
            "queue %r already exists, so its settings stay as they are and these are ignored: %s (change an "
            "existing queue's settings on the server, or delete and recreate the queue)",
            queue.name,
            ", ".join(ignored),
        )
    return bound, created


async def warn_if_still_empty(js: JetStream, queue: Queue) -> None:
    """Warn that a worker is about to wait on a queue its own client created and that nothing was put on since.

    That is what a typo in a queue name looks like: the tasks wait on the queue that was meant, forever.
    """
    try:
        info = await js.stream_info(queue.stream, f"checking queue {queue.name!r}")
    except AsyncJobsError:
        return  # the worker will report a queue it cannot reach
    state = info.get("state", {})
    if state.get("messages", 0) or state.get("last_seq", 0):
        return
    log.warning(
        "queue %r did not exist: this client created it and nothing was put on it yet, so this worker waits on a "
        "new, empty queue; if the name is a typo, tasks on the queue you meant are not processed here (bind only "
        "existing queues with Queue(%r, no_create=True), or --no-create on the worker command)",
        queue.name,
        queue.name,
    )
