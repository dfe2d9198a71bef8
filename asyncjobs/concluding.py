"""Outcomes settled off their slots: a slot is held by a handler, not by the round trips that store its outcome.

Once a handler returns, its outcome (the task's final or retry state, then the item's ack) is stored in the
background and the slot takes its next item. The task stays in the worker's ``running`` table until its outcome is
stored, so a second delivery of it is still refused meanwhile. At most ``concurrency`` outcomes settle in the
background; beyond that (the store is slow or unavailable), and while the worker stops, the slot settles its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from asyncjobs.delivery import nak

if TYPE_CHECKING:
    from asyncjobs.task import Task
    from asyncjobs.upkeep import InProcess
    from asyncjobs.worker import Worker

log = logging.getLogger("asyncjobs")


class Concluding:
    """The outcomes one worker is storing off their slots.

    Args:
        worker: the worker whose deliveries these are.
    """

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self.tasks)

    async def conclude(self, task: Task, settling: Coroutine[Any, Any, None]) -> None:
        """Settle a delivery whose handler has finished (``settling`` stores its outcome and acks its item)."""
        worker = self.worker
        entry = worker.running.get(task.id)
        if entry is None or entry.task is not task or worker.stopping or len(self.tasks) >= worker.puller.slots:
            await settling
            return
        entry.concluding = True
        concluding = asyncio.get_running_loop().create_task(self._concluding(entry, settling))
        self.tasks.add(concluding)
        concluding.add_done_callback(self._settled)

    async def finish(self, timeout_s: float) -> None:
        """While the worker stops: give the outcomes still being stored ``timeout_s``, then cut them off.

        An outcome cut off is handed back (its item at once, not after its ack wait), with a warning.
        """
        if not self.tasks:
            return
        await asyncio.wait(set(self.tasks), timeout=timeout_s)
        for concluding in self.tasks:
            concluding.cancel()

    async def _concluding(self, entry: InProcess, settling: Coroutine[Any, Any, None]) -> None:
        worker, task_id = self.worker, entry.task.id
        try:
            await settling
        except asyncio.CancelledError:
            # Cut off while stopping (the store answered too slowly): the outcome may be lost, so the item goes back
            # at once rather than after its ack wait.
            queue = worker.queue.name
            log.warning("queue %s: stopped before the outcome of task %s was stored; handing it back", queue, task_id)
            await worker.hand_back(entry.msg, nak(0))
            raise
        except Exception:
            log.exception("queue %s: unexpected error settling task %s; handing it back", worker.queue.name, task_id)
            await worker.hand_back(entry.msg)
        finally:
            if worker.running.get(task_id) is entry:
                del worker.running[task_id]
        if entry.dropped_duplicate:
            await worker.restore_item(task_id)

    def _settled(self, concluding: asyncio.Task[None]) -> None:
        self.tasks.discard(concluding)
        error = None if concluding.cancelled() else concluding.exception()
        if error is not None:
            log.error("queue %s: settling an outcome failed", self.worker.queue.name, exc_info=error)
        if not self.worker.busy and not self.tasks:
            self.worker.idle.set()
