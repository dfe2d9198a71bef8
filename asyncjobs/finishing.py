"""Writes that finish even when their caller is cancelled, so that no task is left half enqueued.

An enqueue is two writes (the task, then its item). A caller cancelled between them (a timeout, a shutdown) must
not leave a stored task without an item, so the client finishes what it started and :meth:`Finishing.wait` lets
``close()`` wait for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger("asyncjobs")

T = TypeVar("T")


class Finishing:
    """The work a client finishes on behalf of callers that were cancelled."""

    def __init__(self) -> None:
        self._jobs: set[asyncio.Future[Any]] = set()

    async def shielded(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` in a task of its own, to its end even if the caller is cancelled."""
        job = asyncio.ensure_future(work)
        self._keep(job)
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            job.add_done_callback(_report_abandoned)  # nobody will see how it ends: the log will
            raise

    async def resumed(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``work()`` in the caller's task; if the caller is cancelled part-way, run ``work()`` again to its end
        in a task of its own.

        For work that is safe to repeat from the start, whatever the interrupted run did (an enqueue is: the store
        and the server's duplicate window recognise the same task and item). Cheaper than :meth:`shielded` when
        nothing is cancelled, which is almost always: no task of its own, so two fewer turns of the event loop.
        """
        try:
            return await work()
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is not None and me.cancelling():  # the caller was cancelled, not the work
                job = asyncio.ensure_future(work())
                self._keep(job)
                job.add_done_callback(_report_abandoned)
            raise

    async def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the work still finishing."""
        if self._jobs:
            await asyncio.wait(list(self._jobs), timeout=timeout)

    def _keep(self, job: asyncio.Future[Any]) -> None:
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)


def _report_abandoned(job: asyncio.Future[Any]) -> None:
    """Work whose caller was cancelled ran on to its end; log its failure, which no caller receives."""
    if not job.cancelled() and job.exception() is not None:
        log.warning("an enqueue whose caller was cancelled failed: %s", job.exception())
