"""Sizing benchmark: tasks/s by worker processes and slots per process, for I/O-bound and CPU-bound handlers.

    python -m bench.sizing [--quick] [--no-write] [--io-ms 20] [--cpu-ms 2] ...    (or ./dev bench --sizing ...)

Each cell of the grid is one run on a fresh nats-server (loopback, file storage): a new queue is filled with N tasks
(``client.enqueue_many``, chunks of 1,000), then the worker command runs on it as a subprocess,
``python -m asyncjobs worker bench.sizing_app:router --processes P --concurrency C``, until the queue is empty, and
is stopped with SIGTERM. The benchmark polls the queue's work stream (``STREAM.INFO``, every 10 ms) for the items
left and times the run from when the first 10 % of the tasks are done to the last, so the start-up of the worker
processes is left out: rate = items left at the first mark / seconds between the marks. The handlers
(``bench/sizing_app.py``) wait on ``asyncio.sleep`` (I/O-bound) or compute in pure Python for a given CPU time
(CPU-bound). Everything shares the machine's cores: the workers, nats-server and this process.

A full run writes its section of ``docs/performance.md`` (between the sizing markers), with guidance worded from
the measured numbers; ``--quick`` (one small cell of each kind) and ``--no-write`` only print.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

import asyncjobs
from asyncjobs.constants import JS_API_PREFIX
from asyncjobs.queue import MAX_CONCURRENT_LIMIT
from asyncjobs.server import NatsServer
from bench.report import SIZING_BEGIN, SIZING_END, Machine, write_section
from bench.sizing_app import CPU_MS_ENV, DEFAULT_CPU_MS, DEFAULT_IO_MS, IO_MS_ENV
from bench.sizing_report import Cell, Outcome, Plan, console_table, section

log = logging.getLogger("bench.sizing")

ROOT: Final = Path(__file__).resolve().parent.parent
DOCS: Final = ROOT / "docs" / "performance.md"
APP: Final = "bench.sizing_app:router"
ENQUEUE_CHUNK: Final = 1000
POLL_S: Final = 0.01
"""How often the items left in the queue are read; the error of a timed run is about twice this."""
WARMUP_SHARE: Final = 0.1
"""The share of a run's tasks done before its timing starts (worker processes starting, connections warming)."""
START_TIMEOUT_S: Final = 60.0
"""A bound on the worker command finishing the first share of tasks."""
STOP_TIMEOUT_S: Final = 15.0
"""A bound on the worker command exiting after SIGTERM, before it is killed."""
REQUEST_TIMEOUT_S: Final = 5.0


# ---- one run ----------------------------------------------------------------------------------------------------


async def items_left(client: asyncjobs.Client, stream: str) -> int:
    reply = await client.nc.request(f"{JS_API_PREFIX}.STREAM.INFO.{stream}", b"", timeout=REQUEST_TIMEOUT_S)
    info = orjson.loads(reply.data)
    if "error" in info:
        raise RuntimeError(f"reading stream {stream}: {info['error']}")
    return int(info["state"]["messages"])


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


async def _stop(proc: asyncio.subprocess.Process, out: Path) -> None:
    """SIGTERM the worker command, wait for it (bounded), then kill its process group whatever it left behind."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await proc.wait()
        except TimeoutError:
            log.warning("the worker command did not exit %.0fs after SIGTERM: killing it", STOP_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()
    if proc.returncode != 0:
        log.warning("the worker command exited with status %s: %s", proc.returncode, _tail(out))


async def _wait_left(
    client: asyncjobs.Client, stream: str, proc: asyncio.subprocess.Process, at_most: int, timeout_s: float, out: Path
) -> tuple[int, float]:
    """Poll until at most ``at_most`` items are left; returns how many, and when (``perf_counter``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = await items_left(client, stream)
        now = time.perf_counter()
        if left <= at_most:
            return left, now
        if proc.returncode is not None:
            raise RuntimeError(f"the worker command exited with status {proc.returncode}: {_tail(out)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"stalled: {left} items left after {timeout_s:.0f}s, not {at_most}")
        await asyncio.sleep(POLL_S)


async def run_cell(cell: Cell, plan: Plan, folder: Path) -> Outcome:
    queue = asyncjobs.Queue(cell.queue, max_concurrent=MAX_CONCURRENT_LIMIT)  # the slots are what is measured
    out = folder / f"{cell.queue}.log"
    env = {**os.environ, IO_MS_ENV: f"{plan.io_ms:g}", CPU_MS_ENV: f"{plan.cpu_ms:g}"}
    argv = [sys.executable, "-m", "asyncjobs", "worker", APP, "--queue", cell.queue, "--app-dir", str(ROOT)]
    argv += ["--processes", str(cell.processes), "--concurrency", str(cell.concurrency), "--log-level", "warning"]
    async with NatsServer() as server, await asyncjobs.connect(server.url, queue=queue) as client:
        ends: list[str] = []  # the first and the last task enqueued, checked to have completed at the end
        for first in range(0, cell.tasks, ENQUEUE_CHUNK):
            chunk = [asyncjobs.Task(cell.task_type) for _ in range(first, min(cell.tasks, first + ENQUEUE_CHUNK))]
            await client.enqueue_many(chunk)
            ends = [ends[0] if ends else chunk[0].id, chunk[-1].id]
        if (left := await items_left(client, queue.stream)) != cell.tasks:
            raise RuntimeError(f"{cell.queue}: {left} items after enqueueing {cell.tasks}")
        with out.open("wb") as output:
            started = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                *argv, "--server", server.url, cwd=ROOT, env=env, stdout=output, stderr=output, start_new_session=True
            )
        try:
            mark = cell.tasks - max(1, round(cell.tasks * WARMUP_SHARE))
            left, t0 = await _wait_left(client, queue.stream, proc, mark, START_TIMEOUT_S, out)
            drain_timeout_s = 60.0 + left / 50
            _, t1 = await _wait_left(client, queue.stream, proc, 0, drain_timeout_s, out)
        finally:
            await _stop(proc, out)
        for task_id in ends:  # an emptied queue could also mean terminated tasks: these must have completed
            if (state := (await client.get_task(task_id)).state) != asyncjobs.TaskState.COMPLETED:
                raise RuntimeError(f"{cell.queue}: task {task_id} ended {state.value!r}, not complete: {_tail(out)}")
    seconds = t1 - t0
    rate = left / seconds if seconds > 0 else math.inf
    return Outcome(cell, rate=rate, timed=left, seconds=seconds, startup_s=t0 - started)


async def run_all(plan: Plan) -> list[Outcome]:
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="asyncjobs-sizing-") as folder:
        for n, cell in enumerate(plan.cells(), 1):
            bound_s = START_TIMEOUT_S + 60.0 + cell.tasks / 50 + 2 * STOP_TIMEOUT_S
            async with asyncio.timeout(bound_s):  # a stall in set-up or prefill fails the run, too
                outcome = await run_cell(cell, plan, Path(folder))
            log.info(
                "%d/%d %s P=%d C=%d: %d tasks, %.0f tasks/s (%d timed over %.2fs, start-up %.2fs)",
                *(n, len(plan.cells()), cell.kind, cell.processes, cell.concurrency, cell.tasks, outcome.rate),
                *(outcome.timed, outcome.seconds, outcome.startup_s),
            )
            outcomes.append(outcome)
    return outcomes


# ---- the command ------------------------------------------------------------------------------------------------


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more integers of at least 1")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.sizing", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small run of each kind (seconds); writes nothing")
    parser.add_argument("--no-write", action="store_true", help=f"print only, do not rewrite {DOCS.name}")
    parser.add_argument("--io-ms", type=float, default=DEFAULT_IO_MS, help="I/O-bound handler wait (default 20)")
    parser.add_argument("--cpu-ms", type=float, default=DEFAULT_CPU_MS, help="CPU-bound handler work (default 2)")
    parser.add_argument("--io-processes", type=_ints, help="worker processes, I/O-bound (default 1,2; quick 1)")
    parser.add_argument("--io-concurrency", type=_ints, help="slots per process (default 10,50,100,200,400; quick 50)")
    parser.add_argument("--cpu-processes", type=_ints, help="worker processes, CPU-bound (default 1,2,4; quick 1)")
    parser.add_argument("--cpu-concurrency", type=_ints, help="slots per process (default 1,10,50; quick 10)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log asyncjobs warnings of this process too")
    args = parser.parse_args(argv)
    if not (args.io_ms > 0 and args.cpu_ms > 0):
        parser.error("--io-ms and --cpu-ms must be more than 0 milliseconds")
    return args


def plan_from(args: argparse.Namespace) -> Plan:
    quick = args.quick
    return Plan(
        io_ms=args.io_ms,
        cpu_ms=args.cpu_ms,
        io_processes=args.io_processes or ((1,) if quick else (1, 2)),
        io_concurrency=args.io_concurrency or ((50,) if quick else (10, 50, 100, 200, 400)),
        cpu_processes=args.cpu_processes or ((1,) if quick else (1, 2, 4)),
        cpu_concurrency=args.cpu_concurrency or ((10,) if quick else (1, 10, 50)),
        io_seconds=0.5 if quick else 3.0,
        min_tasks=200 if quick else 1000,
        max_tasks=1000 if quick else 12000,
        cpu_tasks_per_process=150 if quick else 2000,
        cores=os.cpu_count() or 1,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("asyncjobs").setLevel(logging.WARNING if args.verbose else logging.ERROR)
    plan = plan_from(args)
    started = time.perf_counter()
    outcomes = asyncio.run(run_all(plan))
    seconds = time.perf_counter() - started
    command = shlex.join(["./dev", "bench", "--sizing", *argv])
    text = section(outcomes, plan, Machine.describe(), seconds, command)
    print(console_table(outcomes), "", text, sep="\n")
    if args.quick or args.no_write:
        return 0
    write_section(DOCS, text, SIZING_BEGIN, SIZING_END)
    print(f"\nwrote the sizing section of {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
