"""``--processes N``: start N worker processes, restart crashed ones with back-off, forward stop signals.

Each worker runs in its own session, so a Ctrl-C in the terminal reaches only the supervisor. The supervisor passes
a stop on with signals of its own, SIGUSR1 for the first (stop cleanly) and SIGUSR2 for any later one (stop at once),
so a worker that also receives the stop signal directly (systemd's default ``KillMode=control-group`` signals every
process of the unit) still gives its handlers the full grace. A worker
that exits 0 (a clean stop, or idle with ``--until-idle``) is not restarted; one that exits with the usage status
(bad arguments or router) stops the whole set; any other exit is a crash, restarted after 1, 2, 4 ... up to 30
seconds (the delay starts over once a worker has run for a minute). A worker whose supervisor dies (SIGKILL) notices
within a second and stops cleanly.

The supervisor imports only the standard library, and no asyncio (a bare interpreter's ~11 MB rather than a worker's
~35 MB): its signal handlers only note the signal, and one loop waits on a self-pipe that signals (SIGCHLD among them)
write to, with a timeout for the next restart.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import time
from types import FrameType
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
WAKE_EVERY_S: Final = 1.0
"""The longest the loop sleeps: signals and worker exits wake it at once, this is only a safety net."""


def exit_now(status: int) -> None:
    """End the process at once with ``status`` (logs flushed first); nothing else runs."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(status)


class _Slot:
    __slots__ = ("crashes", "ended", "index", "process", "restart_at", "started", "status")

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.crashes = 0
        self.status: int | None = None
        self.restart_at: float | None = None
        """When a crashed worker is started again."""
        self.ended = False
        """The slot ended for good: its worker is not started again."""


class _Supervisor:
    def __init__(self, count: int, command: list[str]) -> None:
        self.command = command
        self.slots = [_Slot(n) for n in range(count)]
        self.stopping = False
        self.signals = 0
        self.last_signal: int | None = None
        self.usage_error = False
        self.received: list[int] = []
        """Stop signals noted by the handler, for the loop to act on."""

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
            exit_now(128 + signum)
        self.stopping = True
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

    def start(self, slot: _Slot) -> None:
        env = {**os.environ, CHILD_INDEX_ENV: str(slot.index), SUPERVISOR_PID_ENV: str(os.getpid())}
        slot.restart_at = None
        slot.process = subprocess.Popen(self.command, env=env, start_new_session=True)
        slot.started = time.monotonic()
        log.info("worker %d started (pid %d)", slot.index, slot.process.pid)
        if self.stopping:
            self.tell(slot, self.stop_signal())  # the stop came while it was being started

    def exited(self, slot: _Slot, code: int) -> None:
        """Act on the exit of a slot's worker: end the slot, or plan the restart."""
        assert slot.process is not None
        slot.status = code
        if self.stopping and -code in (*STOP_SIGNALS, GRACEFUL_SIGNAL, HURRY_SIGNAL):
            # Killed by the forwarded signal while Python was still starting: it had taken no task yet.
            slot.status = 0
        if code == 0 or self.stopping:
            log.info("worker %d (pid %d) exited with status %d", slot.index, slot.process.pid, code)
            slot.ended = True
            return
        if code == EXIT_USAGE:
            log.error("worker %d exited with a usage error: stopping every worker", slot.index)
            self.usage_error = True
            slot.ended = True
            self.on_signal(signal.SIGTERM)
            return
        ran = time.monotonic() - slot.started
        slot.crashes = 1 if ran >= STABLE_AFTER_S else slot.crashes + 1
        delay = RESTART_DELAYS_S[min(slot.crashes, len(RESTART_DELAYS_S)) - 1]
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
        log.error(
            "worker %d (pid %d) %s after %.1fs: restarting it in %gs", slot.index, slot.process.pid, how, ran, delay
        )
        slot.restart_at = time.monotonic() + delay

    def step(self) -> float | None:
        """Act on what happened since the last step; returns how long to sleep at most, ``None`` once all ended."""
        while self.received:
            self.on_signal(self.received.pop(0))
        for slot in self.slots:
            # poll() also reports an exit that send_signal() reaped already: ended and waiting slots are done with it.
            if slot.process is None or slot.ended or slot.restart_at is not None:
                continue
            code = slot.process.poll()
            if code is not None:
                self.exited(slot, code)
        now = time.monotonic()
        sleep = WAKE_EVERY_S
        for slot in self.slots:
            if slot.restart_at is None:
                continue
            if self.stopping:
                slot.status = None  # stopped while waiting to restart: nothing of it is left running
                slot.restart_at, slot.ended = None, True
            elif slot.restart_at <= now:
                self.start(slot)
            else:
                sleep = min(sleep, slot.restart_at - now)
        return None if all(slot.ended for slot in self.slots) else sleep

    def run(self) -> int:
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        handled = (*STOP_SIGNALS, signal.SIGCHLD)
        previous_handlers = {signum: signal.getsignal(signum) for signum in handled}
        previous_wakeup = signal.set_wakeup_fd(wake_write)
        try:
            for signum in STOP_SIGNALS:
                signal.signal(signum, self._note)
            # Handled, though by nothing, so that a worker's exit writes to the wake-up pipe.
            signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
            log.info("supervising %d worker processes", len(self.slots))
            for slot in self.slots:
                self.start(slot)
            while (sleep := self.step()) is not None:
                select.select([wake_read], [], [], sleep)
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_read, 512):
                        pass
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for signum, handler in previous_handlers.items():
                if handler is not None:  # None: not installed from Python, so not ours to put back
                    signal.signal(signum, handler)
            os.close(wake_read)
            os.close(wake_write)
        return self.status()

    def _note(self, signum: int, _frame: FrameType | None) -> None:
        # A signal handler may run between any two bytecodes: note the signal, and the loop (woken by the wake-up
        # pipe) acts on it.
        self.received.append(signum)

    def status(self) -> int:
        if self.usage_error:
            return EXIT_USAGE
        if self.signals > 1 and self.last_signal is not None:
            return 128 + self.last_signal
        return 0 if all(slot.status in (0, None) for slot in self.slots) else 1


def supervise(count: int, command: list[str]) -> int:
    """Run ``command`` as ``count`` supervised worker processes until they all end; returns the exit status.

    The status is 0 when every worker stopped cleanly, 2 when one reported a usage error, ``128 + signal`` when a
    second stop signal hurried the workers, else 1.
    """
    return _Supervisor(count, command).run()
