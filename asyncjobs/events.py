"""Lifecycle events (upstream §1.11, §2.9): live from core NATS, or replayed from the events stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Final, Self

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription
from nats.js import api

from asyncjobs import codec
from asyncjobs.codec import Event
from asyncjobs.constants import EVENTS_STREAM, EVENTS_SUBJECTS, TASK_EVENT_PREFIX
from asyncjobs.errors import CorruptDataError, JetStreamError, TaskNotFound, WaitTimeout
from asyncjobs.task import TERMINAL_STATES, Task, TaskState, validate_name

log = logging.getLogger("asyncjobs")

# Unsubscribes started for streams dropped without being closed, kept so they are not garbage collected mid-way.
_RELEASING: Final[set[asyncio.Task[None]]] = set()


def event_subject(task_id: str | None) -> str:
    """Subject carrying all events, or one task's state changes.

    Raises:
        InvalidNameError: ``task_id`` breaks the name rule.
    """
    return EVENTS_SUBJECTS if task_id is None else TASK_EVENT_PREFIX + validate_name(task_id, "task id")


class EventStream:
    """Decoded lifecycle events, an async iterator and an async context manager.

    It subscribes on the first ``__anext__`` (or in ``async with``) and unsubscribes in :meth:`aclose`, at the
    end of an ``async with`` block, or, when it is dropped without being closed (a ``break`` out of
    ``async for``), on the event loop right after. Malformed events are logged and skipped. With ``replay`` the
    stored events (``persist_events=True``) come first, then live ones, in order::

        async with client.events() as events:
            async for event in events:
                ...
    """

    def __init__(self, nc: NATS, *, task_id: str | None = None, replay: bool = False, api_prefix: str) -> None:
        """Prepare the stream; no I/O happens until it is iterated or entered.

        Raises:
            InvalidNameError: ``task_id`` breaks the name rule.
        """
        self._nc = nc
        self._subject = event_subject(task_id)
        self._replay = replay
        self._api_prefix = api_prefix
        self._sub: Subscription | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called or the subscription ended."""
        return self._closed

    async def _subscribe(self) -> Subscription:
        """Subscribe once.

        Raises:
            JetStreamError: ``replay`` was asked but the events stream does not exist.
        """
        if self._sub is not None:
            return self._sub
        self._loop = asyncio.get_running_loop()
        sub: Subscription
        if self._replay:
            js = self._nc.jetstream(prefix=self._api_prefix)
            try:
                sub = await js.subscribe(
                    self._subject, stream=EVENTS_STREAM, ordered_consumer=True, deliver_policy=api.DeliverPolicy.ALL
                )
            except Exception as exc:
                raise JetStreamError(
                    f"cannot replay events: {exc}; connect with persist_events=True to keep events in {EVENTS_STREAM}"
                ) from exc
        else:
            sub = await self._nc.subscribe(self._subject)
        if self._closed:  # closed while subscribing: iterating the released subscription ends at once
            await _unsubscribe(self._nc, sub)
            return sub
        self._sub = sub
        return sub

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        if self._closed:
            raise StopAsyncIteration
        sub = self._sub or await self._subscribe()
        while True:
            try:
                msg = await sub.messages.__anext__()
            except StopAsyncIteration:  # unsubscribed, or the connection closed
                await self.aclose()
                raise
            try:
                return codec.decode_event(msg.data)
            except CorruptDataError as exc:
                log.warning("skipping an event on %s: %s", msg.subject, exc)

    async def aclose(self) -> None:
        """Unsubscribe; iteration then ends. Idempotent."""
        self._closed = True
        sub, self._sub = self._sub, None
        if sub is not None:
            await _unsubscribe(self._nc, sub)

    async def __aenter__(self) -> Self:
        """Subscribe now, so no event published after the ``async with`` line is missed.

        Raises:
            JetStreamError: ``replay`` was asked but the events stream does not exist.
        """
        if not self._closed:
            await self._subscribe()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # Dropped without aclose(), most often by a `break` out of `async for`: release the subscription on its
        # loop. When called on that loop (the usual case) the task starts in the next loop iteration.
        sub, loop = getattr(self, "_sub", None), getattr(self, "_loop", None)  # __init__ may have raised
        if sub is None or loop is None or self._closed:
            return
        self._sub = None
        with contextlib.suppress(RuntimeError):  # the loop is closed: the connection is gone with it
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                _release(self._nc, sub)
            else:
                loop.call_soon_threadsafe(_release, self._nc, sub)


def _release(nc: NATS, sub: Subscription) -> None:
    task = asyncio.get_running_loop().create_task(_unsubscribe(nc, sub))
    _RELEASING.add(task)
    task.add_done_callback(_RELEASING.discard)


async def _unsubscribe(nc: NATS, sub: Subscription) -> None:
    if nc.is_closed:
        return
    try:
        await sub.unsubscribe()
    except Exception as exc:
        log.debug("unsubscribing from events failed: %s", exc)


def iterate_events(nc: NATS, *, task_id: str | None = None, replay: bool = False, api_prefix: str) -> EventStream:
    """Return an :class:`EventStream` of decoded events; malformed events are logged and skipped.

    With ``replay`` the stored events (``persist_events=True``) come first, then live ones, in order.

    Raises:
        InvalidNameError: ``task_id`` breaks the name rule.
    """
    return EventStream(nc, task_id=task_id, replay=replay, api_prefix=api_prefix)


WAIT_FINAL_STATES: Final = TERMINAL_STATES | {TaskState.QUEUE_ERROR}
"""States :func:`wait_final` returns on: the task will not change again unless retried."""
WAIT_REREAD_S: Final = 5.0


async def wait_final(
    nc: NATS, load: Callable[[str], Awaitable[Task]], task_id: str, *, timeout: float | None = None
) -> Task:
    """Wait until a task reaches a final state, following its events; see :meth:`asyncjobs.Client.wait`.

    Subscribes first and reads the store after, so a change in between is not missed; reads the store again every
    few seconds in case an event is lost (core NATS events are not persisted).

    Raises:
        TaskNotFound: no task has that id.
        WaitTimeout: the task was not final within ``timeout``.
    """
    sub = await nc.subscribe(event_subject(task_id))
    try:
        async with asyncio.timeout(timeout) as scope:
            return await _follow(sub, load, task_id)
    except TimeoutError:
        if scope.expired():
            raise WaitTimeout(f"task {task_id} did not reach a final state within {timeout:g}s") from None
        raise
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def _follow(sub: Subscription, load: Callable[[str], Awaitable[Task]], task_id: str) -> Task:
    task = await load(task_id)
    while task.state not in WAIT_FINAL_STATES:
        try:
            msg = await sub.next_msg(timeout=WAIT_REREAD_S)
        except nats.errors.TimeoutError:
            task = await load(task_id)
            continue
        try:
            event = codec.decode_event(msg.data)
        except CorruptDataError:
            continue
        if not isinstance(event, codec.TaskStateEvent) or event.state not in WAIT_FINAL_STATES:
            continue
        try:
            task = await load(task_id)
        except TaskNotFound:
            task.state = event.state  # discarded on reaching its final state
            task.last_err = event.last_error
            return task
    return task
