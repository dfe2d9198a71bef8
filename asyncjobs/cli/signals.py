"""Stop signals for the whole life of a worker command, and an event loop that always lets the process end.

Before the worker runs (while the router module is imported), nothing is held, so a stop signal exits at once. While
it runs, the first SIGTERM or SIGINT stops it cleanly, the second ends the shutdown grace, and the third exits on the
spot, whatever the process is doing (a handler that ignores cancellation, an import that hangs). A supervised worker
also takes its supervisor's SIGUSR1 (stop cleanly) and SIGUSR2 (stop at once), which are not counted, so a stop
signal that reaches it directly as well is not mistaken for a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Final

from asyncjobs.cli.supervisor import GRACEFUL_SIGNAL, HURRY_SIGNAL, exit_now
from asyncjobs.runner import STOP_SIGNALS

log = logging.getLogger("asyncjobs")

STRAGGLER_TIMEOUT_S: Final = 5.0
"""Seconds tasks still running after the worker stopped get to end once cancelled."""


class StopSignals:
    """Counts stop signals and turns them into the worker's ``stop`` and ``hurry`` events.

    Args:
        grace: the shutdown grace, for the log line.
        supervised: also take the supervisor's SIGUSR1 and SIGUSR2.
    """

    def __init__(self, *, grace: float, supervised: bool) -> None:
        self.grace = grace
        self.supervised = supervised
        self.count = 0
        self.hurried_by: int | None = None
        """The stop signal that ended the grace (the second one), if any."""
        self.stop = asyncio.Event()
        self.hurry = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> None:
        """Install the handlers (main thread only)."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_stop)
        if self.supervised:
            signal.signal(GRACEFUL_SIGNAL, self._on_supervisor)
            signal.signal(HURRY_SIGNAL, self._on_supervisor)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """From now on signals stop the worker running on ``loop`` instead of exiting at once."""
        self._loop = loop

    def _on_stop(self, signum: int, _frame: Any) -> None:
        self.count += 1
        name = signal.Signals(signum).name
        if self._loop is None:
            log.warning("received %s before the worker started: exiting", name)
            exit_now(0)
        if self.count == 1:
            log.warning(
                "received %s: stopping; no new tasks are taken, running handlers get up to %gs (shutdown grace) to "
                "finish and the rest are handed back to the queue (send it again to stop at once)",
                name,
                self.grace,
            )
            self._set(self.stop)
        elif self.count == 2:
            log.warning(
                "received %s again: stopping now; running handlers are cancelled and their tasks handed back", name
            )
            self.hurried_by = signum
            self._hurry()
        else:
            log.error("received %s a third time: exiting without handing back; the reconciler recovers the tasks", name)
            exit_now(128 + signum)

    def _on_supervisor(self, signum: int, _frame: Any) -> None:
        if self._loop is None:
            # Still starting (importing the router): no task taken yet, and no loop to hand the stop to.
            log.info("asked to stop by the supervisor before the worker started: exiting")
            exit_now(0)
        if signum == HURRY_SIGNAL:
            self._hurry()
        else:
            self._set(self.stop)

    def _hurry(self) -> None:
        self._set(self.stop)
        self._set(self.hurry)

    def _set(self, event: asyncio.Event) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        # A signal handler may run between any two bytecodes: hand the change to the loop rather than touch it here.
        loop.call_soon_threadsafe(event.set)


def run_loop(
    main: Coroutine[Any, Any, int],
    signals: StopSignals,
    *,
    new_loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
) -> int:
    """Run ``main`` on a new event loop; returns its status, or ends the process if something would keep it alive.

    ``asyncio.run`` waits for every task to end, forever if a handler ignores its cancellation, and interpreter
    shutdown waits for threads (a handler stuck in ``asyncio.to_thread``). Here tasks left once ``main`` returns
    get :data:`STRAGGLER_TIMEOUT_S` after cancellation, and so does the thread pool; if anything is still running
    then, the process ends at once with the status (1 if ``main`` raised).

    Raises:
        BaseException: what ``main`` raised.
    """
    loop = new_loop()
    signals.bind(loop)
    status: int | None = None
    try:
        status = loop.run_until_complete(main)
        return status
    finally:
        left = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in left:
            task.cancel()
        if left:
            loop.run_until_complete(asyncio.wait(left, timeout=STRAGGLER_TIMEOUT_S))
        stuck = [task.get_name() for task in left if not task.done()]
        with contextlib.suppress(TimeoutError):
            loop.run_until_complete(asyncio.wait_for(loop.shutdown_default_executor(), STRAGGLER_TIMEOUT_S))
        stuck += [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
        if stuck:
            log.error(
                "still running after the worker stopped, ignoring cancellation: %s; exiting without waiting for them",
                ", ".join(stuck),
            )
            exit_now(1 if status is None else status)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
