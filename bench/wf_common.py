"""Shared pieces of the workflows benchmark: the shapes it runs, its report rows, and its worker process.

Run as a module it is that worker process (``bench/workflows.py`` starts it)::

    python -m bench.wf_common --server URL --queue NAME --log FILE --parent PID [--concurrency N]

The worker is one ``client.run(router)`` with a no-op handler for :data:`TASK_TYPE` that first appends
``start <task id> <unix ns>`` to the log (one ``os.write`` on an ``O_APPEND`` file, so lines never tear); after
connecting it appends ``ready <unix ns>``. SIGTERM stops it, and so does the loss of its parent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self

import orjson

import asyncjobs
from asyncjobs.constants import TASK_SUBJECT_PREFIX, TASKS_STREAM
from asyncjobs.wiretime import parse_time
from asyncjobs_workflows import Workflow
from asyncjobs_workflows.constants import MAX_PARENTS
from bench.fault_worker import orphaned

log = logging.getLogger("bench.workflows")

QUEUE: Final = "BENCH_WF"
"""The queue of every workflows scenario."""
TASK_TYPE: Final = "bench:wf"
"""The type of every step and every flat task; the worker's handler for it does nothing."""
WORKER_CONCURRENCY: Final = 200
"""Handler slots of the worker process."""
TARGETS_MS: Final = {"release_p50": 10.0, "release_p99": 50.0, "chain": 1000.0}
"""The targets of the workflows issue, in milliseconds, by figure key."""
STEP_TIMEOUT_S: Final = 120.0
"""A bound on every wait (a run, a worker start); a stall fails the benchmark instead of hanging it."""
NS_PER_MS: Final = 1_000_000
ROOT: Final = Path(__file__).resolve().parent.parent
"""The folder holding the ``bench`` package; the worker process runs there so it imports the same code."""
POLL_S: Final = 0.01
READ_CONCURRENCY: Final = 128


# ---- shapes -----------------------------------------------------------------------------------------------------


def chain(name: str, length: int) -> Workflow:
    """``s000 -> s001 -> ...``: ``length`` steps, each waiting for the one before."""
    wf = Workflow(name)
    for i in range(length):
        wf.step(f"s{i:03d}", TASK_TYPE, after=() if i == 0 else (f"s{i - 1:03d}",))
    return wf


def fan_out_in(name: str, total: int) -> Workflow:
    """One root, then parallel middle steps, then one fan-in: ``total`` steps in all.

    A step waits for at most ``MAX_PARENTS`` others, so when the middle is wider than that it is cut into groups,
    each with a fan-in of its own (``g<k>``), and the last step waits for the group fan-ins.
    """
    if total < 3:
        raise ValueError("a fan-out/fan-in needs at least 3 steps")
    groups = 1 if total - 2 <= MAX_PARENTS else max(2, math.ceil((total - 2) / (MAX_PARENTS + 1)))
    middle = total - 2 - (groups if groups > 1 else 0)
    wf = Workflow(name).step("root", TASK_TYPE)
    names = [f"m{i:05d}" for i in range(middle)]
    for step in names:
        wf.step(step, TASK_TYPE, after="root")
    if groups == 1:
        return wf.step("fan_in", TASK_TYPE, after=names)
    size = math.ceil(middle / groups)
    group_names = []
    for k in range(groups):
        group_names.append(f"g{k:02d}")
        wf.step(group_names[-1], TASK_TYPE, after=names[k * size : (k + 1) * size])
    return wf.step("fan_in", TASK_TYPE, after=group_names)


# ---- the report -------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Report:
    """Every figure, in report order: rows of (name, value, detail), and numbers by key for the verdicts."""

    rows: list[tuple[str, str, str]] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, key: str, name: str, value: str, detail: str = "", figure: float | None = None) -> None:
        self.rows.append((name, value, detail))
        if figure is not None:
            self.figures[key] = figure


def ms(ns: float) -> float:
    return ns / NS_PER_MS


# ---- reading what happened --------------------------------------------------------------------------------------


async def stored_ns(client: asyncjobs.Client, task_ids: list[str]) -> dict[str, int]:
    """The JetStream time (unix ns, the server's clock) of each task's last stored message; missing ones left out."""
    api = f"$JS.API.STREAM.MSG.GET.{TASKS_STREAM}"
    gate = asyncio.Semaphore(READ_CONCURRENCY)

    async def one(task_id: str) -> tuple[str, int | None]:
        async with gate:
            body = orjson.dumps({"last_by_subj": TASK_SUBJECT_PREFIX + task_id})
            reply = orjson.loads((await client.nc.request(api, body, timeout=10)).data)
        message = reply.get("message")
        return task_id, None if message is None else parse_time(message["time"]).unix_ns

    found = await asyncio.gather(*(one(task_id) for task_id in task_ids))
    return {task_id: ns for task_id, ns in found if ns is not None}


async def completed_ns(client: asyncjobs.Client, task_ids: list[str]) -> dict[str, int]:
    """Each task's ``result.completed_at`` (unix ns): when its handler returned, on the worker's clock."""
    gate = asyncio.Semaphore(READ_CONCURRENCY)

    async def one(task_id: str) -> tuple[str, int | None]:
        async with gate:
            task = await client.get_task(task_id)
        return task_id, None if task.result is None else task.result.completed_at.unix_ns

    found = await asyncio.gather(*(one(task_id) for task_id in task_ids))
    return {task_id: ns for task_id, ns in found if ns is not None}


# ---- report and profile -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def profiled(path: Path | None, suffix: str) -> Iterator[None]:
    """cProfile the block (this process: the releaser, the submitter) into ``<path>-<suffix>``, when asked to."""
    if path is None:
        yield
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        target = path.with_name(f"{path.stem}-{suffix}{path.suffix}")
        profiler.dump_stats(target)
        log.info("profile written to %s", target)


# ---- the worker process -----------------------------------------------------------------------------------------


class WorkerProcess:
    """A ``python -m bench.wf_common`` worker: started, waited for, read, and always stopped.

    Args:
        url: the server.
        folder: where its handler log and its output go.
        concurrency: its handler slots.
    """

    def __init__(self, url: str, folder: Path, *, concurrency: int = WORKER_CONCURRENCY) -> None:
        self.url = url
        self.log_path = folder / "worker-starts.log"
        self.output_path = folder / "worker-output.log"
        self.concurrency = concurrency
        self._proc: asyncio.subprocess.Process | None = None
        self._output: IO[bytes] | None = None
        self._read = 0
        self.starts: dict[str, int] = {}
        """Task id -> unix ns its handler was first entered, as read so far by :meth:`read_starts`."""

    async def __aenter__(self) -> Self:
        self._output = self.output_path.open("ab")
        argv = ["--server", self.url, "--queue", QUEUE, "--log", str(self.log_path), "--parent", str(os.getpid())]
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.wf_common",
            *argv,
            "--concurrency",
            str(self.concurrency),
            cwd=ROOT,
            stdout=self._output,
            stderr=self._output,
        )
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while not self.log_path.exists() or b"ready " not in self.log_path.read_bytes():
            if self._proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker process did not start: {self.output_tail()}")
            await asyncio.sleep(POLL_S)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._output is not None:
            self._output.close()
            self._output = None

    def check(self) -> None:
        """Fail at once if the worker died."""
        if self._proc is None or self._proc.returncode is not None:
            raise RuntimeError(f"the worker process is gone: {self.output_tail()}")

    def read_starts(self) -> dict[str, int]:
        """Read the log lines written since the last call into :attr:`starts`."""
        with self.log_path.open("rb") as log_file:
            log_file.seek(self._read)
            data = log_file.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._read += len(complete)
        for line in complete.decode().splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "start":
                task_id, _, ns = rest.rpartition(" ")
                self.starts.setdefault(task_id, int(ns))
        return self.starts

    def output_tail(self, lines: int = 20) -> str:
        try:
            text = self.output_path.read_text(errors="replace")
        except OSError:
            return "(no output)"
        return "\n".join(text.splitlines()[-lines:]) or "(no output)"


def _router(fd: int) -> asyncjobs.Router:
    router = asyncjobs.Router()

    async def noop(task: asyncjobs.Task) -> None:
        os.write(fd, f"start {task.id} {time.time_ns()}\n".encode())

    router.add(TASK_TYPE, noop)
    return router


async def _serve(args: argparse.Namespace, fd: int) -> None:
    async with await asyncjobs.connect(args.server, queue=args.queue, concurrency=args.concurrency) as client:
        running = asyncio.create_task(client.run(_router(fd)), name="bench-wf-worker")
        orphan = asyncio.create_task(orphaned(args.parent), name="bench-wf-parent-watch")
        os.write(fd, f"ready {time.time_ns()}\n".encode())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, running.cancel)
        try:
            await asyncio.wait({running, orphan}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (running, orphan):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wf_common", description="the workflows bench's worker")
    parser.add_argument("--server", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--log", required=True, help="the handler log to append to")
    parser.add_argument("--parent", type=int, required=True, help="stop when this process is no longer the parent")
    parser.add_argument("--concurrency", type=int, default=WORKER_CONCURRENCY)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        asyncio.run(_serve(args, fd))
    finally:
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
