"""Worker OS processes for the fault runs: spawned from ``bench/fault_worker.py``, killed, and always cleaned up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self

from bench.fault_ledger import Ledger, ProcessLog

ROOT: Final = Path(__file__).resolve().parent.parent
"""The folder holding the ``bench`` package; worker processes run there so they import the same code."""
READY_TIMEOUT_S: Final = 30.0
"""How long a new worker process may take to import, connect and bind the queue."""
STOP_TIMEOUT_S: Final = 10.0
"""How long a worker gets after SIGTERM (its handlers' shutdown grace and a drain) before SIGKILL."""
POLL_S: Final = 0.05
MESSAGE_CHARS: Final = 200
_LEVEL: Final = re.compile(r" (WARNING|ERROR|CRITICAL) ")
_TASK_ID: Final = re.compile(r"\b[0-9A-Za-z]{27}\b")  # a KSUID
_NUMBER: Final = re.compile(r"\d+(\.\d+)?")


def _open_output(path: Path) -> IO[bytes]:
    return path.open("ab")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


class WorkerProcess:
    """One worker process: its handler log and its stdout/stderr file."""

    def __init__(self, label: str, proc: asyncio.subprocess.Process, log: ProcessLog, output: Path) -> None:
        self.label = label
        self.proc = proc
        self.log = log
        self.output = output
        self.killed_at_ns: int | None = None
        """When :meth:`kill` sent SIGKILL (unix ns)."""

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    def output_tail(self) -> str:
        """The last lines the process printed (warnings from asyncjobs, a traceback)."""
        return _tail(self.output)

    async def kill(self) -> None:
        """SIGKILL, as a crash would, and reap the process."""
        if self.running:
            self.killed_at_ns = time.time_ns()
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        """SIGTERM (running handlers get their shutdown grace), then SIGKILL if it does not exit in time."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await self.proc.wait()
            except TimeoutError:
                await self.kill()
        await self.proc.wait()

    def kill_now(self) -> None:
        """SIGKILL without waiting: the last resort of an interrupted clean-up."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)


class WorkerPool:
    """Spawns worker processes for one queue; an async context manager that stops every one of them on exit.

    Args:
        servers: the NATS URLs the workers connect to.
        queue: the queue name.
        max_run_time_s: the queue's max run time, in case a worker creates it.
        replicas: the replicas a worker would create streams with.
        concurrency: handlers per worker process.
        workdir: where the handler logs (``worker-<n>.log``) and outputs (``worker-<n>.out``) go.
        ledger: collects every worker's handler log.
    """

    def __init__(
        self,
        servers: Sequence[str],
        *,
        queue: str,
        max_run_time_s: float,
        replicas: int,
        concurrency: int,
        workdir: Path,
        ledger: Ledger,
    ) -> None:
        self.servers = list(servers)
        self.queue = queue
        self.max_run_time_s = max_run_time_s
        self.replicas = replicas
        self.concurrency = concurrency
        self.workdir = workdir
        self.ledger = ledger
        self.workers: list[WorkerProcess] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop_all()

    async def spawn(self) -> WorkerProcess:
        """Start one more worker process and wait until it has connected.

        Raises:
            RuntimeError: it exited or did not connect within ``READY_TIMEOUT_S``; the message holds its output.
        """
        label = f"worker-{len(self.workers) + 1}"
        log = self.ledger.add(self.workdir / f"{label}.log", label)
        output = self.workdir / f"{label}.out"
        command = [
            sys.executable,
            "-m",
            "bench.fault_worker",
            f"--servers={','.join(self.servers)}",
            f"--queue={self.queue}",
            f"--log={log.path}",
            f"--parent={os.getpid()}",
            f"--max-run-time={self.max_run_time_s:g}",
            f"--concurrency={self.concurrency}",
            f"--replicas={self.replicas}",
        ]
        sink = _open_output(output)
        try:
            proc = await asyncio.create_subprocess_exec(
                *command, cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=sink, stderr=asyncio.subprocess.STDOUT
            )
        finally:
            sink.close()
        worker = WorkerProcess(label, proc, log, output)
        self.workers.append(worker)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while log.ready_ns is None:
            if not worker.running or time.monotonic() > deadline:
                what = f"exited with code {proc.returncode}" if not worker.running else "did not connect in time"
                raise RuntimeError(f"{label} {what}; its output ends with:\n{worker.output_tail()}")
            await asyncio.sleep(POLL_S)
            log.refresh()
        return worker

    def warnings(self) -> Counter[str]:
        """The warnings and errors every worker logged, task ids and numbers masked, counted."""
        counts: Counter[str] = Counter()
        for worker in self.workers:
            try:
                text = worker.output.read_text(errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                level = _LEVEL.search(line)
                if level is not None:
                    message = line[level.start() + 1 :]
                    counts[_NUMBER.sub("N", _TASK_ID.sub("<id>", message))[:MESSAGE_CHARS]] += 1
        return counts

    async def stop_all(self) -> None:
        """Stop every worker process (SIGTERM, then SIGKILL); if interrupted, SIGKILL whatever is left."""
        try:
            await asyncio.gather(*(worker.stop() for worker in self.workers))
        finally:
            for worker in self.workers:
                worker.kill_now()
