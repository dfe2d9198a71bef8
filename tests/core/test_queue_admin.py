"""client.admin: creating and changing queues and the task store in place, and reading buckets back."""

from __future__ import annotations

from typing import Any

import pytest
from nats.aio.client import Client as NATS

import asyncjobs
from tests.core.conftest import ClientFactory


async def _stream(nc: NATS, name: str) -> dict[str, Any]:
    info = await nc.jetstream().stream_info(name)
    return info.config.as_dict()


async def _consumer(nc: NATS, stream: str) -> dict[str, Any]:
    info = await nc.jetstream().consumer_info(stream, "WORKERS")
    return info.config.as_dict()


async def test_create_queue_stores_every_setting(make_client: ClientFactory, nc: NATS) -> None:
    client = await make_client()
    queue = asyncjobs.Queue(
        "EMAIL", max_run_time=600, max_tries=5, max_concurrent=20, max_age=3600, max_entries=1000, discard_old=True
    )
    info = await client.admin.create_queue(queue)
    assert (info.queue.max_run_time, info.queue.max_tries, info.queue.max_concurrent) == (600, 5, 20)
    assert (info.queue.max_age, info.queue.max_entries, info.queue.discard_old) == (3600, 1000, True)
    assert (info.items, info.bytes, info.first, info.last, info.replicas, info.memory) == (0, 0, None, None, 1, False)
    stream = await _stream(nc, "CHORIA_AJ_Q_EMAIL")
    assert (stream["max_msgs"], stream["max_age"], stream["discard"]) == (1000, 3600 * 10**9, "old")


async def test_create_queue_keeps_an_existing_queue_as_it_is(make_client: ClientFactory) -> None:
    client = await make_client()
    await client.admin.create_queue(asyncjobs.Queue("EMAIL", max_tries=5))
    info = await client.admin.create_queue(asyncjobs.Queue("EMAIL", max_tries=9))
    assert info.queue.max_tries == 5


async def test_create_queue_in_memory(make_client: ClientFactory, nc: NATS) -> None:
    client = await make_client()
    info = await client.admin.create_queue(asyncjobs.Queue("FAST"), memory=True)
    assert info.memory
    assert (await _stream(nc, "CHORIA_AJ_Q_FAST"))["storage"] == "memory"


async def test_configure_queue_changes_only_what_is_given_and_keeps_the_items(
    make_client: ClientFactory, nc: NATS
) -> None:
    client = await make_client(queue=asyncjobs.Queue("EMAIL", max_tries=5, max_concurrent=20, max_entries=100))
    await client.enqueue(asyncjobs.Task("email:new", {"to": "a"}))
    info = await client.admin.configure_queue("EMAIL", max_tries=7, max_run_time=90, max_age=7200)
    assert (info.queue.max_tries, info.queue.max_run_time, info.queue.max_age) == (7, 90, 7200)
    assert (info.queue.max_concurrent, info.queue.max_entries) == (20, 100)
    assert info.items == 1 and info.first is not None and info.last is not None
    consumer = await _consumer(nc, "CHORIA_AJ_Q_EMAIL")
    assert (consumer["max_deliver"], consumer["ack_wait"], consumer["max_ack_pending"]) == (7, 90 * 10**9, 20)
    info = await client.admin.configure_queue("EMAIL", max_entries=None, max_age=None)
    assert (info.queue.max_entries, info.queue.max_age) == (None, None)
    assert (await _stream(nc, "CHORIA_AJ_Q_EMAIL"))["max_msgs"] == -1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_concurrent": 0}, "max_concurrent"),
        ({"max_tries": 0}, "max_tries"),
        ({"max_run_time": -1}, "max_run_time"),
        ({"replicas": 6}, "replicas must be 1 to 5"),
    ],
)
async def test_configure_queue_refuses_bad_values_and_changes_nothing(
    make_client: ClientFactory, nc: NATS, changes: dict[str, Any], message: str
) -> None:
    client = await make_client(queue=asyncjobs.Queue("EMAIL", max_tries=5))
    with pytest.raises(asyncjobs.ConfigurationError, match=message):
        await client.admin.configure_queue("EMAIL", **changes)
    assert (await _consumer(nc, "CHORIA_AJ_Q_EMAIL"))["max_deliver"] == 5


async def test_configure_queue_of_a_missing_queue(make_client: ClientFactory) -> None:
    client = await make_client()
    with pytest.raises(asyncjobs.QueueNotFound):
        await client.admin.configure_queue("NOPE", max_tries=3)


async def test_configure_task_store(make_client: ClientFactory, nc: NATS) -> None:
    client = await make_client()
    await client.enqueue(asyncjobs.Task("t", None))
    info = await client.admin.configure_task_store(retention=7200)
    assert (info.retention, info.replicas, info.tasks) == (7200, 1, 1)
    assert info.first is not None and info.last is not None and info.first <= info.last
    assert (await _stream(nc, "CHORIA_AJ_TASKS"))["max_age"] == 7200 * 10**9
    info = await client.admin.configure_task_store(replicas=1)
    assert info.retention == 7200  # not given: kept
    assert (await client.admin.configure_task_store(retention=None)).retention is None
    with pytest.raises(asyncjobs.ConfigurationError, match="replicas"):
        await client.admin.configure_task_store(replicas=0)


async def test_task_store_missing_says_how_to_create_it(nats_url: str) -> None:
    async with await asyncjobs.connect(nats_url, no_storage_init=True) as client:
        with pytest.raises(asyncjobs.JetStreamError, match="ajc tasks initialize"):
            await client.admin.tasks_info()


async def test_bucket_info(make_client: ClientFactory) -> None:
    client = await make_client()
    kv = await client.admin.ensure_bucket("EXTRA", ttl=60)
    await kv.put("a", b"1")
    await kv.put("a", b"2")
    info = await client.admin.bucket_info("EXTRA")
    assert info is not None
    assert (info.bucket, info.values, info.ttl, info.replicas, info.memory) == ("EXTRA", 1, 60, 1, False)
    assert info.bytes > 0
    assert await client.admin.bucket_info("MISSING") is None
    with pytest.raises(asyncjobs.ConfigurationError):
        await client.admin.bucket_info("bad name")


async def test_create_task_store_makes_only_the_store(nats_url: str, nc: NATS) -> None:
    async with await asyncjobs.connect(nats_url, no_storage_init=True) as client:
        info = await client.admin.create_task_store(retention=3600, memory=True)
        assert (info.tasks, info.retention, info.memory, info.replicas) == (0, 3600, True, 1)
        again = await client.admin.create_task_store(retention=60)  # exists: kept as it is
        assert again.retention == 3600
        assert await client.admin.queue_names() == []
        assert await client.admin.bucket_info("CHORIA_AJ_CONFIGURATION") is not None
        with pytest.raises(asyncjobs.ConfigurationError, match="replicas"):
            await client.admin.create_task_store(replicas=7)
