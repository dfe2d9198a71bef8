"""Reading the task store in order, through a temporary consumer: for ``Admin.tasks`` and the reconciler.

A listing that stops early (the server sends nothing more for a while although tasks remain) raises instead of
ending quietly, so no caller mistakes a partial read for the whole store.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

import nats.errors
from nats.aio.msg import Msg
from nats.js import api

from asyncjobs import codec
from asyncjobs.constants import TASKS_STREAM, TASKS_SUBJECTS
from asyncjobs.errors import CorruptDataError, JetStreamError, RequestTimeout
from asyncjobs.jsapi import JetStream
from asyncjobs.task import Task

log = logging.getLogger("asyncjobs")

LIST_BATCH: Final = 256
LIST_FETCH_TIMEOUT_S: Final = 2.0


@dataclass(slots=True)
class TaskScan:
    """A bounded read of the task store (:func:`scan_tasks`)."""

    tasks: list[Task] = field(default_factory=list)
    """The tasks read, in stream order (corrupt ones skipped)."""
    last_seq: int = 0
    """The stream sequence of the last message read; resume after it."""
    complete: bool = True
    """Whether the read reached the end of the store."""


async def _batches(js: JetStream, after_seq: int) -> AsyncGenerator[list[Msg], None]:
    """The stored tasks after ``after_seq`` in batches, until the end of the store.

    Raises:
        RequestTimeout: the server stopped sending although tasks remain.
        JetStreamError: the consumer could not be created.
    """
    info = await js.stream_info(TASKS_STREAM, "listing tasks")
    state = info.get("state", {})
    if int(state.get("messages", 0)) == 0 or after_seq >= int(state.get("last_seq", 0)):
        return
    if after_seq:
        start: dict[str, Any] = {"deliver_policy": api.DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": after_seq + 1}
    else:
        start = {"deliver_policy": api.DeliverPolicy.ALL}
    config = api.ConsumerConfig(ack_policy=api.AckPolicy.NONE, mem_storage=True, inactive_threshold=30, **start)
    try:
        sub = await js.nc.jetstream(prefix=js.prefix).pull_subscribe(TASKS_SUBJECTS, stream=TASKS_STREAM, config=config)
    except Exception as exc:
        raise JetStreamError(f"listing tasks: cannot create a consumer: {exc}") from exc
    try:
        while True:
            try:
                msgs = await sub.fetch(LIST_BATCH, timeout=LIST_FETCH_TIMEOUT_S)
            except (nats.errors.TimeoutError, TimeoutError):
                raise RequestTimeout(
                    f"listing tasks: the server sent nothing for {LIST_FETCH_TIMEOUT_S:g}s although tasks remain; "
                    "the listing is incomplete, try again"
                ) from None
            yield msgs
            if not msgs or msgs[-1].metadata.num_pending == 0:
                return
    finally:
        # The server reaps the consumer after its inactive threshold anyway.
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


def _decode(msg: Msg) -> Task | None:
    seq = msg.metadata.sequence.stream
    try:
        return codec.decode_task(msg.data, seq=seq)
    except CorruptDataError as exc:
        log.warning(
            "skipping the task stored at sequence %d of %s (subject %s): it cannot be decoded: %s",
            seq,
            TASKS_STREAM,
            msg.subject,
            exc,
        )
        return None


async def stored_tasks(js: JetStream, *, after_seq: int = 0) -> AsyncIterator[Task]:
    """Every stored task after ``after_seq``, oldest first; a task that cannot be decoded is skipped with a WARNING.

    Raises:
        RequestTimeout: the listing stopped early.
        JetStreamError: the store could not be read.
    """
    async for msgs in _batches(js, after_seq):
        for msg in msgs:
            task = _decode(msg)
            if task is not None:
                yield task


async def scan_tasks(js: JetStream, *, after_seq: int, max_messages: int) -> TaskScan:
    """Read at most about ``max_messages`` stored messages after ``after_seq`` (whole batches).

    Raises:
        RequestTimeout: the read stopped early.
        JetStreamError: the store could not be read.
    """
    scan = TaskScan(last_seq=after_seq)
    read = 0
    batches = _batches(js, after_seq)
    try:
        async for msgs in batches:
            for msg in msgs:
                scan.last_seq = msg.metadata.sequence.stream
                task = _decode(msg)
                if task is not None:
                    scan.tasks.append(task)
            read += len(msgs)
            if read >= max_messages and msgs and msgs[-1].metadata.num_pending:
                scan.complete = False
                break
    finally:
        await batches.aclose()  # release its consumer now, not when the generator is collected
    return scan
