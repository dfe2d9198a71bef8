"""``client.events()`` releases its subscription: on ``break``, on ``aclose()`` and at the end of ``async with``."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

import asyncjobs
from asyncjobs.events import EventStream
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
