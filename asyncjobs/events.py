"""Lifecycle events (upstream §1.11, §2.9): live from core NATS, or replayed from the events stream."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription
from nats.js import api

from asyncjobs import codec
from asyncjobs.codec import Event
from asyncjobs.constants import EVENTS_STREAM, EVENTS_SUBJECTS, TASK_EVENT_PREFIX
from asyncjobs.errors import CorruptDataError, JetStreamError
from asyncjobs.task import validate_name

log = logging.getLogger("asyncjobs")


def event_subject(task_id: str | None) -> str:
    """Subject carrying all events, or one task's state changes."""
    return EVENTS_SUBJECTS if task_id is None else TASK_EVENT_PREFIX + validate_name(task_id, "task id")


async def iterate_events(
    nc: NATS, *, task_id: str | None = None, replay: bool = False, api_prefix: str
) -> AsyncIterator[Event]:
    """Yield decoded events until the consumer stops iterating; malformed events are logged and skipped.

    With ``replay`` the stored events (``persist_events=True``) come first, then live ones, in order.

    Raises:
        JetStreamError: ``replay`` was asked but the events stream does not exist.
    """
    subject = event_subject(task_id)
    sub: Subscription
    if replay:
        js = nc.jetstream(prefix=api_prefix)
        try:
            sub = await js.subscribe(
                subject, stream=EVENTS_STREAM, ordered_consumer=True, deliver_policy=api.DeliverPolicy.ALL
            )
        except Exception as exc:
            raise JetStreamError(
                f"cannot replay events: {exc}; connect with persist_events=True to keep events in {EVENTS_STREAM}"
            ) from exc
    else:
        sub = await nc.subscribe(subject)
    try:
        async for msg in sub.messages:
            try:
                yield codec.decode_event(msg.data)
            except CorruptDataError as exc:
                log.warning("skipping an event on %s: %s", msg.subject, exc)
    finally:
        if not nc.is_closed:
            try:
                await sub.unsubscribe()
            except Exception as exc:
                log.debug("unsubscribing from events failed: %s", exc)
