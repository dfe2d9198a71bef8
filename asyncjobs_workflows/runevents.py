"""Run state events: published on core NATS when a run starts, ends, is cancelled or is retried.

Subject ``CHORIA_AJ.WF.E.run_state.<run id>``, outside ``CHORIA_AJ.E.>`` so that task event readers (Go's
included) never meet a type they do not know. Like task events they are not stored and not guaranteed to arrive:
use :meth:`~asyncjobs_workflows.Workflows.wait` to know that a run ended.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from asyncjobs.codec import dumps, loads_object
from asyncjobs.errors import CorruptDataError
from asyncjobs.ksuid import new_ksuid
from asyncjobs.wiretime import WireTime, format_time, parse_time
from asyncjobs_workflows.constants import RUN_EVENT_PREFIX, RUN_EVENT_TYPE
from asyncjobs_workflows.record import RunRecord, RunState

if TYPE_CHECKING:
    from asyncjobs import Client

__all__ = ["RunEvent", "decode_run_event", "encode_run_event", "publish_run_event"]

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
