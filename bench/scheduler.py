"""Scheduler benchmark: fire lag of many schedules due together or spread over a minute, and failover gaps.

    python -m bench.scheduler [--same-minute N] [--spread N] [--failovers N] [--only NAME ...] [--markdown out.md]
                              [--write-docs]

Every scenario runs on its own fresh nats-server (loopback, file storage) and uses the real system clock.

- **same minute**: N schedules ``"<m> <h> * * *"`` all due at the next whole minute (the one after if less than
  ``--lead`` seconds remain), one in-process :class:`Scheduler`.
- **spread**: N schedules ``@every 60s`` whose ``created_at`` are spread over the 60 seconds of a minute, so N/60
  fall due at each whole second of the minute after; each fires once while measured.
- **fire lag** of a task: the JetStream time of the task's stored message in ``CHORIA_AJ_TASKS`` (the server's
  clock, the save done by ``enqueue``; read back with ``STREAM.MSG.GET``) minus the due instant. The server and the
  benchmark share the machine's clock. The benchmark's own objects are frozen out of the garbage collector
  (``gc.freeze``) before the scheduler starts, so its collections cost what a scheduler process of its own pays.
- **failover**: two ``python -m asyncjobs_scheduler`` processes and one ``@every 1s`` schedule; the leader gets
  SIGTERM (graceful) or SIGKILL (crash); due times passed while no scheduler led are fired late (a crash
  failover stays within the scheduler's 15 s grace, so no misfire policy applies). Handover: from
  the signal to the successor's leader-elected event. Worst lag: the latest any due time around the failover was
  stored (``stored - due``); a missing due time fails the run.
- **reference**: the same number of task-sized writes without a scheduler: raw nats-py publish with ack (512 in
  flight), ``client.enqueue_many``, and ``client.enqueue`` with 100 in flight (what the scheduler does per task).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import logging
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from nats.js.api import StorageType

import asyncjobs
from asyncjobs.server import NatsServer
from asyncjobs.wiretime import WireTime
from asyncjobs_scheduler import Schedule, Scheduler
from bench.common import PIPELINE_WINDOW, TASK_TYPE
from bench.raw import RAW_STREAM, RAW_SUBJECT, publish_many
from bench.report import SCHEDULER_BEGIN as BEGIN
from bench.report import SCHEDULER_END as END
from bench.report import write_section
from bench.sched_common import (
    NS_PER_MS,
    QUEUE,
    TARGETS_MS,
    Report,
    add_all,
    bounded,
    count_at_least,
    lag_summary,
    poll,
    stored_ns,
    unix_ns,
)
from bench.sched_failover import bench_failover

log = logging.getLogger("bench.scheduler")

DOCS: Final = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
SCENARIOS: Final = ("same-minute", "spread", "failover", "reference")


@contextlib.contextmanager
def _gc_pauses(full_ms: list[float]) -> Iterator[None]:
    """Log the garbage collector's pauses in the block, and put the full ones (ms) in ``full_ms``: a full
    collection stalls the scheduler's event loop."""
    pauses: list[tuple[int, float, float]] = []
    started: list[float] = [0.0]

    def track(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append((info["generation"], time.time(), (time.perf_counter() - started[0]) * 1000))

    gc.callbacks.append(track)
    try:
        yield
    finally:
        gc.callbacks.remove(track)
        full = [(at, ms) for generation, at, ms in pauses if generation == 2]
        full_ms.extend(ms for _, ms in full)
        log.info(
            "garbage collector: %d collections, %.0f ms in all; %d full ones: %s",
            len(pauses),
            sum(ms for _, _, ms in pauses),
            len(full),
            ", ".join(f"at :{datetime.fromtimestamp(at, UTC):%S.%f}"[:-3] + f" {ms:.0f} ms" for at, ms in full),
        )


@contextlib.contextmanager
def _profiled(path: Path | None) -> Iterator[None]:
    """cProfile the block into ``path`` (when given): the scheduler firing, not the set-up."""
    if path is None:
        yield
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        profiler.dump_stats(path)
        log.info("profile of the firing window written to %s", path)


async def _fire_and_measure(
    url: str, stored: list[Schedule], dues: list[datetime], last_due: datetime, profile: Path | None
) -> tuple[list[int], list[float]]:
    """Run one in-process scheduler until every schedule's task of its due time is stored; the lags in ns."""
    async with (
        await asyncjobs.connect(url, queue=QUEUE) as sched_client,
        await asyncjobs.connect(url, queue=QUEUE) as probe,
    ):
        scheduler = Scheduler(sched_client, name="bench-scheduler")
        # The benchmark's own objects (its copies of the schedules) out of the collector's way, so that its pauses
        # are those a scheduler process of its own would have.
        gc.collect()
        gc.freeze()
        full_gc_ms: list[float] = []
        running = asyncio.create_task(scheduler.run(), name="bench scheduler")
        try:

            async def ready() -> bool:
                if running.done():
                    running.result()
                return scheduler.is_leader and len(scheduler.schedules) == len(stored)

            started = time.perf_counter()
            await poll(ready, "a leading scheduler that knows every schedule")
            log.info("scheduler leads and knows %d schedules after %.1f s", len(stored), time.perf_counter() - started)
            if datetime.now(UTC) >= min(dues):
                raise RuntimeError("set-up overran the first due time: raise --lead")
            await asyncio.sleep(max(0.0, (min(dues) - datetime.now(UTC)).total_seconds() - 1.0))
            cpu = time.process_time()
            with _profiled(profile), _gc_pauses(full_gc_ms):
                await asyncio.sleep(max(0.0, (last_due - datetime.now(UTC)).total_seconds()))
                await poll(lambda: count_at_least(probe, len(stored)), f"{len(stored)} tasks stored")
            log.info("every task stored; process CPU while firing %.2f s", time.process_time() - cpu)
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            gc.unfreeze()
        ids = [schedule.task_id(due) for schedule, due in zip(stored, dues, strict=True)]
        when = await stored_ns(probe, ids)
    missing = [task_id for task_id in ids if task_id not in when]
    if missing:
        raise RuntimeError(f"{len(missing)} due times were not fired, e.g. {missing[0]}")
    return [when[task_id] - unix_ns(due) for task_id, due in zip(ids, dues, strict=True)], full_gc_ms


async def bench_same_minute(count: int, lead_s: float, report: Report, profile: Path | None = None) -> None:
    async with NatsServer() as server, await asyncjobs.connect(server.url, queue=QUEUE) as client:
        now = datetime.now(UTC)
        due = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        if (due - now).total_seconds() < lead_s:
            due += timedelta(minutes=1)
        spec = f"{due.minute} {due.hour} * * *"
        stored, add_s = await add_all(client, [Schedule(f"m{i:05d}", spec, TASK_TYPE, {"i": i}) for i in range(count)])
        log.info("same minute: %d schedules %r added in %.1f s, due %s", count, spec, add_s, due.isoformat())
        lags, _ = await _fire_and_measure(server.url, stored, [due] * count, due, profile)
    p50, p99, worst = lag_summary(lags)
    log.info("same minute: lag p50 %.1f ms, p99 %.1f ms, max %.1f ms", p50, p99, worst)
    report.add("same_add", f"add {count:,} schedules (100 in flight)", f"{add_s:.2f} s", f"{count / add_s:,.0f}/s")
    detail = f"p50 {p50:,.1f} ms, max {worst:,.1f} ms; target p99 < {TARGETS_MS['same_p99']:.0f} ms"
    report.add("same_p99", f"{count:,} due on the same minute: fire lag p99", f"{p99:,.1f} ms", detail, p99)
    report.figures["same_p50"], report.figures["same_max"] = p50, worst


async def bench_spread(count: int, lead_s: float, report: Report, profile: Path | None = None) -> None:
    async with NatsServer() as server, await asyncjobs.connect(server.url, queue=QUEUE) as client:
        first_due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=round(lead_s))
        base = first_due - timedelta(seconds=60)
        wanted = [
            Schedule(f"s{i:05d}", "@every 60s", TASK_TYPE, {"i": i}, created_at=base + timedelta(seconds=i % 60))
            for i in range(count)
        ]
        stored, add_s = await add_all(client, wanted)
        dues = [schedule.anchor + timedelta(seconds=60) for schedule in stored]
        if dues[0] != first_due:  # add must keep the given created_at, or this measures something else
            raise RuntimeError(f"Schedules.add changed created_at: first due {dues[0]} instead of {first_due}")
        log.info("spread: %d schedules added in %.1f s, due from %s over 60 s", count, add_s, first_due.isoformat())
        lags, full_gc_ms = await _fire_and_measure(server.url, stored, dues, max(dues), profile)
    p50, p99, worst = lag_summary(lags)
    log.info("spread: lag p50 %.1f ms, p99 %.1f ms, max %.1f ms", p50, p99, worst)
    by_second: dict[datetime, list[int]] = {}
    for due, lag in zip(dues, lags, strict=True):
        by_second.setdefault(due, []).append(lag)
    slowest = sorted((max(lags_ns) / NS_PER_MS, due) for due, lags_ns in by_second.items())
    log.info(
        "spread: the last task of each second's burst stored after median %.1f ms; slowest seconds %s",
        statistics.median(ms for ms, _ in slowest),
        ", ".join(f"{due:%S}s {ms:.0f} ms" for ms, due in slowest[-5:]),
    )
    per_s = count / 60
    if full_gc_ms:
        report.notes.append(
            f"- Spread: {len(full_gc_ms)} full garbage collections of the scheduler process during the minute, "
            f"{min(full_gc_ms):.0f} to {max(full_gc_ms):.0f} ms each; the bursts they hit are the slowest (the "
            f"last task of a burst is stored after median {statistics.median(ms for ms, _ in slowest):.0f} ms, "
            f"at worst {slowest[-1][0]:.0f} ms)."
        )
    detail = f"p50 {p50:,.1f} ms, max {worst:,.1f} ms; target p99 < {TARGETS_MS['spread_p99']:.0f} ms"
    report.add(
        "spread_p99",
        f"{count:,} spread over a minute ({per_s:,.0f} per second): fire lag p99",
        f"{p99:,.1f} ms",
        detail,
        p99,
    )
    report.figures["spread_p50"], report.figures["spread_max"] = p50, worst


# ---- reference --------------------------------------------------------------------------------------------------


async def bench_reference(count: int, report: Report) -> None:
    due = datetime.now(UTC).replace(microsecond=0)

    def tasks(prefix: str) -> list[asyncjobs.Task]:
        made = []
        for i in range(count):
            task = asyncjobs.Task(TASK_TYPE, {"i": i}, id=f"{prefix}{i:05d}:{due.strftime('%Y%m%dT%H%M%SZ')}")
            task.created_at = WireTime.from_datetime(due)
            made.append(task)
        return made

    async with NatsServer() as server, await asyncjobs.connect(server.url, queue=QUEUE) as client:
        js = client.nc.jetstream()
        await js.add_stream(name=RAW_STREAM, subjects=[RAW_SUBJECT + ">"], storage=StorageType.FILE)
        await publish_many(client.nc, RAW_SUBJECT, 200)  # warm up
        await client.enqueue_many(tasks("w"))
        started = time.perf_counter()
        await publish_many(client.nc, RAW_SUBJECT, count, offset=200)
        raw_s = time.perf_counter() - started
        batch = tasks("b")
        started = time.perf_counter()
        await client.enqueue_many(batch)
        many_s = time.perf_counter() - started
        single = tasks("e")
        started = time.perf_counter()
        await bounded(single, 100, client.enqueue)
        one_s = time.perf_counter() - started
    for key, name, seconds in (
        ("ref_raw", f"reference: {count:,} raw publishes with ack ({PIPELINE_WINDOW} in flight)", raw_s),
        ("ref_many", f"reference: enqueue_many of {count:,} tasks", many_s),
        ("ref_enqueue", f"reference: {count:,} x enqueue, 100 in flight", one_s),
    ):
        report.add(key, name, f"{seconds * 1000:,.0f} ms", f"{count / seconds:,.0f}/s", seconds * 1000)


# ---- report and command line ------------------------------------------------------------------------------------


def verdicts(report: Report) -> list[str]:
    lines = []
    for key, label in (
        ("same_p99", "same-minute p99"),
        ("spread_p99", "spread p99"),
        ("graceful_handover", "graceful handover (median)"),
    ):
        value = report.figures.get(key)
        if value is not None:
            met = "met" if value < TARGETS_MS[key] else "**MISSED**"
            lines.append(f"- {label}: {value:,.1f} ms, target < {TARGETS_MS[key]:,.0f} ms: {met}")
    return lines


def markdown(report: Report, args: argparse.Namespace, seconds: float) -> str:
    lines = [
        "## Scheduler",
        "",
        "Generated by `python -m bench.scheduler --write-docs` (`bench/scheduler.py`, also `./dev bench --scheduler`)"
        "; the lines between the markers are rewritten on every run.",
        "",
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, whole run {seconds:.0f} s, system clock",
        f"- {args.same_minute:,} schedules due on the same minute, {args.spread:,} spread over a minute, "
        f"{args.failovers} failovers of each kind; one scheduler, nats-server and benchmark on the same machine",
        "",
        "| Figure | Value | Detail |",
        "|---|---:|---|",
        *(f"| {name} | **{value}** | {detail} |" for name, value, detail in report.rows),
        "",
        "Targets (issue 7):",
        "",
        *verdicts(report),
        *report.notes,
        "",
        (__doc__ or "").split("\n\n", 2)[2].strip().replace("``", "`").replace(":class:", ""),
        "",
        "Reproduce: `python -m bench.scheduler --write-docs` (about 5 minutes; `--only same-minute spread`, "
        "`--same-minute N`, `--spread N`, `--failovers N`). Profile the firing windows: `--profile /tmp/sched.prof`.",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scheduler", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--same-minute", type=int, default=1000, help="schedules due on one minute (%(default)s)")
    parser.add_argument("--spread", type=int, default=10000, help="schedules spread over a minute (%(default)s)")
    parser.add_argument("--failovers", type=int, default=3, help="failovers of each kind (%(default)s)")
    parser.add_argument("--lead", type=float, default=None, help="seconds of set-up before the first due time")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SCENARIOS,
        default=list(SCENARIOS),
        metavar="NAME",
        help=f"scenarios to run, default all: {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--markdown", type=Path, help="also write the section as Markdown here")
    parser.add_argument("--write-docs", action="store_true", help=f"rewrite the Scheduler section of {DOCS.name}")
    parser.add_argument("--profile", type=Path, help="cProfile the firing windows into PATH-same / PATH-spread")
    parser.add_argument("-v", "--verbose", action="store_true", help="show asyncjobs warnings")
    args = parser.parse_args(argv)
    if min(args.same_minute, args.spread, args.failovers) < 1:
        parser.error("--same-minute, --spread and --failovers must be at least 1")
    return args


def _suffixed(path: Path | None, suffix: str) -> Path | None:
    return None if path is None else path.with_name(f"{path.stem}-{suffix}{path.suffix}")


async def run_all(args: argparse.Namespace) -> Report:
    report = Report()
    if "same-minute" in args.only:
        await bench_same_minute(
            args.same_minute, args.lead or 10 + args.same_minute / 200, report, _suffixed(args.profile, "same")
        )
    if "spread" in args.only:
        await bench_spread(args.spread, args.lead or 15 + args.spread / 500, report, _suffixed(args.profile, "spread"))
    if "failover" in args.only:
        await bench_failover(args.failovers, report)
    if "reference" in args.only:
        await bench_reference(args.same_minute, report)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("asyncjobs").setLevel(logging.WARNING if args.verbose else logging.ERROR)
    started = time.perf_counter()
    report = asyncio.run(run_all(args))
    section = markdown(report, args, time.perf_counter() - started)
    print(section)
    if args.markdown is not None:
        args.markdown.write_text(section + "\n")
    if args.write_docs:
        write_section(DOCS, section, BEGIN, END)
        print(f"\nwrote the Scheduler section of {DOCS}")
    return 0 if all("MISSED" not in line for line in verdicts(report)) else 1


if __name__ == "__main__":
    sys.exit(main())
