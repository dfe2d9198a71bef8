"""``Admin.tasks()``: corrupt tasks are reported, ``after_seq`` resumes a listing, every state can be filtered;
``Admin.failed_tasks()`` lists exactly the tasks in ``FAILED_STATES``."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from nats.aio.client import Client as NATS

import asyncjobs
from asyncjobs import TaskState, codec
from tests.core.conftest import ClientFactory


async def _ids(client: asyncjobs.Client, **filters: Any) -> list[str]:
    return [task.id async for task in client.admin.tasks(**filters)]


async def test_corrupt_tasks_are_skipped_with_a_warning(
    make_client: ClientFactory, nc: NATS, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client(queue="LIST")
    await client.enqueue(asyncjobs.Task("x", id="first"))
    js = nc.jetstream()
    broken = await js.publish("CHORIA_AJ.T.broken", b"{not json")
    wrong_state = await js.publish("CHORIA_AJ.T.odd", b'{"id":"odd","type":"x","state":"sleeping"}')
    await client.enqueue(asyncjobs.Task("x", id="second"))
    with caplog.at_level(logging.WARNING, logger="asyncjobs"):
        assert await _ids(client) == ["first", "second"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert f"sequence {broken.seq} of CHORIA_AJ_TASKS (subject CHORIA_AJ.T.broken)" in warnings[0]
    assert "task is not valid JSON" in warnings[0]
    assert f"sequence {wrong_state.seq} of CHORIA_AJ_TASKS (subject CHORIA_AJ.T.odd)" in warnings[1]
    assert "task state 'sleeping' is unknown" in warnings[1]


async def test_after_seq_reads_only_later_tasks(make_client: ClientFactory) -> None:
    client = await make_client(queue="PAGE")
    tasks = [await client.enqueue(asyncjobs.Task("x", id=f"t{n}")) for n in range(5)]
    ids = [task.id for task in tasks]
    assert await _ids(client) == ids
    assert await _ids(client, after_seq=0) == ids
    assert await _ids(client, after_seq=tasks[1].seq) == ids[2:]
    assert await _ids(client, after_seq=tasks[3].seq, limit=5) == ids[4:]
    assert await _ids(client, after_seq=tasks[-1].seq) == []
    assert await _ids(client, after_seq=tasks[-1].seq + 100) == []
    # Paging: resume after the last task of each page.
    pages: list[list[str]] = []
    after = 0
    while page := [task async for task in client.admin.tasks(after_seq=after, limit=2)]:
        pages.append([task.id for task in page])
        after = page[-1].seq
    assert pages == [ids[:2], ids[2:4], ids[4:]]


@pytest.mark.parametrize("after_seq", [-1, True, 1.5, "3"])
async def test_after_seq_is_checked(make_client: ClientFactory, after_seq: Any) -> None:
    client = await make_client(queue="PAGEBAD")
    with pytest.raises(asyncjobs.ConfigurationError, match="after_seq must be a stream sequence"):
        await _ids(client, after_seq=after_seq)


async def test_limit_refuses_bools(make_client: ClientFactory) -> None:
    client = await make_client(queue="LIMIT")
    with pytest.raises(asyncjobs.ConfigurationError, match="limit must be an integer of at least 1"):
        await _ids(client, limit=True)


async def test_every_state_can_be_filtered(make_client: ClientFactory, nc: NATS) -> None:
    client = await make_client(queue="STATES")
    fresh = await client.enqueue(asyncjobs.Task("x", id="fresh"))
    js = nc.jetstream()
    for state in (TaskState.QUEUE_ERROR, TaskState.UNREACHABLE, TaskState.COMPLETED):
        task = asyncjobs.Task("x", id=f"in-{state.value}")
        task.queue, task.state = "STATES", state
        await js.publish(f"CHORIA_AJ.T.{task.id}", codec.encode_task(task))
    assert await _ids(client, states=["queue_error"]) == ["in-queue_error"]
    assert await _ids(client, states=[TaskState.UNREACHABLE, "completed"]) == ["in-unreachable", "in-complete"]
    assert await _ids(client, states=["new", "queue_error"]) == [fresh.id, "in-queue_error"]


async def test_failed_tasks_lists_every_failed_state_and_no_other(make_client: ClientFactory, nc: NATS) -> None:
    client = await make_client(queue="FAILED")
    js = nc.jetstream()
    for state in TaskState:  # one stored task in each state, in the enum's order
        task = asyncjobs.Task("x", id=f"in-{state.value or 'unknown'}")
        task.queue, task.state = "FAILED", state
        await js.publish(f"CHORIA_AJ.T.{task.id}", codec.encode_task(task))
    other = asyncjobs.Task("y", id="other-queue")
    other.queue, other.state = "ELSEWHERE", TaskState.EXPIRED
    await js.publish(f"CHORIA_AJ.T.{other.id}", codec.encode_task(other))

    failed = [task async for task in client.admin.failed_tasks()]
    expected = [f"in-{s.value or 'unknown'}" for s in TaskState if s in asyncjobs.FAILED_STATES] + ["other-queue"]
    assert [task.id for task in failed] == expected
    assert {task.state for task in failed} == asyncjobs.FAILED_STATES
    assert "in-retry" not in expected  # still being tried
    assert [t.id async for t in client.admin.failed_tasks(queue="ELSEWHERE")] == ["other-queue"]
    assert [t.id async for t in client.admin.failed_tasks(task_type="y")] == ["other-queue"]
    assert [t.id async for t in client.admin.failed_tasks(limit=2)] == expected[:2]
    assert [t.id async for t in client.admin.failed_tasks(after_seq=failed[-2].seq)] == ["other-queue"]
    with pytest.raises(asyncjobs.ConfigurationError, match="limit must be an integer of at least 1"):
        await anext(client.admin.failed_tasks(limit=0))
