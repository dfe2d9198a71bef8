"""Building blocks for extensions: the durable event feed (``EventFeed``), ``admin.ensure_events_stream``,
``admin.ensure_bucket`` and pulling without poll metrics (docs/concepts.md, Durable event feeds; docs/protocol.md,
Event feed consumers)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

import asyncjobs
from asyncjobs.eventfeed import MAX_ACK_PENDING, _metadata
from asyncjobs.metrics import METRICS
from asyncjobs.puller import Puller
from asyncjobs.testing import eventually
from tests.core.conftest import ClientFactory

READ_TIMEOUT_S = 10.0
STORED_AT = datetime(2026, 7, 22, 9, 0, 0, 123456, tzinfo=UTC)
STORED_AT_NS = 1_784_710_800_123_456_000


async def _next(feed: asyncjobs.EventFeed, timeout: float = READ_TIMEOUT_S) -> asyncjobs.FeedItem:
    async with asyncio.timeout(timeout):
        return await anext(feed)


def _state_event(item: asyncjobs.FeedItem) -> asyncjobs.TaskStateEvent:
    assert isinstance(item.event, asyncjobs.TaskStateEvent), item
    return item.event


async def _api(client: asyncjobs.Client, subject: str) -> dict[str, Any]:
    reply = await client.nc.request(f"$JS.API.{subject}", b"", timeout=READ_TIMEOUT_S)
    answer: dict[str, Any] = orjson.loads(reply.data)
    assert "error" not in answer, answer
    return answer


@contextlib.asynccontextmanager
async def _feed(client: asyncjobs.Client, name: str, **options: Any) -> AsyncIterator[asyncjobs.EventFeed]:
    async with asyncjobs.EventFeed(client, name, **options) as feed:
        yield feed


# ---- the consumer -----------------------------------------------------------------------------------------------


async def test_ensure_creates_the_stream_and_the_durable_consumer(make_client: ClientFactory) -> None:
    client = await make_client()
    feed = asyncjobs.EventFeed(client, "BILLING", ack_wait=5)
    await feed.ensure()
    await feed.ensure()  # idempotent
    stream = await _api(client, "STREAM.INFO.CHORIA_AJ_EVENTS")
    assert stream["config"]["subjects"] == ["CHORIA_AJ.E.>"]
    consumer = await _api(client, "CONSUMER.INFO.CHORIA_AJ_EVENTS.BILLING")
    config = consumer["config"]
    assert config["durable_name"] == "BILLING"
    assert config["filter_subject"] == "CHORIA_AJ.E.task_state.*"
    assert (config["deliver_policy"], config["ack_policy"]) == ("new", "explicit")
    assert config["ack_wait"] == 5_000_000_000
    assert config["max_deliver"] == -1
    assert config["max_ack_pending"] == MAX_ACK_PENDING == 20_000
    assert feed.consumer_config()["filter_subject"] == config["filter_subject"]
    # Another reader of the same name finds the consumer and uses it as it is.
    await asyncjobs.EventFeed(client, "BILLING", ack_wait=60).ensure()
    again = await _api(client, "CONSUMER.INFO.CHORIA_AJ_EVENTS.BILLING")
    assert again["config"]["ack_wait"] == 5_000_000_000


async def test_events_from_ensure_on_are_delivered_and_earlier_ones_are_not(make_client: ClientFactory) -> None:
    client = await make_client(persist_events=True)
    before = await client.enqueue(asyncjobs.Task("early"))
    feed = asyncjobs.EventFeed(client, "LATE")
    await feed.ensure()
    after = await client.enqueue(asyncjobs.Task("late"))
    async with feed:
        item = await _next(feed)
        event = _state_event(item)
        assert (event.task_id, event.state, event.task_type) == (after.id, asyncjobs.TaskState.NEW, "late")
        assert item.subject == f"CHORIA_AJ.E.task_state.{after.id}"
        assert item.delivered == 1
        item.ack()
        item.ack()  # a second answer is ignored
    assert before.id != after.id


async def test_readers_of_one_name_share_the_events(make_client: ClientFactory) -> None:
    first_client, second_client = await make_client(), await make_client()
    feeds = [
        asyncjobs.EventFeed(first_client, "SHARED", slots=4),
        asyncjobs.EventFeed(second_client, "SHARED", slots=4),
    ]
    for feed in feeds:
        await feed.ensure()
    tasks = await first_client.enqueue_many([asyncjobs.Task("shared", {"n": n}) for n in range(50)])
    wanted = {task.id for task in tasks}
    seen: list[list[str]] = [[], []]
    all_seen = asyncio.Event()

    async def read(feed: asyncjobs.EventFeed, into: list[str]) -> None:
        async for item in feed:
            into.append(_state_event(item).task_id)
            item.ack()
            if len(seen[0]) + len(seen[1]) >= len(wanted):
                all_seen.set()

    readers = [asyncio.create_task(read(feed, into)) for feed, into in zip(feeds, seen, strict=True)]
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            await all_seen.wait()
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for feed in feeds:
            await feed.aclose()
    assert set(seen[0]) | set(seen[1]) == wanted
    assert set(seen[0]) & set(seen[1]) == set()
    assert len(seen[0]) + len(seen[1]) == len(wanted)


async def test_an_event_not_acked_comes_again_after_ack_wait(make_client: ClientFactory) -> None:
    client = await make_client()
    async with _feed(client, "SLOW", ack_wait=1) as feed:
        task = await client.enqueue(asyncjobs.Task("slow"))
        first = await _next(feed)
        second = await _next(feed)  # the first is not acked: the server sends it again after a second
        assert _state_event(second).task_id == _state_event(first).task_id == task.id
        assert (first.delivered, second.delivered) == (1, 2)
        assert second.stored_at == first.stored_at
        second.ack()
        first.ack()  # its slot goes back too


@pytest.mark.parametrize("delay", [None, 0.2])
async def test_nak_delivers_again(make_client: ClientFactory, delay: float | None) -> None:
    client = await make_client()
    async with _feed(client, "RETRY") as feed:
        task = await client.enqueue(asyncjobs.Task("retry"))
        first = await _next(feed)
        first.nak(delay)
        second = await _next(feed)
        assert _state_event(second).task_id == task.id
        assert second.delivered == 2
        second.ack()


async def test_events_wait_for_a_reader_that_starts_later(make_client: ClientFactory) -> None:
    producer, reader = await make_client(), await make_client()
    await asyncjobs.EventFeed(producer, "DURABLE").ensure()
    first = await producer.enqueue(asyncjobs.Task("waiting"))
    async with _feed(reader, "DURABLE") as feed:
        item = await _next(feed)
        assert _state_event(item).task_id == first.id
        item.ack()
    second = await producer.enqueue(asyncjobs.Task("waiting"))
    async with _feed(reader, "DURABLE") as feed:
        item = await _next(feed)
        assert _state_event(item).task_id == second.id
        item.ack()


async def test_stored_at_is_aware_utc_and_recent(make_client: ClientFactory) -> None:
    client = await make_client()
    async with _feed(client, "CLOCK") as feed:
        await client.enqueue(asyncjobs.Task("clock"))
        item = await _next(feed)
        item.ack()
    assert item.stored_at.tzinfo is not None and item.stored_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - item.stored_at) < timedelta(seconds=10)


async def test_a_message_that_is_not_an_event_is_handed_out_without_one(make_client: ClientFactory) -> None:
    client = await make_client()
    async with _feed(client, "JUNK") as feed:
        await client.nc.publish("CHORIA_AJ.E.task_state.junk", b"not an event")
        item = await _next(feed)
        assert item.event is None
        assert item.subject == "CHORIA_AJ.E.task_state.junk"
        item.ack()
        task = await client.enqueue(asyncjobs.Task("after"))
        item = await _next(feed)
        assert _state_event(item).task_id == task.id
        item.ack()


async def test_async_with_stops_pulling_and_releases_the_subscription(make_client: ClientFactory) -> None:
    client = await make_client()
    feed = asyncjobs.EventFeed(client, "TIDY")
    await feed.ensure()  # its requests create nats-py's shared response subscription, which stays
    before = set(client.nc._subs)
    async with feed:
        await eventually(lambda: set(client.nc._subs) - before, message="the feed's inbox subscription")
        await client.enqueue(asyncjobs.Task("tidy"))
        (await _next(feed)).ack()
    assert set(client.nc._subs) == before
    await feed.aclose()  # idempotent
    assert METRICS.poll_total.value("feed TIDY") == 0  # a feed's pulls are not a queue's polls


async def test_a_closed_client_ends_the_iteration_with_an_error(make_client: ClientFactory) -> None:
    client = await make_client()
    feed = asyncjobs.EventFeed(client, "CLOSING")
    await feed.start()
    reader = asyncio.create_task(_next(feed))
    await eventually(lambda: feed._puller is not None and feed._puller.sub is not None, message="the feed pulling")
    await client.close()
    with pytest.raises(asyncjobs.ClientClosedError, match="NATS connection was closed"):
        await reader
    # Iterating again says so again, rather than hanging or raising a NATS error.
    with pytest.raises(asyncjobs.ClientClosedError, match="the client is closed"):
        await _next(feed)
    await feed.aclose()


async def test_an_item_handed_over_as_the_reader_is_cancelled_is_kept(make_client: ClientFactory) -> None:
    client = await make_client()
    async with _feed(client, "RACE") as feed:
        reader = asyncio.create_task(anext(feed))
        await eventually(lambda: feed._ready._getters)  # the reader waits for an item
        item = asyncjobs.FeedItem(None, "CHORIA_AJ.E.task_state.x", STORED_AT, 1, cast(Msg, None))
        # In one step: an item arrives and the reader is cancelled (a timeout around anext(), say).
        feed._ready.put_nowait(item)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        assert await _next(feed) is item


# ---- options ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"name": ""}, "event feed name"),
        ({"name": "a.b"}, "event feed name"),
        ({"name": "a b"}, "event feed name"),
        ({"name": "a*"}, "event feed name"),
        ({"name": "x" * 65}, "event feed name is 65 characters"),
        ({"name": "a:b"}, "may not contain ':'"),
        ({"slots": 0}, "slots must be"),
        ({"slots": -1}, "slots must be"),
        ({"slots": True}, "slots must be"),
        ({"slots": 1.5}, "slots must be"),
        ({"ack_wait": 0}, "ack_wait must be"),
        ({"ack_wait": 0.5}, "ack_wait must be"),
        ({"ack_wait": -1}, "ack_wait must be"),
        ({"ack_wait": True}, "ack_wait must be"),
        ({"ack_wait": "30"}, "ack_wait must be"),
        ({"ack_wait": float("nan")}, "ack_wait must be"),
    ],
)
def test_invalid_options_are_refused_at_once(options: dict[str, Any], match: str) -> None:
    name = options.pop("name", "FEED")
    client = cast(asyncjobs.Client, object())  # the constructor does no I/O
    with pytest.raises(asyncjobs.ConfigurationError, match=match):
        asyncjobs.EventFeed(client, name, **options)


def test_valid_options() -> None:
    client = cast(asyncjobs.Client, object())
    feed = asyncjobs.EventFeed(client, "a-Z_9" + "x" * 59, slots=1, ack_wait=1)
    assert feed.name == "a-Z_9" + "x" * 59
    assert feed.consumer_config()["ack_wait"] == 1_000_000_000


# ---- reply subjects ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (f"$JS.ACK.CHORIA_AJ_EVENTS.BILLING.1.17.5.{STORED_AT_NS}.0", (STORED_AT, 1)),
        (f"$JS.ACK.CHORIA_AJ_EVENTS.BILLING.3.17.9.{STORED_AT_NS}.12", (STORED_AT, 3)),
        (f"$JS.ACK.hub.ACCHASH.CHORIA_AJ_EVENTS.BILLING.2.17.5.{STORED_AT_NS}.0.r4nd0m", (STORED_AT, 2)),
        (f"$JS.ACK._.ACCHASH.CHORIA_AJ_EVENTS.BILLING.7.17.5.{STORED_AT_NS}.0.r4nd0m.extra", (STORED_AT, 7)),
    ],
)
def test_metadata_from_reply_subjects(reply: str, expected: tuple[datetime, int]) -> None:
    assert _metadata(reply) == expected


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "_INBOX.abc",
        "$JS.ACK.CHORIA_AJ_EVENTS.BILLING.x.17.5.ts.0",
        "$JS.ACK.CHORIA_AJ_EVENTS.BILLING.1.17",
        # The 11-token form (domain form without its random token) is read as delivery_count() reads it: not at all.
        f"$JS.ACK.hub.ACCHASH.CHORIA_AJ_EVENTS.BILLING.2.17.5.{STORED_AT_NS}.0",
    ],
)
def test_metadata_falls_back_to_now_and_a_first_delivery(reply: str) -> None:
    stored_at, delivered = _metadata(reply)
    assert delivered == 1
    assert abs(datetime.now(UTC) - stored_at) < timedelta(seconds=10)


# ---- admin ------------------------------------------------------------------------------------------------------


async def test_ensure_events_stream(make_client: ClientFactory) -> None:
    client = await make_client(events_retention=3600)
    await client.admin.ensure_events_stream()
    await client.admin.ensure_events_stream()
    config = (await _api(client, "STREAM.INFO.CHORIA_AJ_EVENTS"))["config"]
    assert config["subjects"] == ["CHORIA_AJ.E.>"]
    assert config["max_age"] == 3600 * 1_000_000_000
    assert (config["retention"], config["discard"]) == ("limits", "old")


async def test_ensure_bucket_lays_out_a_nats_kv_bucket(make_client: ClientFactory) -> None:
    client = await make_client()
    kv = await client.admin.ensure_bucket("WF_RUNS", description="workflow runs")
    config = (await _api(client, "STREAM.INFO.KV_WF_RUNS"))["config"]
    assert config["subjects"] == ["$KV.WF_RUNS.>"]
    assert config["description"] == "workflow runs"
    assert config["max_msgs_per_subject"] == 1
    assert (config["allow_rollup_hdrs"], config["deny_delete"], config["allow_direct"]) == (True, True, True)
    assert (config["discard"], config["retention"], config["max_age"]) == ("new", "limits", 0)
    revision = await kv.put("run.1", b"hello")
    entry = await kv.get("run.1")
    assert entry is not None and (entry.value, entry.revision) == (b"hello", revision)
    assert (await client.key_value("WF_RUNS").get("run.1")) is not None


@pytest.mark.parametrize(("ttl", "max_age_ns"), [(300.0, 300_000_000_000), (timedelta(seconds=30), 30_000_000_000)])
async def test_ensure_bucket_ttl(make_client: ClientFactory, ttl: float | timedelta, max_age_ns: int) -> None:
    client = await make_client()
    await client.admin.ensure_bucket("TTL", ttl=ttl)
    config = (await _api(client, "STREAM.INFO.KV_TTL"))["config"]
    assert config["max_age"] == max_age_ns
    assert config["duplicate_window"] == min(max_age_ns, 120_000_000_000)


async def test_ensure_bucket_uses_an_existing_bucket_as_it_is(make_client: ClientFactory) -> None:
    client = await make_client()
    first = await client.admin.ensure_bucket("KEEP")
    await first.put("k", b"v1")
    again = await client.admin.ensure_bucket("KEEP", description="other", ttl=60)
    config = (await _api(client, "STREAM.INFO.KV_KEEP"))["config"]
    assert (config["max_age"], config.get("description", "")) == (0, "")
    entry = await again.get("k")
    assert entry is not None and entry.value == b"v1"


@pytest.mark.parametrize(
    ("bucket", "ttl", "error"),
    [
        ("", None, asyncjobs.InvalidNameError),
        ("a.b", None, asyncjobs.InvalidNameError),
        ("a b", None, asyncjobs.InvalidNameError),
        ("a>", None, asyncjobs.InvalidNameError),
        ("a:b", None, asyncjobs.ConfigurationError),  # the name rule allows ':', bucket names do not
        ("OK", -1.0, asyncjobs.ConfigurationError),
    ],
)
async def test_ensure_bucket_refuses_invalid_settings(
    make_client: ClientFactory, bucket: str, ttl: float | None, error: type[Exception]
) -> None:
    client = await make_client()
    with pytest.raises(error):
        await client.admin.ensure_bucket(bucket, ttl=ttl)
    assert issubclass(asyncjobs.InvalidNameError, asyncjobs.ConfigurationError)


# ---- pulling ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count_polls", [True, False])
async def test_count_polls(nc: NATS, count_polls: bool) -> None:
    label = f"PULLER_{count_polls}"
    delivered: list[Msg] = []
    puller = Puller(nc, "PULLS.NOWHERE", label, slots=2, deliver=delivered.append, count_polls=count_polls)
    running = asyncio.create_task(puller.run())
    try:
        await eventually(lambda: puller.outstanding > 0, message="a pull request")
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    assert (METRICS.poll_total.value(label) > 0) is count_polls
    assert delivered == []
