"""``client.events()`` releases its subscription: on ``break``, on ``aclose()`` and at the end of ``async with``;
a replay with ``until_caught_up`` ends after the events stored when it started."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable

import pytest

import asyncjobs
from asyncjobs.events import EventStream, iterate_events
from asyncjobs.testing import eventually
from tests.core.conftest import ClientFactory


def _sids(client: asyncjobs.Client) -> set[int]:
    return set(client._nc._subs)


async def _enqueue_once_subscribed(client: asyncjobs.Client, before: set[int]) -> set[int]:
    """Wait until the event stream has subscribed, then make an event; return the new subscription ids."""
    await eventually(lambda: _sids(client) - before)
    added = _sids(client) - before
    await client.enqueue(asyncjobs.Task("x"))
    return added


async def test_break_releases_the_subscription(make_client: ClientFactory) -> None:
    client = await make_client(queue="EVB")
    before = _sids(client)
    producer = asyncio.create_task(_enqueue_once_subscribed(client, before))
    async for event in client.events():
        assert isinstance(event, asyncjobs.TaskStateEvent) and event.state == "new"
        break
    added = await producer
    assert added  # the stream had subscribed
    await asyncio.sleep(0)  # one loop iteration: the unsubscribe runs
    assert _sids(client) == before


async def test_break_out_of_a_replay_releases_the_subscription(make_client: ClientFactory) -> None:
    client = await make_client(queue="EVR", persist_events=True)
    task = await client.enqueue(asyncjobs.Task("x"))
    # nats-py creates its request mux subscription on the first request (the replay makes one); it stays.
    await client._nc.request("$JS.API.INFO", b"")
    before = _sids(client)
    async for event in client.events(task.id, replay=True):
        assert isinstance(event, asyncjobs.TaskStateEvent) and event.task_id == task.id
        break
    await asyncio.sleep(0)
    assert _sids(client) == before


async def test_aclose_and_async_with(make_client: ClientFactory) -> None:
    client = await make_client(queue="EVC")
    before = _sids(client)
    stream = client.events()
    assert isinstance(stream, EventStream)
    assert _sids(client) == before  # lazy: nothing subscribed yet
    async with stream as events:
        assert len(_sids(client) - before) == 1  # subscribed on entry, so no event is missed
        task = await client.enqueue(asyncjobs.Task("x"))
        event = await anext(events)
        assert isinstance(event, asyncjobs.TaskStateEvent) and event.task_id == task.id
    assert _sids(client) == before and stream.closed
    await stream.aclose()  # idempotent
    with pytest.raises(StopAsyncIteration):
        await anext(stream)

    stream = client.events()
    producer = asyncio.create_task(_enqueue_once_subscribed(client, before))
    assert isinstance(await anext(stream), asyncjobs.TaskStateEvent)
    await producer
    await stream.aclose()
    assert _sids(client) == before
    assert [event async for event in stream] == []


async def test_dropped_stream_is_released_even_when_kept_in_a_cycle(make_client: ClientFactory) -> None:
    client = await make_client(queue="EVG")
    before = _sids(client)
    holder: list[object] = []
    stream = client.events()
    holder.append(holder)  # a reference cycle, so only the garbage collector can free it
    holder.append(stream)
    producer = asyncio.create_task(_enqueue_once_subscribed(client, before))
    await anext(stream)
    await producer
    del stream, holder
    gc.collect()
    await eventually(lambda: _sids(client) == before)


async def test_corrupt_events_are_skipped(make_client: ClientFactory, caplog: pytest.LogCaptureFixture) -> None:
    client = await make_client(queue="EVX")
    async with client.events() as events:
        await client._nc.publish("CHORIA_AJ.E.task_state.x", b"{not json")
        task = await client.enqueue(asyncjobs.Task("x"))
        with caplog.at_level(logging.WARNING, logger="asyncjobs"):
            event = await anext(events)
    assert isinstance(event, asyncjobs.TaskStateEvent) and event.task_id == task.id
    assert "skipping an event on CHORIA_AJ.E.task_state.x" in caplog.text


def test_invalid_task_id_is_refused_at_once() -> None:
    with pytest.raises(asyncjobs.InvalidNameError, match="task id is invalid"):
        EventStream(None, task_id="a.b", api_prefix="$JS.API")  # type: ignore[arg-type]


# ---- replay until caught up ------------------------------------------------------------------------------------


def _caught_up_stream(client: asyncjobs.Client, task_id: str | None = None) -> EventStream:
    return EventStream(client._nc, task_id=task_id, replay=True, until_caught_up=True, api_prefix=client._js.prefix)


async def _stored_events(client: asyncjobs.Client, count: int) -> None:
    """Wait until the events stream holds ``count`` events (they reach it asynchronously, from core NATS)."""

    async def stored() -> bool:
        info = await client._nc.jetstream().stream_info("CHORIA_AJ_EVENTS")
        return info.state.messages == count

    await eventually(stored, message=f"{count} events stored")


async def _drain(stream: EventStream) -> list[asyncjobs.Event]:
    async with asyncio.timeout(10):  # a replay that does not stop fails here, not at the suite's timeout
        return [event async for event in stream]


@pytest.mark.parametrize("count", [1, 3])
async def test_replay_until_caught_up_yields_the_stored_events_then_stops(
    make_client: ClientFactory, count: int
) -> None:
    client = await make_client(queue="EVU", persist_events=True)
    ids = [(await client.enqueue(asyncjobs.Task("x"))).id for _ in range(count)]
    await _stored_events(client, count)
    before = _sids(client)
    stream = _caught_up_stream(client)
    events = await _drain(stream)
    assert [e.task_id for e in events if isinstance(e, asyncjobs.TaskStateEvent)] == ids
    assert len(events) == count
    assert stream.closed and _sids(client) == before  # ending released the subscription


async def test_replay_until_caught_up_of_one_task(make_client: ClientFactory) -> None:
    client = await make_client(queue="EVT", persist_events=True)
    first = await client.enqueue(asyncjobs.Task("x"))
    await client.enqueue(asyncjobs.Task("x"))
    await _stored_events(client, 2)
    events = await _drain(_caught_up_stream(client, first.id))
    assert [(e.task_id, e.state) for e in events if isinstance(e, asyncjobs.TaskStateEvent)] == [(first.id, "new")]
    assert len(events) == 1
    assert await _drain(_caught_up_stream(client, "never-enqueued")) == []


async def test_replay_until_caught_up_of_an_empty_stream_stops_at_once(make_client: ClientFactory) -> None:
    client = await make_client(queue="EVE", persist_events=True)
    assert await _drain(_caught_up_stream(client)) == []
    before = _sids(client)  # after nats-py's request subscription, made by the first replay
    async with iterate_events(client._nc, replay=True, until_caught_up=True, api_prefix=client._js.prefix) as events:
        assert _sids(client) == before  # nothing stored: nothing to subscribe to
        with pytest.raises(StopAsyncIteration):
            await anext(events)
    assert events.closed


async def test_replay_until_caught_up_does_not_wait_for_later_events(make_client: ClientFactory) -> None:
    client = await make_client(queue="EVL", persist_events=True)
    ids = [(await client.enqueue(asyncjobs.Task("x"))).id for _ in range(2)]
    await _stored_events(client, 2)
    stream = _caught_up_stream(client)
    first = await anext(stream)  # the replay has started
    later = await client.enqueue(asyncjobs.Task("x"))
    await _stored_events(client, 3)  # stored while the replay runs, yet after its start
    rest = await _drain(stream)
    seen = [e.task_id for e in [first, *rest] if isinstance(e, asyncjobs.TaskStateEvent)]
    assert seen == ids and later.id not in seen


async def test_replay_until_caught_up_without_stored_events_explains(make_client: ClientFactory) -> None:
    client = await make_client(queue="EVN")  # persist_events off: no events stream
    with pytest.raises(asyncjobs.JetStreamError, match="persist_events=True"):
        await _drain(_caught_up_stream(client))


@pytest.mark.parametrize(
    "make",
    [
        lambda: EventStream(None, until_caught_up=True, api_prefix="$JS.API"),  # type: ignore[arg-type]
        lambda: iterate_events(None, until_caught_up=True, api_prefix="$JS.API"),  # type: ignore[arg-type]
        lambda: EventStream(None, replay=False, until_caught_up=True, api_prefix="$JS.API"),  # type: ignore[arg-type]
    ],
)
def test_until_caught_up_needs_replay(make: Callable[[], EventStream]) -> None:
    with pytest.raises(
        asyncjobs.ConfigurationError, match=r"until_caught_up=True needs replay=True: .*pass replay=True"
    ):
        make()
