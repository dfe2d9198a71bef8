"""``--processes N``: start N worker processes, restart crashed ones with back-off, forward stop signals.

Each worker runs in its own session, so a Ctrl-C in the terminal reaches only the supervisor. The supervisor passes
a stop on with signals of its own, SIGUSR1 for the first (stop cleanly) and SIGUSR2 for any later one (stop at once),
so a worker that also receives the stop signal directly (systemd's default ``KillMode=control-group`` signals every
process of the unit) still gives its handlers the full grace. A worker
that exits 0 (a clean stop, or idle with ``--until-idle``) is not restarted; one that exits with the usage status
(bad arguments or router) stops the whole set; any other exit is a crash, restarted after 1, 2, 4 ... up to 30
seconds (the delay starts over once a worker has run for a minute). A worker whose supervisor dies (SIGKILL) notices
within a second and stops cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import Final

log = logging.getLogger("asyncjobs")

CHILD_INDEX_ENV: Final = "ASYNCJOBS_WORKER_INDEX"
"""Set in each supervised worker: its index, 0 to N-1."""
SUPERVISOR_PID_ENV: Final = "ASYNCJOBS_SUPERVISOR_PID"
"""Set in each supervised worker: the supervisor's pid, watched so a worker never outlives it."""
EXIT_USAGE: Final = 2
RESTART_DELAYS_S: Final = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
"""Back-off before restarting a crashed worker, by how many times in a row it crashed."""
STABLE_AFTER_S: Final = 60.0
"""A worker that ran this long before crashing is restarted after the first delay again."""
STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
GRACEFUL_SIGNAL: Final = signal.SIGUSR1
"""What the supervisor sends a worker to stop it gracefully (any number of times: it never hurries)."""
HURRY_SIGNAL: Final = signal.SIGUSR2
"""What the supervisor sends a worker to end its shutdown grace at once."""


@dataclass
class _Slot:
    index: int
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    crashes: int = 0
    status: int | None = None


class _Supervisor:
    def __init__(self, count: int, command: list[str]) -> None:
        self.command = command
        self.slots = [_Slot(n) for n in range(count)]
        self.stopping = asyncio.Event()
        self.signals = 0
        self.last_signal: int | None = None
        self.usage_error = False

    def on_signal(self, signum: int) -> None:
        self.signals += 1
        self.last_signal = signum
        name = signal.Signals(signum).name
        if self.signals == 1:
            log.warning("supervisor received %s: stopping %d workers", name, len(self.slots))
        elif self.signals == 2:
            log.warning("supervisor received %s again: stopping the workers at once", name)
        else:
            log.error("supervisor received %s a third time: killing the workers", name)
            for slot in self.slots:
                self.tell(slot, signal.SIGKILL)
            os._exit(128 + signum)
        self.stopping.set()
        for slot in self.slots:
            self.tell(slot, self.stop_signal())

    def stop_signal(self) -> int:
        # Signals of our own: a worker that also got the stop signal directly (systemd signals the whole control
        # group) must not count ours as a second one.
        return GRACEFUL_SIGNAL if self.signals <= 1 else HURRY_SIGNAL

    @staticmethod
    def tell(slot: _Slot, signum: int) -> None:
        if slot.process is not None and slot.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                slot.process.send_signal(signum)

    async def start(self, slot: _Slot) -> None:
        env = {**os.environ, CHILD_INDEX_ENV: str(slot.index), SUPERVISOR_PID_ENV: str(os.getpid())}
        slot.process = await asyncio.create_subprocess_exec(*self.command, env=env, start_new_session=True)
        slot.started = time.monotonic()
        log.info("worker %d started (pid %d)", slot.index, slot.process.pid)
        if self.stopping.is_set():
            self.tell(slot, self.stop_signal())  # the stop came while it was being started

    async def keep(self, slot: _Slot) -> None:
        """Run one worker slot until it ends for good."""
        while True:
            await self.start(slot)
            assert slot.process is not None
            code = await slot.process.wait()
            slot.status = code
            if self.stopping.is_set() and -code in (*STOP_SIGNALS, GRACEFUL_SIGNAL, HURRY_SIGNAL):
                # Killed by the forwarded signal while Python was still starting: it had taken no task yet.
                slot.status = 0
            if code == 0 or self.stopping.is_set():
                log.info("worker %d (pid %d) exited with status %d", slot.index, slot.process.pid, code)
                return
            if code == EXIT_USAGE:
                log.error("worker %d exited with a usage error: stopping every worker", slot.index)
                self.usage_error = True
                self.on_signal(signal.SIGTERM)
                return
            ran = time.monotonic() - slot.started
            slot.crashes = 1 if ran >= STABLE_AFTER_S else slot.crashes + 1
            delay = RESTART_DELAYS_S[min(slot.crashes, len(RESTART_DELAYS_S)) - 1]
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
            log.error(
                "worker %d (pid %d) %s after %.1fs: restarting it in %gs",
                slot.index,
                slot.process.pid,
                how,
                ran,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            if self.stopping.is_set():
                slot.status = None  # stopped while waiting to restart: nothing of it is left running
                return

    def status(self) -> int:
        if self.usage_error:
            return EXIT_USAGE
        if self.signals > 1 and self.last_signal is not None:
            return 128 + self.last_signal
        return 0 if all(slot.status in (0, None) for slot in self.slots) else 1


async def _supervise(count: int, command: list[str]) -> int:
    supervisor = _Supervisor(count, command)
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, supervisor.on_signal, signum)
    try:
        log.info("supervising %d worker processes", count)
        await asyncio.gather(*(supervisor.keep(slot) for slot in supervisor.slots))
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    return supervisor.status()


def supervise(count: int, command: list[str]) -> int:
    """Run ``command`` as ``count`` supervised worker processes until they all end; returns the exit status.

    The status is 0 when every worker stopped cleanly, 2 when one reported a usage error, ``128 + signal`` when a
    second stop signal hurried the workers, else 1.
    """
    return asyncio.run(_supervise(count, command))
