"""Fault injection under load: tasks lost, stuck or run twice when a worker, the server or a cluster node fails.

    python -m bench.faults [--tasks N] [--scenario NAME ...] [--json out.json] [--markdown out.md]

Every scenario runs on fresh nats-servers (loopback, free ports, file storage in a temporary folder) with two worker
processes (``bench/fault_worker.py``, concurrency 10, a 5 ms handler) on the queue ``FAULTS``, whose max run time
(the consumer's ack wait) is 5 s so that items held by a killed worker come back within seconds. A producer in this
process spreads the tasks over ``--load-seconds`` while the workers run, and retries a failed enqueue with the same
Task object. The faults are injected at about a third (and two thirds) of the tasks done. Whether a task is lost or
stuck is decided only after the recovery window following the last fault, and polling stops as soon as every task
is final and the queue is empty. The figures are defined in :data:`bench.fault_outcome.DEFINITIONS`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Final

import asyncjobs
from asyncjobs.cluster import NatsCluster
from asyncjobs.server import NatsServer
from bench.fault_ledger import Ledger
from bench.fault_load import Producer, Tracker, monotonic_clock
from bench.fault_outcome import Outcome, Timeline, markdown, summarize, table, to_json
from bench.fault_procs import WorkerPool
from bench.fault_scenarios import CLUSTER_SIZE, QUEUE_NAME, SCENARIOS, FaultSettings, Run, Scenario
from bench.fault_worker import TASK_TYPE

log = logging.getLogger("bench.faults")

PRODUCER_GRACE_S: Final = 60.0
"""The producer stops this long after the planned end of the load (plus any outage), finished or not."""
CLIENT_CLOSE_TIMEOUT_S: Final = 10.0
WARNINGS_SHOWN: Final = 12


# ---- running one scenario ---------------------------------------------------------------------------------------


async def run_scenario(name: str, settings: FaultSettings) -> Outcome:
    """Run one scenario on fresh servers and return its figures.

    Every process and server it started is stopped before it returns or raises.

    Raises:
        KeyError: no scenario has that name.
        TimeoutError: the scenario overran ``settings.budget_s``.
    """
    scenario = SCENARIOS[name]
    outcome = Outcome(scenario=name, description=scenario.description)
    started = time.monotonic()
    owned = settings.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="asyncjobs-faults-")) if settings.workdir is None else settings.workdir
    workdir = workdir / name
    shutil.rmtree(workdir, ignore_errors=True)  # handler logs are appended to: never mix two runs
    workdir.mkdir(parents=True)
    try:
        async with asyncio.timeout(settings.budget_s):
            await _run(scenario, settings, workdir, outcome)
    finally:
        outcome.wall_s = time.monotonic() - started
        if owned:
            shutil.rmtree(workdir.parent, ignore_errors=True)
    return outcome


async def _close(client: asyncjobs.Client) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(CLIENT_CLOSE_TIMEOUT_S):
            await client.close()


async def _run(scenario: Scenario, settings: FaultSettings, workdir: Path, outcome: Outcome) -> None:
    async with contextlib.AsyncExitStack() as stack:
        deployment: NatsServer | NatsCluster
        if scenario.cluster:
            deployment = await stack.enter_async_context(NatsCluster(CLUSTER_SIZE, store_root=workdir / "stores"))
            urls, replicas = deployment.urls, CLUSTER_SIZE
        else:
            deployment = await stack.enter_async_context(NatsServer(store_dir=workdir / "store"))
            urls, replicas = [deployment.url], 1
        queue = asyncjobs.Queue(QUEUE_NAME, max_run_time=settings.max_run_time_s)
        client = await asyncjobs.connect(urls, queue=queue, replicas=replicas)
        stack.push_async_callback(_close, client)
        ledger = Ledger()
        pool = WorkerPool(
            urls,
            queue=QUEUE_NAME,
            max_run_time_s=settings.max_run_time_s,
            replicas=replicas,
            concurrency=settings.concurrency,
            workdir=workdir,
            ledger=ledger,
        )
        await stack.enter_async_context(pool)
        for _ in range(settings.workers):
            await pool.spawn()

        clock = monotonic_clock()
        timeline = Timeline(clock, cluster_size=CLUSTER_SIZE if scenario.cluster else 0)
        tracker = Tracker(client, clock=clock)
        producer = Producer(
            client,
            [asyncjobs.Task(TASK_TYPE, {"i": i}) for i in range(settings.tasks)],
            load_s=settings.load_s,
            deadline_s=settings.load_s + settings.outage_s + PRODUCER_GRACE_S,
            clock=clock,
            on_offer=tracker.expect,
        )
        producing = asyncio.create_task(producer.run(), name="faults-producer")
        run = Run(settings, client, pool, timeline, producing, outcome, deployment)
        everything = asyncio.Event()
        following = asyncio.create_task(tracker.follow(run.finished_by_handler, everything), name="faults-tracker")
        try:
            await scenario.script(run)
            await run.load_over()
            producing.result()  # a crashed producer fails the scenario
            everything.set()
            recovered = timeline.recovered_s if timeline.recovered_s is not None else clock()
            await tracker.settle(QUEUE_NAME, recovered + settings.recovery_window_s)
        finally:
            for task in (following, producing):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        leftovers = await tracker.leftovers()
        queue_info = None
        with contextlib.suppress(asyncjobs.AsyncJobsError):
            queue_info = await client.admin.queue_info(QUEUE_NAME)
        await pool.stop_all()  # so that the handler logs are complete
        ledger.refresh()
        outcome.worker_warnings = dict(pool.warnings().most_common(WARNINGS_SHOWN))
        summarize(
            outcome,
            timeline=timeline,
            producer=producer.stats,
            tracker=tracker,
            leftovers=leftovers,
            ledger=ledger,
            queue_info=queue_info,
            victim=run.victim.log if run.victim is not None else None,
            killed_at_ns=run.victim.killed_at_ns if run.victim is not None else None,
        )


# ---- the command line -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = FaultSettings()
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tasks", type=int, default=defaults.tasks, help="tasks per scenario (default %(default)s)")
    parser.add_argument(
        "--scenario",
        action="extend",
        nargs="+",
        choices=list(SCENARIOS),
        default=[],
        metavar="NAME",
        help=f"scenarios to run, default all: {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--load-seconds", type=float, default=defaults.load_s, help="spread the enqueues over this")
    parser.add_argument(
        "--recovery-window", type=float, default=defaults.recovery_window_s, help="seconds after the last fault"
    )
    parser.add_argument(
        "--max-run-time",
        type=float,
        default=defaults.max_run_time_s,
        help="the queue's max run time, also its ack wait (default %(default)s s); with the library's default of 300 "
        "an item that had to wait out its ack wait shows up as a recovery of minutes",
    )
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--markdown", type=Path, help="also write the report as Markdown here")
    parser.add_argument("--workdir", type=Path, help="keep handler logs, worker output and stores here")
    parser.add_argument("-v", "--verbose", action="store_true", help="show asyncjobs warnings of the producer")
    args = parser.parse_args(argv)
    if args.tasks < 3:
        parser.error("--tasks must be at least 3")
    if args.load_seconds <= 0 or args.recovery_window <= 0 or args.max_run_time <= 0:
        parser.error("--load-seconds, --recovery-window and --max-run-time must be positive")
    return args


def _code_version() -> str:
    """The git commit of the asyncjobs being measured, and whether its files differ from it; empty outside git."""
    package = Path(asyncjobs.__file__).parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(package), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(package), "status", "--porcelain", "--", "."], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f" at commit {commit}{' with uncommitted changes' if changed else ''}" if commit else ""


def _header(settings: FaultSettings) -> list[str]:
    return [
        f"- asyncjobs from {Path(asyncjobs.__file__).parent}{_code_version()}, nats-py {metadata.version('nats-py')}, "
        f"Python {sys.version.split()[0]}",
        f"- {settings.tasks} tasks per scenario enqueued over {settings.load_s:g} s; {settings.workers} worker "
        f"processes with concurrency {settings.concurrency}, handler sleeps 5 ms",
        f"- Queue {QUEUE_NAME} with max_run_time={settings.max_run_time_s:g} s (the ack wait: items held by a dead "
        f"worker come back after it); recovery window {settings.recovery_window_s:g} s",
    ]


async def run_all(names: Sequence[str], settings: FaultSettings) -> list[Outcome]:
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    outcomes = []
    for name in names:
        log.info("%s: starting", name)
        try:
            outcome = await run_scenario(name, settings)
        except Exception as exc:
            log.exception("%s: failed", name)
            outcome = Outcome(scenario=name, description=SCENARIOS[name].description, error=repr(exc))
        log.info("%s: done in %.0f s\n%s", name, outcome.wall_s, "\n".join(table([outcome])))
        outcomes.append(outcome)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    """Runs the scenarios; exits 1 when any lost, left behind or ran twice what it should not have."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("asyncjobs").setLevel(logging.WARNING if args.verbose else logging.CRITICAL)
    settings = FaultSettings(
        tasks=args.tasks,
        load_s=args.load_seconds,
        recovery_window_s=args.recovery_window,
        max_run_time_s=args.max_run_time,
        workdir=args.workdir,
    )
    when = datetime.now(UTC)
    try:
        outcomes = asyncio.run(run_all(args.scenario or list(SCENARIOS), settings))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; the worker processes and nats-servers were stopped", file=sys.stderr)
        return 130
    report = markdown(outcomes, _header(settings), when)
    print(report)
    if args.markdown is not None:
        args.markdown.write_text(report)
    if args.json is not None:
        args.json.write_text(to_json(outcomes, dataclasses.asdict(settings), when))
    return 0 if all(outcome.healthy for outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
