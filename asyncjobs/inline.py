"""Messages handled in nats-py's reader, without the hop through a subscription's own task.

nats-py hands every message of a callback subscription to an ``asyncio.Queue`` that a task of the subscription
reads, so each reply and each pulled item costs a task switch before its callback runs, and then another before
the coroutine waiting for it resumes. On the hot path (the replies to a worker's requests, the items it pulls) that
hop is about a tenth of the Python calls a worker makes per task. :func:`take_inline` lets a plain function take the
common messages as the reader parses them; whatever it declines goes through the queue to the subscription's
callback as before, and until the callback has finished with it every later message follows it there, so nothing
overtakes a message the callback is still handling.

This relies on two attributes of nats-py's ``Subscription`` (its pending queue and byte count). When a release
changes them, :func:`take_inline` says so in the debug log and returns ``False``, and the subscription keeps the
ordinary path: slower, never wrong.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = logging.getLogger("asyncjobs")

Take = Callable[[Msg], bool]
"""Takes a message at once and returns ``True``, or returns ``False`` to leave it to the subscription's callback.

It runs inside nats-py's reader, so it must not block, await or raise."""


class _InlineQueue:
    """Stands in for a subscription's pending queue: messages ``take`` accepts never enter the queue."""

    __slots__ = ("_queue", "_sub", "_take", "_unfinished")

    def __init__(self, sub: Subscription, queue: asyncio.Queue[Msg], take: Take) -> None:
        self._sub = sub
        self._queue = queue
        self._take = take
        self._unfinished = 0  # declined messages whose callback has not returned yet

    def put_nowait(self, msg: Msg) -> None:
        if not self._unfinished:  # never overtake a message the callback still has to finish
            try:
                taken = self._take(msg)
            except Exception:
                # A bug, not a condition: the reader must go on. The message is dropped, which JetStream repairs
                # (an item is redelivered after its ack wait; a request is retried when its reply times out).
                log.exception("handling a message on %s failed; it is dropped", msg.subject)
                taken = True
            if taken:
                self._sub._pending_size -= len(msg.data)
                return
        self._queue.put_nowait(msg)
        self._unfinished += 1

    def task_done(self) -> None:
        # The subscription's task calls this once the callback is done with a message.
        self._unfinished = max(0, self._unfinished - 1)
        self._queue.task_done()

    def __getattr__(self, name: str) -> Any:
        # get, empty, qsize, join...: the subscription's task and drain() use the real queue.
        return getattr(self._queue, name)


def take_inline(sub: Subscription, take: Take) -> bool:
    """Have nats-py's reader pass ``sub``'s messages to ``take`` as it parses them.

    Messages ``take`` declines, and any that arrive while earlier ones wait in the queue, reach the subscription's
    callback as before.

    Returns:
        Whether the subscription now delivers inline (``False``: this nats-py release keeps the ordinary path).
    """
    queue = getattr(sub, "_pending_queue", None)
    if not isinstance(queue, asyncio.Queue) or not isinstance(getattr(sub, "_pending_size", None), int):
        log.debug("nats-py's Subscription has changed: %s keeps the callback path", sub.subject)
        return False
    sub._pending_queue = _InlineQueue(sub, queue, take)  # type: ignore[assignment]
    return True
