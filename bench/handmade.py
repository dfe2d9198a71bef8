"""The hand-made cycle: the per-task JetStream operations of asyncjobs, written directly.

The operations are those of docs/protocol.md, sections Enqueue to Processing an item.

Same streams and consumer as the library (created by ``asyncjobs.connect``), same concurrency, plain nats-py and
orjson dicts. It is what the library's processing rate is judged against: the cost of the protocol itself in
Python, without the library's abstractions.

Per task the cycle is: pull one item (batch 1, explicit ack), ``STREAM.MSG.GET`` the task by ``last_by_subj``,
publish it ``active`` with ``Nats-Expected-Last-Subject-Sequence``, publish the event, run a no-op, publish it
``complete`` with the expected sequence, publish the event, ``+ACK`` the item.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

import asyncjobs
from asyncjobs.constants import (
    ACK,
    EVENT_TASK_STATE,
    HDR_EXPECTED_LAST_SUBJECT_SEQ,
    HDR_MSG_ID,
    HDR_STATUS,
    JS_API_PREFIX,
    QUEUE_CONSUMER,
    QUEUE_STREAM_PREFIX,
    QUEUE_SUBJECT_PREFIX,
    TASK_EVENT_PREFIX,
    TASK_SUBJECT_PREFIX,
    TASKS_STREAM,
)
from bench.common import (
    CONCURRENCY,
    PIPELINE_WINDOW,
    QUEUE,
    REQUEST_TIMEOUT_S,
    TASK_TYPE,
    Results,
    Settings,
    connect,
    rate,
    wait_until,
)
from bench.raw import check_ack

log = logging.getLogger("bench")

QUEUE_STREAM: Final = QUEUE_STREAM_PREFIX + QUEUE
ITEM_PREFIX: Final = f"{QUEUE_SUBJECT_PREFIX}{QUEUE}."
NEXT_SUBJECT: Final = f"{JS_API_PREFIX}.CONSUMER.MSG.NEXT.{QUEUE_STREAM}.{QUEUE_CONSUMER}"
GET_SUBJECT: Final = f"{JS_API_PREFIX}.STREAM.MSG.GET.{TASKS_STREAM}"
PULL_BODY: Final = orjson.dumps({"batch": 1, "expires": 30_000_000_000})


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _event(task: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "event_id": os.urandom(10).hex(),
            "type": EVENT_TASK_STATE,
            "timestamp": _now(),
            "task_id": task["id"],
            "state": task["state"],
            "tries": task["tries"],
            "queue": QUEUE,
            "task_type": task["type"],
        }
    )


async def _save(nc: NATS, task: dict[str, Any], seq: int) -> int:
    reply = await nc.request(
        TASK_SUBJECT_PREFIX + task["id"],
        orjson.dumps(task),
        timeout=REQUEST_TIMEOUT_S,
        headers={HDR_EXPECTED_LAST_SUBJECT_SEQ: str(seq)},
    )
    ack = orjson.loads(reply.data)
    if "error" in ack:
        raise RuntimeError(f"saving task {task['id']} failed: {ack['error']}")
    return int(ack["seq"])


def _new_task(i: int) -> dict[str, Any]:
    return {
        "id": os.urandom(10).hex(),
        "type": TASK_TYPE,
        "queue": QUEUE,
        "payload": base64.b64encode(orjson.dumps({"i": i})).decode(),
        "max_tries": 10,
        "state": "new",
        "created": _now(),
        "tries": 0,
    }


async def _publish_item(nc: NATS, task_id: str) -> None:
    body = orjson.dumps({"kind": 0, "job": task_id})
    reply = await nc.request(ITEM_PREFIX + task_id, body, timeout=REQUEST_TIMEOUT_S, headers={HDR_MSG_ID: task_id})
    check_ack(reply.data, "publishing a work item")


async def enqueue_sequential(nc: NATS, count: int) -> None:
    """Enqueue ``count`` tasks one after the other as docs/protocol.md, Enqueue says: the save, awaited; the event;
    the item, awaited. What one ``client.enqueue`` at a time does, with nats-py requests and orjson dicts."""
    for i in range(count):
        task = _new_task(i)
        await _save(nc, task, 0)
        await nc.publish(TASK_EVENT_PREFIX + task["id"], _event(task))
        await _publish_item(nc, task["id"])


async def enqueue_many(nc: NATS, count: int) -> list[str]:
    """Enqueue ``count`` tasks as docs/protocol.md, Enqueue says (save, event, item), pipelined like ``enqueue_many``:
    saves of a chunk, then its items; return the task ids."""
    ids: list[str] = []
    for start in range(0, count, PIPELINE_WINDOW):
        chunk = [_new_task(i) for i in range(start, min(count, start + PIPELINE_WINDOW))]

        async def save(task: dict[str, Any]) -> None:
            await _save(nc, task, 0)
            await nc.publish(TASK_EVENT_PREFIX + task["id"], _event(task))

        await asyncio.gather(*(save(t) for t in chunk))
        await asyncio.gather(*(_publish_item(nc, t["id"]) for t in chunk))
        ids.extend(t["id"] for t in chunk)
    return ids


async def _noop(task: dict[str, Any]) -> Any:
    return None


class Cycle:
    """Processes exactly ``count`` items with ``CONCURRENCY`` slots, each pulling one item at a time."""

    def __init__(self, nc: NATS, count: int) -> None:
        self.nc = nc
        self.count = count
        self.claimed = 0
        self.inbox = nc.new_inbox()
        self.deliveries: asyncio.Queue[Msg] = asyncio.Queue()

    async def _on_message(self, msg: Msg) -> None:
        self.deliveries.put_nowait(msg)

    async def run(self) -> None:
        sub = await self.nc.subscribe(self.inbox, cb=self._on_message)
        try:
            await asyncio.gather(*(self._slot() for _ in range(CONCURRENCY)))
            await self.nc.flush()
        finally:
            await sub.unsubscribe()

    async def _pull(self) -> Msg:
        while True:
            await self.nc.publish(NEXT_SUBJECT, PULL_BODY, reply=self.inbox)
            msg = await self.deliveries.get()
            if msg.data and not (msg.headers and HDR_STATUS in msg.headers):
                return msg
            # A status reply (pull expired): ask again.

    async def _slot(self) -> None:
        nc = self.nc
        while self.claimed < self.count:
            self.claimed += 1
            msg = await self._pull()
            task_id = orjson.loads(msg.data)["job"]
            reply = await nc.request(
                GET_SUBJECT,
                b'{"last_by_subj":"' + (TASK_SUBJECT_PREFIX + task_id).encode() + b'"}',
                timeout=REQUEST_TIMEOUT_S,
            )
            stored = orjson.loads(reply.data)["message"]
            task = orjson.loads(base64.b64decode(stored["data"]))
            task["state"] = "active"
            task["tried"] = _now()
            seq = await _save(nc, task, int(stored["seq"]))
            await nc.publish(TASK_EVENT_PREFIX + task_id, _event(task))
            task["tries"] += 1
            value = await _noop(task)
            now = _now()
            task["state"] = "complete"
            task["tried"] = now
            task["result"] = {"payload": value, "completed": now}
            await _save(nc, task, seq)
            await nc.publish(TASK_EVENT_PREFIX + task_id, _event(task))
            await nc.publish(msg.reply, ACK)


async def _queue_items(nc: NATS) -> int:
    reply = await nc.request(f"{JS_API_PREFIX}.STREAM.INFO.{QUEUE_STREAM}", b"", timeout=REQUEST_TIMEOUT_S)
    return int(orjson.loads(reply.data)["state"]["messages"])


async def _check_complete(nc: NATS, ids: list[str]) -> None:
    """Spot-check that the run did the work: one stored task per id, the first, middle and last ones complete."""
    reply = await nc.request(f"{JS_API_PREFIX}.STREAM.INFO.{TASKS_STREAM}", b"", timeout=REQUEST_TIMEOUT_S)
    stored = int(orjson.loads(reply.data)["state"]["messages"])
    if stored != len(ids):
        raise RuntimeError(f"hand-made cycle: {stored} tasks stored, expected {len(ids)}")
    for task_id in (ids[0], ids[len(ids) // 2], ids[-1]):
        body = b'{"last_by_subj":"' + (TASK_SUBJECT_PREFIX + task_id).encode() + b'"}'
        reply = await nc.request(GET_SUBJECT, body, timeout=REQUEST_TIMEOUT_S)
        task = orjson.loads(base64.b64decode(orjson.loads(reply.data)["message"]["data"]))
        if task["state"] != "complete":
            raise RuntimeError(f"hand-made cycle: task {task_id} is {task['state']!r}, expected 'complete'")


async def _purge_tasks(nc: NATS) -> None:
    reply = await nc.request(f"{JS_API_PREFIX}.STREAM.PURGE.{TASKS_STREAM}", b"", timeout=REQUEST_TIMEOUT_S)
    check_ack(reply.data, "purging the task store")


async def _process(url: str, count: int, timeout_s: float) -> tuple[float, float]:
    """Process ``count`` items on a worker connection of its own.

    Returns:
        The wall seconds until the queue is empty, and the CPU seconds this process used meanwhile.
    """
    nc = await connect(url)
    try:

        async def drained() -> bool:
            return await _queue_items(nc) == 0

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.wait_for(Cycle(nc, count).run(), timeout_s)
        await wait_until(drained, "an empty BENCH queue", timeout_s)
        return time.perf_counter() - started, time.process_time() - cpu
    finally:
        await nc.close()


async def bench_handmade(url: str, settings: Settings, results: Results) -> None:
    """Hand-made enqueue (pipelined, then one at a time) and the hand-made cycle, on the streams the library
    creates."""
    client = await asyncjobs.connect(url, queue=QUEUE)
    await client.close()
    nc = await connect(url)
    timeout_s = settings.scenario_timeout_s
    try:
        await enqueue_many(nc, settings.warmup)
        await _process(url, settings.warmup, timeout_s)
        await _purge_tasks(nc)
        started = time.perf_counter()
        ids = await asyncio.wait_for(enqueue_many(nc, settings.tasks), timeout_s)
        enqueued = rate(settings.tasks, time.perf_counter() - started)
        elapsed, cpu = await _process(url, settings.tasks, timeout_s)
        processed, cpu_us = rate(settings.tasks, elapsed), cpu / settings.tasks * 1e6
        await _check_complete(nc, ids)
        started = time.perf_counter()
        await asyncio.wait_for(enqueue_sequential(nc, settings.sequential_tasks), timeout_s)
        sequential = rate(settings.sequential_tasks, time.perf_counter() - started)
        log.info(
            "hand-made: enqueue %.0f tasks/s (one at a time %.0f), cycle %.0f tasks/s, %.0f us CPU/task",
            enqueued,
            sequential,
            processed,
            cpu_us,
        )
        results.add("hand_enqueue", "hand-made enqueue (pipelined), tasks/s", "tasks/s", enqueued)
        results.add("hand_enqueue_seq", "hand-made enqueue (sequential), tasks/s", "tasks/s", sequential)
        results.add("hand_cycle", f"hand-made cycle ({CONCURRENCY} slots), tasks/s", "tasks/s", processed)
        results.add("hand_cpu", "hand-made cycle, client CPU per task, us", "us", cpu_us, higher_is_better=False)
    finally:
        await nc.close()
