"""Run state events: published on core NATS when a run starts, ends, is cancelled or is retried.

Subject ``CHORIA_AJ.WF.E.run_state.<run id>``, outside ``CHORIA_AJ.E.>`` so that task event readers (Go's
included) never meet a type they do not know. Like task events they are not stored and not guaranteed to arrive:
use :meth:`~asyncjobs_workflows.Workflows.wait` to know that a run ended.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Self

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from asyncjobs.codec import dumps, loads_object
from asyncjobs.errors import CorruptDataError
from asyncjobs.ksuid import new_ksuid
from asyncjobs.wiretime import WireTime, format_time, parse_time
from asyncjobs_workflows.constants import RUN_EVENT_PREFIX, RUN_EVENT_TYPE
from asyncjobs_workflows.record import RunRecord, RunState

if TYPE_CHECKING:
    from asyncjobs import Client

__all__ = ["RunEvent", "RunEvents", "decode_run_event", "encode_run_event", "publish_run_event"]

log = logging.getLogger("asyncjobs.workflows")


@dataclass(frozen=True, slots=True)
class RunEvent:
    """A run changed state."""

    event_id: str
    timestamp: WireTime
    run_id: str
    workflow: str
    state: RunState
    generation: int


def encode_run_event(record: RunRecord) -> bytes:
    """The event JSON for a run as stored."""
    return dumps(
        {
            "event_id": new_ksuid(),
            "type": RUN_EVENT_TYPE,
            "timestamp": format_time(WireTime.now()),
            "run_id": record.id,
            "workflow": record.workflow,
            "state": record.state.value,
            "generation": record.generation,
        }
    )


def decode_run_event(data: bytes) -> RunEvent:
    """Read a run event.

    Raises:
        CorruptDataError: the data is not a run event.
    """
    obj = loads_object(data, "workflow run event")
    if obj.get("type") != RUN_EVENT_TYPE:
        raise CorruptDataError(f"unknown event type: {obj.get('type')}")
    try:
        return RunEvent(
            event_id=str(obj["event_id"]),
            timestamp=parse_time(obj["timestamp"]),
            run_id=str(obj["run_id"]),
            workflow=str(obj["workflow"]),
            state=RunState(obj["state"]),
            generation=int(obj.get("generation", 0)),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise CorruptDataError(f"workflow run event is not valid: {exc!r}") from exc


async def publish_run_event(client: Client, record: RunRecord) -> None:
    """Publish the run's state event (best effort: an event is never worth failing a run for)."""
    try:
        await client.nc.publish(RUN_EVENT_PREFIX + record.id, encode_run_event(record))
    except Exception as exc:
        log.debug("could not publish the event of run %s: %s", record.id, exc)


class RunEvents:
    """Run state events as they are published, of every run or of one: an async iterator and context manager.

    Entering the context subscribes, so nothing published after ``async with`` is missed; iterating without it
    subscribes on the first step. Events that cannot be decoded are skipped.
    """

    def __init__(self, client: Client, run_id: str | None = None) -> None:
        self._client = client
        self._subject = RUN_EVENT_PREFIX + (run_id or "*")
        self._sub: Subscription | None = None
        self._messages: AsyncIterator[Msg] | None = None

    async def start(self) -> None:
        """Subscribe (idempotent)."""
        if self._sub is None:
            self._sub = await self._client.nc.subscribe(self._subject)
            self._messages = self._sub.messages

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> RunEvent:
        await self.start()
        assert self._messages is not None
        while True:
            msg = await anext(self._messages)
            try:
                return decode_run_event(msg.data)
            except CorruptDataError as exc:
                log.debug("skipping a message on %s: %s", msg.subject, exc)

    async def aclose(self) -> None:
        """Unsubscribe (idempotent)."""
        sub, self._sub = self._sub, None
        if sub is not None and not self._client.nc.is_closed:
            try:
                await sub.unsubscribe()
            except Exception as exc:
                log.debug("unsubscribing from %s failed: %s", self._subject, exc)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
