"""The key-value helper against a real bucket, read back the way nats-py's own KV reads it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats.js.errors
import pytest

import asyncjobs
from asyncjobs.constants import CONFIG_BUCKET
from asyncjobs.kv import Deleted, Entry, KeyValue
from asyncjobs.kvwatch import KeyWatch
from asyncjobs.server import NatsServer
from tests.core.conftest import ClientFactory

WAIT_S = 10.0


async def _next(watch: KeyWatch) -> Entry | Deleted | None:
    return await asyncio.wait_for(anext(watch), WAIT_S)


async def _history_bucket(client: asyncjobs.Client, name: str = "HIST") -> KeyValue:
    """A bucket that keeps 5 values per key, so reads must pick each key's last one."""
    await client.nc.jetstream().create_key_value(bucket=name, history=5)
    return client.key_value(name)


async def test_get_put_update(make_client: ClientFactory) -> None:
    client = await make_client(queue="KV")
    kv = client.key_value(CONFIG_BUCKET)
    assert await kv.get("things.one") is None
    first = await kv.put("things.one", b"1")
    entry = await kv.get("things.one")
    assert entry is not None and (entry.value, entry.revision) == (b"1", first)
    assert entry.created.tzinfo is not None
    second = await kv.update("things.one", b"2", revision=first)
    with pytest.raises(asyncjobs.TaskConflict):
        await kv.update("things.one", b"3", revision=first)
    with pytest.raises(asyncjobs.TaskConflict):
        await kv.update("things.one", b"3", revision=0)
    assert await kv.update("things.two", b"new", revision=0) > second
    # nats-py's KV sees the same entries; its delete marker reads as "no value" here.
    native = await client.nc.jetstream().key_value(CONFIG_BUCKET)
    assert (await native.get("things.one")).value == b"2"
    await native.delete("things.two")
    assert await kv.get("things.two") is None


async def test_create_only_where_there_is_no_value(make_client: ClientFactory) -> None:
    client = await make_client(queue="KV")
    kv = client.key_value(CONFIG_BUCKET)
    native = await client.nc.jetstream().key_value(CONFIG_BUCKET)
    first = await kv.create("a", b"1")
    with pytest.raises(asyncjobs.TaskConflict):
        await kv.create("a", b"2")
    # Over our delete marker, nats-py's delete and nats-py's purge, as nats.go's Create does.
    await kv.delete("a")
    assert await kv.create("a", b"3") > first
    await native.delete("a")
    await kv.create("a", b"4")
    await native.purge("a")
    revision = await kv.create("a", b"5")
    entry = await kv.get("a")
    assert entry is not None and (entry.value, entry.revision) == (b"5", revision)
    assert (await native.get("a")).value == b"5"


async def test_delete_at_a_revision(make_client: ClientFactory) -> None:
    client = await make_client(queue="KV")
    kv = client.key_value(CONFIG_BUCKET)
    old = await kv.put("lock", b"me")
    new = await kv.put("lock", b"someone else")
    with pytest.raises(asyncjobs.TaskConflict):
        await kv.delete("lock", revision=old)
    assert (await kv.get("lock")) is not None
    marker = await kv.delete("lock", revision=new)
    assert marker > new and await kv.get("lock") is None
    # nats-py reads our marker as a deleted key.
    native = await client.nc.jetstream().key_value(CONFIG_BUCKET)
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await native.get("lock")


async def test_entries_read_each_keys_last_value_under_a_prefix(make_client: ClientFactory) -> None:
    client = await make_client(queue="KV")
    kv = await _history_bucket(client)
    assert await kv.entries() == []
    for n in range(4):
        await kv.put("s.one", b"one %d" % n)
        await kv.put("s.two", b"two %d" % n)
    await kv.put("s.gone", b"x")
    await kv.delete("s.gone")
    await kv.put("other", b"o")
    found = await kv.entries("s.>")
    assert [(e.key, e.value) for e in found] == [("s.one", b"one 3"), ("s.two", b"two 3")]
    assert [e.key for e in await kv.entries()] == ["s.one", "s.two", "other"]
    assert [e.key for e in await kv.entries("other")] == ["other"]
    with pytest.raises(asyncjobs.ConfigurationError, match="invalid key pattern"):
        await kv.entries("s.>.x")


async def test_watch_yields_current_values_a_marker_then_changes(make_client: ClientFactory) -> None:
    client = await make_client(queue="KV")
    kv = await _history_bucket(client)
    await kv.put("s.a", b"old")
    await kv.put("s.a", b"1")
    await kv.put("s.b", b"2")
    await kv.put("s.deleted", b"x")
    await kv.delete("s.deleted")
    async with kv.watch("s.>") as watch:
        initial = [await _next(watch), await _next(watch)]
        assert [(e.key, e.value) for e in initial if isinstance(e, Entry)] == [("s.a", b"1"), ("s.b", b"2")]
        assert await _next(watch) is None
        await kv.put("elsewhere", b"not watched")
        revision = await kv.put("s.c", b"3")
        change = await _next(watch)
        assert isinstance(change, Entry) and (change.key, change.value, change.revision) == ("s.c", b"3", revision)
        marker = await kv.delete("s.a")
        deleted = await _next(watch)
        assert isinstance(deleted, Deleted) and (deleted.key, deleted.revision) == ("s.a", marker)
    assert watch.restarts == 0
    with pytest.raises(StopAsyncIteration):
        await anext(watch)


async def test_watch_of_an_empty_bucket_starts_with_the_marker(make_client: ClientFactory) -> None:
    client = await make_client(queue="KV")
    kv = await _history_bucket(client)
    async with kv.watch() as watch:
        assert await _next(watch) is None
        await kv.put("k", b"v")
        item = await _next(watch)
        assert isinstance(item, Entry) and item.key == "k"


async def test_watch_of_a_missing_bucket_fails(make_client: ClientFactory) -> None:
    client = await make_client(queue="KV")
    with pytest.raises(asyncjobs.JetStreamError):
        async with client.key_value("NO_SUCH_BUCKET").watch():
            pass


@pytest.fixture
async def restartable() -> AsyncIterator[NatsServer]:
    async with NatsServer() as server:
        yield server


@pytest.mark.slow
async def test_watch_survives_a_server_restart(restartable: NatsServer) -> None:
    async with await asyncjobs.connect(restartable.url, queue="KV", retry_window=30) as client:
        kv = await _history_bucket(client)
        await kv.put("k", b"before")
        async with kv.watch(heartbeat_s=0.5) as watch:
            assert isinstance(await _next(watch), Entry)
            assert await _next(watch) is None
            await restartable.restart()
            revision = await kv.put("k", b"after")
            item = await asyncio.wait_for(anext(watch), 30)
            assert isinstance(item, Entry) and (item.value, item.revision) == (b"after", revision)
            await kv.delete("k")
            assert isinstance(await asyncio.wait_for(anext(watch), 30), Deleted)
