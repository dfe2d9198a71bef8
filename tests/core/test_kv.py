"""The key-value helper against a real bucket, read back the way nats-py's own KV reads it."""

from __future__ import annotations

import pytest

import asyncjobs
from asyncjobs.constants import CONFIG_BUCKET
from asyncjobs.kv import KeyValue
from tests.core.conftest import ClientFactory


async def test_get_put_update(make_client: ClientFactory) -> None:
    client = await make_client(queue="KV")
    kv = KeyValue(client._storage.js, CONFIG_BUCKET)
    assert await kv.get("things.one") is None
    first = await kv.put("things.one", b"1")
    entry = await kv.get("things.one")
    assert entry is not None and (entry.value, entry.revision) == (b"1", first)
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
