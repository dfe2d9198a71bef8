"""Lifecycle events (docs/protocol.md, Lifecycle events): live from core NATS, or replayed from the events stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Final, Self

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api

from asyncjobs import codec
from asyncjobs.codec import Event
from asyncjobs.constants import EVENTS_STREAM, EVENTS_SUBJECTS, JS_ERR_NO_MESSAGE_FOUND, TASK_EVENT_PREFIX
from asyncjobs.errors import ConfigurationError, CorruptDataError, JetStreamError, TaskNotFound, WaitTimeout
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

    With ``replay`` and ``until_caught_up`` the iteration ends after the newest event stored when it started
    (a replay up to "now", for a report or an audit), instead of going on with live events.
    """

    def __init__(
        self,
        nc: NATS,
        *,
        task_id: str | None = None,
        replay: bool = False,
        until_caught_up: bool = False,
        api_prefix: str,
    ) -> None:
        """Prepare the stream; no I/O happens until it is iterated or entered.

        Args:
            nc: the connection.
            task_id: only this task's state changes; all events by default.
            replay: start with the events kept in the events stream (``persist_events=True``).
            until_caught_up: with ``replay``, end after the newest event stored when the stream subscribes
                (at once when none is stored); later events are not waited for.
            api_prefix: the JetStream API prefix.

        Raises:
            InvalidNameError: ``task_id`` breaks the name rule.
            ConfigurationError: ``until_caught_up`` without ``replay``.
        """
        if until_caught_up and not replay:
            raise ConfigurationError(
                "until_caught_up=True needs replay=True: it stops after the stored events, and a live-only stream "
                "has none; pass replay=True (with persist_events=True on the client), or drop until_caught_up"
            )
        self._nc = nc
        self._subject = event_subject(task_id)
        self._replay = replay
        self._until_caught_up = until_caught_up
        self._api_prefix = api_prefix
        self._sub: Subscription | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_seq: int | None = None
        """With ``until_caught_up``: the stream sequence of the newest stored event to deliver, once known."""
        self._caught_up = False
        """With ``until_caught_up``: every stored event was delivered, so the next ``__anext__`` ends."""

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called or the subscription ended."""
        return self._closed

    async def _subscribe(self) -> Subscription | None:
        """Subscribe once; ``None`` when ``until_caught_up`` found no stored event, so nothing is to be read.

        Raises:
            JetStreamError: ``replay`` was asked but the events stream does not exist.
        """
        if self._sub is not None or self._caught_up:
            return self._sub
        self._loop = asyncio.get_running_loop()
        sub: Subscription
        if self._replay:
            js = self._nc.jetstream(prefix=self._api_prefix)
            if self._until_caught_up:
                # Read before subscribing: events stored in between are after the stop, so they are not delivered.
                self._stop_seq = await self._newest_stored_seq(js)
                if self._stop_seq == 0:
                    self._caught_up = True
                    return None
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

    async def _newest_stored_seq(self, js: JetStreamContext) -> int:
        """The stream sequence of the newest stored event on this stream's subject; 0 when there is none.

        Raises:
            JetStreamError: the events stream does not exist or cannot be read.
        """
        try:
            info = await js.stream_info(EVENTS_STREAM)
            if not info.state.messages:
                return 0
            if self._subject == EVENTS_SUBJECTS:  # the stream's own subjects: its last message is the newest
                return int(info.state.last_seq)
            try:
                last = await js.get_last_msg(EVENTS_STREAM, self._subject)
            except nats.js.errors.NotFoundError as exc:
                if exc.err_code == JS_ERR_NO_MESSAGE_FOUND:
                    return 0
                raise
            return int(last.seq or 0)
        except nats.js.errors.NotFoundError as exc:
            raise JetStreamError(
                f"cannot replay events: {exc}; connect with persist_events=True to keep events in {EVENTS_STREAM}"
            ) from exc
        except Exception as exc:
            raise JetStreamError(f"cannot replay events: reading {EVENTS_STREAM} failed: {exc}; try again") from exc

    def _passes_stop(self, msg: Msg) -> bool:
        """Whether ``msg`` is beyond the replay's stop (so it ends the iteration undelivered); notes the last one.

        Stops on the sequence, and also when the server says nothing more is pending, in case the stop event was
        removed by the stream's limits during the replay.
        """
        if self._stop_seq is None:
            return False
        meta = msg.metadata
        if meta.sequence.stream > self._stop_seq:
            return True
        if meta.sequence.stream >= self._stop_seq or meta.num_pending == 0:
            self._caught_up = True
        return False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        if self._closed:
            raise StopAsyncIteration
        sub = self._sub or await self._subscribe()
        while True:
            if sub is None or self._caught_up:  # a replay until caught up is done
                await self.aclose()
                raise StopAsyncIteration
            try:
                msg = await sub.messages.__anext__()
            except StopAsyncIteration:  # unsubscribed, or the connection closed
                await self.aclose()
                raise
            if self._passes_stop(msg):
                await self.aclose()
                raise StopAsyncIteration
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


def iterate_events(
    nc: NATS, *, task_id: str | None = None, replay: bool = False, until_caught_up: bool = False, api_prefix: str
) -> EventStream:
    """Return an :class:`EventStream` of decoded events; malformed events are logged and skipped.

    With ``replay`` the stored events (``persist_events=True``) come first, then live ones, in order; adding
    ``until_caught_up`` ends the iteration after the newest event stored when it starts.

    Raises:
        InvalidNameError: ``task_id`` breaks the name rule.
        ConfigurationError: ``until_caught_up`` without ``replay``.
    """
    return EventStream(nc, task_id=task_id, replay=replay, until_caught_up=until_caught_up, api_prefix=api_prefix)


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
