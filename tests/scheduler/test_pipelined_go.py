"""Go's worker beside a pipelined enqueue: the ``AJ-Pipelined`` header on an item changes nothing for it.

Lives beside the other Go-peer tests for their ``go_peer`` fixture; skips when the binaries are absent.
"""

from __future__ import annotations

from pathlib import Path

import asyncjobs
from asyncjobs import TaskState
from asyncjobs.constants import HDR_AJ_PIPELINED
from asyncjobs.testing import eventually
from tests.scheduler.go_peer import ajgo

QUEUE = "PIPEGO"


async def test_go_runs_pipelined_items_like_any_other(go_peer: Path, nats_url: str) -> None:
    async with await asyncjobs.connect(nats_url, queue=QUEUE, pipeline_enqueue=True) as client:
        tasks = [await client.enqueue(asyncjobs.Task("pipe:go", {"n": n})) for n in range(5)]
        subject = client.queue.subject_prefix + tasks[0].id
        stored = await client.nc.jetstream().get_last_msg(client.queue.stream, subject)
        assert stored.headers is not None and stored.headers.get(HDR_AJ_PIPELINED) == "1"
        calls = await ajgo(go_peer, nats_url, "work", "--queue", QUEUE, "--bind", "--count", str(len(tasks)))
        handled = {call["id"] for call in calls if call.get("event") == "handled"}
        assert handled == {task.id for task in tasks}

        async def all_complete() -> bool:
            states = [(await client.get_task(task.id)).state for task in tasks]
            return all(state == TaskState.COMPLETED for state in states)

        await eventually(all_complete, message="Go completed every pipelined task")
        assert (await client.admin.queue_info(QUEUE)).items == 0
