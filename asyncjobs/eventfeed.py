"""A durable feed of task lifecycle events, shared by any number of readers, for reacting to task changes reliably.

:meth:`asyncjobs.Client.events` follows events as they are published; an event published while nobody listens is
gone. An :class:`EventFeed` instead reads the events stream (``CHORIA_AJ_EVENTS``) through a durable JetStream
consumer: every event stored after the consumer was created is delivered, to one of the feed's readers, until a
reader acknowledges it. A reader that dies leaves its events to the others after ``ack_wait``; when none runs, the
events wait in the stream (for ``events_retention``, one day by default). Any client, Go included, publishes task
events on the subjects the stream keeps, so the feed also sees tasks run by workers that know nothing of it.

Delivery is at least once: a reader must be able to see an event twice.

Example::

    async with EventFeed(client, "BILLING") as feed:
        async for item in feed:
            if isinstance(item.event, asyncjobs.TaskStateEvent) and item.event.state == "complete":
                await bill(item.event.task_id)
            item.ack()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self

import orjson
from nats.aio.msg import Msg

from asyncjobs.codec import Event, decode_event
from asyncjobs.constants import EVENTS_STREAM, TASK_EVENT_WILDCARD
from asyncjobs.errors import ClientClosedError, ConfigurationError, CorruptDataError, JetStreamError
from asyncjobs.jsapi import QUEUE_ERRORS
from asyncjobs.names import validate_name
from asyncjobs.puller import Puller
from asyncjobs.wiretime import NS_PER_SECOND

if TYPE_CHECKING:
    from asyncjobs.client import Client

__all__ = ["EventFeed", "FeedItem"]

log = logging.getLogger("asyncjobs")

DEFAULT_SLOTS: Final = 256
DEFAULT_ACK_WAIT_S: Final = 30.0
ACK_PREFIX: Final = "$JS.ACK."
NAK: Final = b"-NAK"
ACK: Final = b"+ACK"
MAX_FEED_NAME_LENGTH: Final = 64
MAX_ACK_PENDING: Final = 20_000


@dataclass(slots=True)
class FeedItem:
    """One event from an :class:`EventFeed`; call :meth:`ack` once it is dealt with."""

    event: Event | None
    """The decoded event, or ``None`` when the stored message is not a valid event (ack it and move on)."""
    subject: str
    """The subject it was published on, e.g. ``CHORIA_AJ.E.task_state.<id>``."""
    stored_at: datetime
    """When the events stream stored it (aware UTC, to the microsecond): close to when it was published."""
    delivered: int
    """How many times it was delivered, this time included (above 1: a reader before did not ack it)."""
    _msg: Msg = field(repr=False)
    _finish: object = field(default=None, repr=False)

    def ack(self) -> None:
        """Mark the event dealt with: it is not delivered again."""
        self._reply(ACK)

    def nak(self, delay: float | None = None) -> None:
        """Give the event back, to be delivered again (to any reader) after ``delay`` seconds, or at once."""
        body = NAK if delay is None else NAK + b" " + orjson.dumps({"delay": int(delay * NS_PER_SECOND)})
        self._reply(body)

    def _reply(self, body: bytes) -> None:
        finish = self._finish
        self._finish = None
        if finish is None:
            return  # acked or nacked already
        assert callable(finish)
        finish(self._msg, body)


class EventFeed:
    """Read task lifecycle events through a durable consumer on the events stream, shared by all readers of a name.

    Every reader (in this process or another) that opens a feed with the same ``name`` shares one consumer: each
    event goes to one of them. The stream and the consumer are created when missing; the consumer then starts with
    the events stored from that moment on, so call :meth:`ensure` before doing what produces the events you must
    not miss.

    Args:
        client: a connected client.
        name: the durable consumer's name (``^[a-zA-Z0-9_-]+$``, at most 64 characters).
        slots: events handed out and not yet acknowledged by this reader, at most.
        ack_wait: seconds (or a ``timedelta``) after which an event handed to a reader that did not ack it goes to
            another.
        subjects: the subject filter, task state events by default.

    Raises:
        ConfigurationError: an argument is invalid.
    """

    def __init__(
        self,
        client: Client,
        name: str,
        *,
        slots: int = DEFAULT_SLOTS,
        ack_wait: float | timedelta = DEFAULT_ACK_WAIT_S,
        subjects: str = TASK_EVENT_WILDCARD,
    ) -> None:
        validate_name(name, "event feed name", max_length=MAX_FEED_NAME_LENGTH)
        if ":" in name:
            raise ConfigurationError(f"event feed name {name!r} may not contain ':': use '_' or '-'")
        if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
            raise ConfigurationError(f"slots must be a whole number of at least 1, not {slots!r}")
        if isinstance(ack_wait, timedelta):
            ack_wait = ack_wait.total_seconds()
        if not isinstance(ack_wait, int | float) or isinstance(ack_wait, bool) or not ack_wait >= 1:
            raise ConfigurationError(f"ack_wait must be at least 1 second, not {ack_wait!r}")
        self._client = client
        self._name = name
        self._slots = slots
        self._ack_wait_ns = int(ack_wait * NS_PER_SECOND)
        self._subjects = subjects
        self._ready: asyncio.Queue[FeedItem] = asyncio.Queue()
        self._puller: Puller | None = None
        self._pulling: asyncio.Task[None] | None = None
        self._ensured = False

    @property
    def name(self) -> str:
        """The durable consumer's name."""
        return self._name

    def consumer_config(self) -> dict[str, object]:
        """The durable consumer's configuration, as sent when it is created."""
        return {
            "durable_name": self._name,
            "name": self._name,
            "description": "asyncjobs event feed",
            "ack_policy": "explicit",
            "deliver_policy": "new",
            "replay_policy": "instant",
            "filter_subject": self._subjects,
            "ack_wait": self._ack_wait_ns,
            "max_deliver": -1,
            "max_ack_pending": MAX_ACK_PENDING,
            "num_replicas": 0,
        }

    async def ensure(self) -> None:
        """Create the events stream and the feed's consumer when missing; events stored from then on are kept.

        Raises:
            JetStreamError: the stream or the consumer could not be created.
        """
        if self._ensured:
            return
        await self._client.admin.ensure_events_stream()
        js = self._client._js  # the core's own JetStream wrapper
        what = f"preparing event feed {self._name!r}"
        try:
            await js.api(f"CONSUMER.INFO.{EVENTS_STREAM}.{self._name}", None, what, errors=QUEUE_ERRORS)
        except JetStreamError:
            body = {"stream_name": EVENTS_STREAM, "config": self.consumer_config(), "action": ""}
            try:
                await js.api(f"CONSUMER.CREATE.{EVENTS_STREAM}.{self._name}", body, what, errors=QUEUE_ERRORS)
            except JetStreamError:
                # Another reader created it between our INFO and CREATE; if not, the CREATE error stands.
                await js.api(f"CONSUMER.INFO.{EVENTS_STREAM}.{self._name}", None, what, errors=QUEUE_ERRORS)
        self._ensured = True

    async def start(self) -> None:
        """Ensure the consumer and start pulling events (idempotent).

        Raises:
            ClientClosedError: the client is closed.
            JetStreamError: the stream or the consumer could not be created.
        """
        if self._pulling is not None:
            return
        if self._client.closed:
            raise ClientClosedError(
                f"event feed {self._name!r}: the client is closed: read the feed with a new client from "
                "asyncjobs.connect()"
            )
        await self.ensure()
        client = self._client
        prefix = client._js.prefix
        self._puller = Puller(
            client.nc,
            f"{prefix}.CONSUMER.MSG.NEXT.{EVENTS_STREAM}.{self._name}",
            f"feed {self._name}",
            slots=self._slots,
            deliver=self._deliver,
            count_polls=False,
        )
        self._pulling = asyncio.create_task(self._puller.run(), name=f"asyncjobs-feed-{self._name}")

    def _deliver(self, msg: Msg) -> None:
        try:
            event: Event | None = decode_event(msg.data)
        except CorruptDataError as exc:
            log.warning(
                "event feed %s: skipping a message on %s that is not an event: %s", self._name, msg.subject, exc
            )
            event = None
        stored_at, delivered = _metadata(msg.reply or "")
        self._ready.put_nowait(FeedItem(event, msg.subject, stored_at, delivered, msg, _finish=self._finished))

    def _finished(self, msg: Msg, body: bytes) -> None:
        if self._puller is not None:
            self._puller.release()
        if msg.reply:
            # A plain publish, not a request: an ack that is lost only means the event comes again after ack_wait.
            task = asyncio.ensure_future(self._client.nc.publish(msg.reply, body))
            task.add_done_callback(_log_failed_ack)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> FeedItem:
        await self.start()
        pulling = self._pulling
        assert pulling is not None
        if not self._ready.empty():
            return self._ready.get_nowait()
        getter = asyncio.ensure_future(self._ready.get())
        try:
            await asyncio.wait({getter, pulling}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            if getter.done() and not getter.cancelled():
                # An item arrived as this reader was cancelled: keep it for the next one, or its slot is lost.
                self._ready.put_nowait(getter.result())
            raise
        finally:
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        if pulling.done():
            self._pulling = None
            if not pulling.cancelled() and pulling.exception() is not None:
                raise pulling.exception()  # type: ignore[misc]
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop pulling; events handed out and not acknowledged go to other readers after ``ack_wait``."""
        pulling, self._pulling = self._pulling, None
        if pulling is not None:
            pulling.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pulling
        # Events pulled but not handed out yet go back at once, rather than after ack_wait.
        while not self._ready.empty():
            self._ready.get_nowait().nak()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _metadata(reply: str) -> tuple[datetime, int]:
    """When the stream stored a message and how often it was delivered, from its ``$JS.ACK...`` reply subject."""
    tokens = reply.split(".")
    # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<timestamp>.<pending>, possibly with a
    # domain and account hash after ACK (12 tokens instead of 9).
    try:
        if len(tokens) >= 12:
            delivered, timestamp_ns = int(tokens[6]), int(tokens[9])
        else:
            delivered, timestamp_ns = int(tokens[4]), int(tokens[7])
    except (IndexError, ValueError):
        return datetime.now(UTC), 1
    return datetime.fromtimestamp(timestamp_ns / NS_PER_SECOND, UTC), delivered


def _log_failed_ack(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("event feed: an acknowledgement was not sent: %s", task.exception())
