"""The worker's upkeep beside processing items: keeping items it is still at, noticing a blocked event loop, and
telling when the queue is idle (``run(until_idle=True)``)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from nats.aio.msg import Msg

from asyncjobs.constants import QUEUE_CONSUMER, WPI
from asyncjobs.errors import AsyncJobsError
from asyncjobs.task import Task
from asyncjobs.wiretime import NS_PER_SECOND

if TYPE_CHECKING:
    from asyncjobs.worker import Worker

log = logging.getLogger("asyncjobs")

IDLE_CHECK_INTERVAL_S: Final = 0.2
LOOP_LAG_CHECK_S: Final = 1.0
LOOP_LAG_WARN_S: Final = 1.0


@dataclass(slots=True)
class InProcess:
    """A delivery the worker is processing."""

    task: Task
    msg: Msg
    since: float
    """Monotonic time its processing started (the task set active) or of the last ``+WPI`` sent for it."""
    dropped_duplicate: bool = False
    """A second delivery of the task arrived meanwhile and was dropped."""
    concluding: bool = False
    """Its handler has finished and its outcome is being settled off its slot (:meth:`Worker.conclude`)."""


class Upkeep:
    """Background duties of one worker; each coroutine runs until cancelled (``wait_idle`` until the queue idles).

    Args:
        worker: the worker.
    """

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._beats: set[asyncio.Task[None]] = set()

    async def wait_idle(self) -> None:
        """Return once nothing is waiting, in flight or due for a retry in the queue (``run(until_idle=True)``)."""
        what = f"checking whether queue {self.worker.queue.name!r} is idle"
        subject = f"CONSUMER.INFO.{self.worker.queue.stream}.{QUEUE_CONSUMER}"
        while True:
            await asyncio.sleep(IDLE_CHECK_INTERVAL_S)
            if self.worker.busy or self.worker.settling or not self.worker.inbox.empty() or self.worker.puller.overflow:
                continue
            try:
                info = await self.worker.storage.js.api(subject, None, what)
            except AsyncJobsError as exc:
                log.info("%s", exc)
                continue
            in_flight = self.worker.busy or self.worker.settling
            if not int(info.get("num_pending", 0)) and not int(info.get("num_ack_pending", 0)) and not in_flight:
                log.info("queue %s is idle: nothing waiting or in flight, stopping", self.worker.queue.name)
                return

    async def watch_loop_lag(self) -> None:
        """Say so when a handler blocks the event loop: nothing else in this worker can run meanwhile."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(LOOP_LAG_CHECK_S)
            lag = loop.time() - before - LOOP_LAG_CHECK_S
            if lag >= LOOP_LAG_WARN_S:
                types = sorted({entry.task.type for entry in self.worker.running.values()}) or ["none"]
                log.warning(
                    "queue %s: the event loop was blocked for %.1fs while handlers for %s ran: a handler calls "
                    "blocking code (time.sleep, blocking I/O); run it with asyncio.to_thread()",
                    self.worker.queue.name,
                    lag,
                    ", ".join(types),
                )

    async def keep_alive(self) -> None:
        """Keep the items this worker processes from being redelivered while it is still at them."""
        half_ack_wait = self.worker.max_run_time_ns / NS_PER_SECOND / 2
        while True:
            await asyncio.sleep(min(LOOP_LAG_CHECK_S, half_ack_wait / 2))
            self.send_keep_alives(time.monotonic(), half_ack_wait)

    def send_keep_alives(self, now: float, every: float) -> int:
        """Send ``+WPI`` for each delivery in process for ``every`` seconds since its delivery or last ``+WPI``.

        A handler ends within the max run time (the ack wait), but setting the task active or recording its outcome
        can take longer when the store is unavailable and the save is retried; without this JetStream would redeliver
        the item meanwhile. Deliveries whose handler is running are left alone. Returns how many were sent.
        """
        sent = 0
        for entry in self.worker.running.values():
            # While its handler runs, the handler's own max run time and mark_in_progress() govern the item.
            if entry.task._handler is None and now - entry.since >= every:
                entry.since = now
                self.keep_alive_now(entry.msg)
                sent += 1
        return sent

    def keep_alive_now(self, msg: Msg) -> None:
        """Send ``+WPI`` for a delivery now, in the background (its ack wait starts again)."""
        beat = asyncio.get_running_loop().create_task(self._send_wpi(msg))
        self._beats.add(beat)
        beat.add_done_callback(self._beats.discard)

    async def _send_wpi(self, msg: Msg) -> None:
        try:
            await self.worker.nc.publish(msg.reply, WPI)
        except Exception as exc:
            log.debug("queue %s: could not send +WPI: %s", self.worker.queue.name, exc)
