"""Continuous pulling from the ``WORKERS`` consumer, sized to the free handler slots.

Rather than one blocking pull per free slot (as Go does, docs/protocol.md, Pulling work items), we keep pull requests
outstanding for as many messages as there are free slots (plus a small prefetch), on one inbox subscription. The
server fills them as items arrive, so a free slot is refilled without a round trip. The wire consumer and its
configuration are the same as Go's; only the pull requests differ, which other clients never see.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Final

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from asyncjobs.constants import HDR_DESCRIPTION, HDR_PENDING_MESSAGES, HDR_STATUS
from asyncjobs.errors import ClientClosedError
from asyncjobs.inline import take_inline
from asyncjobs.metrics import METRICS
from asyncjobs.retry import RETRY_LINEAR_TEN_SECONDS

log = logging.getLogger("asyncjobs")

PULL_EXPIRES_NS: Final = 30_000_000_000
IDLE_HEARTBEAT_NS: Final = 1_000_000_000
# Without a message or heartbeat for this long, outstanding requests are assumed lost (a reconnect, or the consumer's
# leader died and a new one knows nothing of them).
STALE_AFTER_S: Final = 3 * IDLE_HEARTBEAT_NS / 1e9
CHECK_INTERVAL_S: Final = 0.5
# During an election "no responders" lasts seconds: retry quickly, however often it happened before.
MAX_NO_RESPONDERS_WAIT_S: Final = 2.0


PREFETCH_SHARE: Final = 10
"""Items pulled ahead of the free slots: one for every this many slots (none below that many)."""
WAITED_KEEP_ALIVE_S: Final = 1.0
"""A prefetched item that waited this long for a slot gets a ``+WPI`` as its handler starts."""


def prefetch_for(concurrency: int) -> int:
    """How many items a worker with ``concurrency`` slots keeps pulled ahead of its free slots.

    A slot that frees up takes a prefetched item at once instead of waiting a round trip for the next one. The
    prefetch is small because a prefetched item waits in this worker while another worker might run it; a worker
    with fewer than ``PREFETCH_SHARE`` slots (long tasks, typically) prefetches nothing. On stopping, prefetched
    items are handed straight back.
    """
    return concurrency // PREFETCH_SHARE


class Puller:
    """Feeds work-queue messages to ``deliver``, never holding more than ``slots + prefetch`` unfinished.

    Args:
        nc: the NATS connection.
        next_subject: ``$JS.API.CONSUMER.MSG.NEXT.<stream>.WORKERS``.
        queue: the queue name, for metrics.
        slots: how many messages may be unfinished at once (the client's concurrency).
        prefetch: how many more to keep pulled ahead, waiting for a slot, so a slot that frees up takes the next
            message without a round trip.
        deliver: called with each message; the caller must call :meth:`release` when it is finished with it.
        on_recovered: called when the consumer answers again after a disturbance (lost pull requests, a leader
            change, no responders, a reconnect).
        count_polls: count pull requests and their errors in the queue's poll metrics (off for other consumers).
    """

    def __init__(
        self,
        nc: NATS,
        next_subject: str,
        queue: str,
        *,
        slots: int,
        prefetch: int = 0,
        deliver: Callable[[Msg], None],
        on_recovered: Callable[[], None] | None = None,
        count_polls: bool = True,
    ) -> None:
        self.nc = nc
        self.count_polls = count_polls
        self.on_recovered = on_recovered
        self.disturbed = False
        self.next_subject = next_subject
        self.queue = queue
        self.slots = slots
        self.deliver = deliver
        self.free = slots + prefetch
        self.outstanding = 0
        self.overflow: deque[Msg] = deque()
        self.errors = 0
        self.last_activity = time.monotonic()
        self.wake = asyncio.Event()
        self.sub: Subscription | None = None
        self.inbox = nc.new_inbox()
        self.reconnects = nc.stats.get("reconnects", 0)

    def release(self) -> None:
        """A message is finished: its slot takes the next buffered message or a new pull."""
        if self.overflow:
            self.deliver(self.overflow.popleft())
            return
        self.free += 1
        self.wake.set()

    async def run(self) -> None:
        """Pull until cancelled.

        Raises:
            ClientClosedError: the connection was closed for good (by its owner, or by the server).
        """
        self.sub = await self.nc.subscribe(self.inbox, cb=self._on_message)
        take_inline(self.sub, self._take)
        self.wake.set()
        try:
            while True:
                if self.nc.is_closed:
                    raise ClientClosedError(
                        f"queue {self.queue}: the NATS connection was closed, so the worker stopped: create a new "
                        "client with asyncjobs.connect()"
                    )
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancellation that arrives as the
                # event is set, and the worker would keep running after close().
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(CHECK_INTERVAL_S):
                        await self.wake.wait()
                self.wake.clear()
                reconnects = self.nc.stats.get("reconnects", 0)
                if reconnects != self.reconnects:
                    # Pull requests do not survive a reconnect to another (or a restarted) server.
                    self.reconnects = reconnects
                    self.outstanding = 0
                    self.disturbed = True
                if self.outstanding and time.monotonic() - self.last_activity > STALE_AFTER_S:
                    log.info(
                        "queue %s: no word from the consumer for %.0fs (a new leader, or a lost connection), "
                        "re-issuing pull requests",
                        self.queue,
                        STALE_AFTER_S,
                    )
                    self.outstanding = 0
                    self.disturbed = True
                want = self.free - self.outstanding
                if want > 0:
                    await self._request(want)
        finally:
            sub, self.sub = self.sub, None
            if sub is not None and not self.nc.is_closed:
                try:
                    await sub.unsubscribe()
                except Exception as exc:
                    log.debug("queue %s: unsubscribe failed: %s", self.queue, exc)

    async def _request(self, batch: int) -> None:
        body = orjson.dumps({"batch": batch, "expires": PULL_EXPIRES_NS, "idle_heartbeat": IDLE_HEARTBEAT_NS})
        if self.count_polls:
            METRICS.poll_total.labels(self.queue).inc()
        try:
            await self.nc.publish(self.next_subject, body, reply=self.inbox)
        except Exception as exc:
            self._count_error()
            if self.nc.is_closed:
                return  # run() ends the worker
            self.errors += 1
            self.disturbed = True
            delay = RETRY_LINEAR_TEN_SECONDS.delay(self.errors)
            log.warning("queue %s: pull request failed, retrying in %.1fs: %s", self.queue, delay, exc)
            await asyncio.sleep(delay)
            self.wake.set()
            return
        if self.outstanding == 0:
            self.last_activity = time.monotonic()
        self.outstanding += batch

    def _count_error(self) -> None:
        if self.count_polls:
            METRICS.poll_error_total.labels(self.queue).inc()

    def _answered(self) -> None:
        # A message or a heartbeat from the consumer: whatever disturbed it is over.
        if self.disturbed:
            self.disturbed = False
            log.info("queue %s: the consumer answers pull requests again", self.queue)
            if self.on_recovered is not None:
                self.on_recovered()

    def _take(self, msg: Msg) -> bool:
        """Take a delivered item or a heartbeat at once; leave the other status messages to :meth:`_on_message`."""
        headers = msg.headers
        status = headers.get(HDR_STATUS) if headers else None
        if status is not None and status != "100" and not (msg.data and msg.reply):
            return False
        self.last_activity = time.monotonic()
        if status is None or status == "100":
            self._answered()
        if status == "100" and not (msg.data and msg.reply):
            return True  # idle heartbeat
        self.errors = 0
        if self.outstanding > 0:
            self.outstanding -= 1
        if self.free > 0:
            self.free -= 1
            self.deliver(msg)
        else:
            # More arrived than asked for (requests re-issued after a reconnect): keep it for the next slot.
            self.overflow.append(msg)
        return True

    async def _on_message(self, msg: Msg) -> None:
        if self._take(msg):
            return
        self.last_activity = time.monotonic()
        headers = msg.headers
        status = headers.get(HDR_STATUS) if headers else None
        if status == "408":
            self.errors = 0  # the consumer answered: whatever failed before works again
        assert headers is not None
        pending = headers.get(HDR_PENDING_MESSAGES)
        if pending is not None and pending.isdigit():
            self.outstanding = max(0, self.outstanding - int(pending))
        else:
            self.outstanding = 0
        if status == "503":
            # Nobody serves the consumer: it has no leader yet (an election, or a cluster without quorum), or the
            # queue (or its WORKERS consumer) was deleted.
            self.errors += 1
            self.disturbed = True
            self._count_error()
            delay = min(RETRY_LINEAR_TEN_SECONDS.delay(self.errors), MAX_NO_RESPONDERS_WAIT_S)
            log.warning(
                "queue %s: no responders for its WORKERS consumer: it has no leader (a leader election, or the "
                "cluster lost quorum) or the queue was deleted; retrying in %.1fs",
                self.queue,
                delay,
            )
            await asyncio.sleep(delay)
        elif status == "409":
            description = str(headers.get(HDR_DESCRIPTION, ""))
            if "Leadership Change" in description:
                self.disturbed = True
                log.info("queue %s: the consumer's leader changed, re-issuing pull requests", self.queue)
            elif "Exceeded MaxWaiting" not in description:
                self._count_error()
                log.warning("queue %s: pull request ended: %s", self.queue, description or status)
                await asyncio.sleep(RETRY_LINEAR_TEN_SECONDS.delay(1))
        self.wake.set()
