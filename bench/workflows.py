"""Workflows benchmark: release latency, submit time, fan-out/fan-in and chains end to end, against raw JetStream.

    python -m bench.workflows [--quick] [--only NAME ...] [--markdown out.md] [--write-docs] [--profile PATH]

Every scenario group runs on its own fresh nats-server (loopback, file storage). Processes: the worker is a
separate process (``python -m bench.wf_common``: ``client.run(router)``, concurrency 200, a no-op handler that
notes when it is entered); the releaser (``Workflows(client).run()``, default concurrency) runs in the benchmark
process on a connection of its own, beside the submitter's; nats-server is the third process. All share the
machine's cores and clock.

- **release latency**: chains run one after another; for each parent -> child pair, from the parent's
  ``result.completed_at`` (the worker's clock when its handler returned) to the moment the child's handler is
  entered (``time.time_ns()`` in the worker). It splits into: the worker storing the parent ``complete`` (to the
  JetStream time of that save), the ``complete`` event reaching the releaser (its ``on_step_event`` entered), the
  releaser deciding and saving the child ``new``, publishing its work item, and the worker starting the child.
  The releaser's timestamps come from wrapping its ``on_step_event`` and its client's ``staged.update``,
  ``staged.release`` and ``get_task`` in the benchmark process; the library itself is not changed.
- **chain end to end**: a 20-step chain, from calling ``submit`` until the run's ``complete`` event arrives.
- **submit**: the wall time of ``await flows.submit(wf)`` alone, for a fan-out/fan-in of N steps (one root,
  parallel middle steps, one fan-in; above 1,002 steps the middle is cut into groups of at most 1,000 with a
  fan-in each, since a step waits for at most 1,000 parents); no worker or releaser runs meanwhile. Beside it,
  ``client.enqueue_many`` of N plain tasks on the same server.
- **fan-out/fan-in end to end**: from calling ``submit`` of root -> 998 parallel -> fan-in until the run's
  ``complete`` event arrives, against ``client.enqueue_many`` of 1,000 no-op tasks until the 1,000th ``complete``
  task event arrives, on the same worker; the rounds alternate the two. Also: how long after the root's
  ``completed_at`` the releaser had published the last middle step's work item, how long after the last middle
  step's ``completed_at`` it published the fan-in's, and how many tasks it loaded in the run.
- **reference**: on the same kind of server, one at a time: a raw nats-py publish with ack into a file stream
  (round trip), the same message reaching a pull consumer that has requests waiting (one hop), and
  ``client.enqueue`` to the worker's handler being entered (the core's enqueue-to-start).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncjobs
from asyncjobs.server import NatsServer
from asyncjobs_workflows import Workflows
from asyncjobs_workflows.record import step_task_id
from bench.common import percentile
from bench.report import WORKFLOWS_BEGIN as BEGIN
from bench.report import WORKFLOWS_END as END
from bench.report import Machine, write_section
from bench.wf_common import (
    QUEUE,
    STEP_TIMEOUT_S,
    TARGETS_MS,
    TASK_TYPE,
    WORKER_CONCURRENCY,
    Report,
    WorkerProcess,
    chain,
    completed_ns,
    fan_out_in,
    ms,
    profiled,
    stored_ns,
)
from bench.wf_trace import Finished, Spans, raw_hops

log = logging.getLogger("bench.workflows")

DOCS: Final = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
SCENARIOS: Final = ("reference", "latency", "submit", "fanout")
REFERENCE_WARMUP: Final = 20


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What one benchmark run does."""

    chains: int
    """Chains run one after another for the release latency."""
    chain_length: int
    """Steps per latency chain: ``chains * (chain_length - 1)`` parent -> child pairs."""
    chain_steps: int
    """Steps of the end-to-end chain."""
    chain_runs: int
    submit_sizes: tuple[int, ...]
    submit_runs: int
    fanout_steps: int
    fanout_runs: int
    reference_samples: int

    @classmethod
    def of(cls, quick: bool) -> Settings:
        if quick:
            return cls(
                chains=2,
                chain_length=6,
                chain_steps=5,
                chain_runs=1,
                submit_sizes=(20, 50),
                submit_runs=1,
                fanout_steps=20,
                fanout_runs=1,
                reference_samples=20,
            )
        return cls(
            chains=10,
            chain_length=31,
            chain_steps=20,
            chain_runs=5,
            submit_sizes=(1_000, 10_000),
            submit_runs=3,
            fanout_steps=1_000,
            fanout_runs=3,
            reference_samples=300,
        )


@contextlib.asynccontextmanager
async def deployment(folder: Path, *, worker: bool = True, spans: Spans | None = None) -> AsyncIterator[Finished]:
    """A fresh nats-server, the worker process and the in-process releaser; yields the submitter's side."""
    async with NatsServer() as server, await asyncjobs.connect(server.url, queue=QUEUE) as client:
        flows = Workflows(client)
        async with contextlib.AsyncExitStack() as stack:
            proc = await stack.enter_async_context(WorkerProcess(server.url, folder)) if worker else None
            releasing = None
            if worker:
                releaser_client = await stack.enter_async_context(await asyncjobs.connect(server.url, queue=QUEUE))
                if spans is not None:
                    spans.attach(releaser_client)
                releasing = asyncio.create_task(Workflows(releaser_client).run(), name="bench-releaser")
            try:
                async with Finished(client, flows, proc, releasing) as finished:
                    yield finished
            finally:
                if releasing is not None:
                    releasing.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await releasing


# ---- scenarios --------------------------------------------------------------------------------------------------


async def bench_reference(settings: Settings, folder: Path, report: Report) -> None:
    async with deployment(folder) as side:
        round_trips, hops = await raw_hops(side.client, settings.reference_samples)
        sent: dict[str, int] = {}
        for _ in range(settings.reference_samples + REFERENCE_WARMUP):
            task = asyncjobs.Task(TASK_TYPE, None)
            await side.client.enqueue(task)
            sent[task.id] = task.created_at.unix_ns
            await side.started(task.id)
        starts = side.read_starts()
        latencies = [ms(starts[task_id] - at) for task_id, at in list(sent.items())[REFERENCE_WARMUP:]]
    for key, name, samples in (
        ("ref_rtt", "raw JetStream: publish with ack, round trip", round_trips),
        ("ref_hop", "raw JetStream: publish -> waiting pull consumer gets it (one hop)", hops),
        ("ref_enqueue", "asyncjobs: `enqueue` -> handler entered (worker process)", latencies),
    ):
        p50, p99 = percentile(samples, 50), percentile(samples, 99)
        report.add(key, name, f"{p50:,.2f} ms", f"p99 {p99:,.2f} ms, {len(samples)} one at a time", p50)


async def bench_latency(settings: Settings, folder: Path, report: Report, profile: Path | None) -> None:
    spans = Spans()
    with spans.tracing():
        async with deployment(folder, spans=spans) as side:
            await side.run(chain("warm-up", 3))
            pairs: list[tuple[str, str]] = []
            with profiled(profile, "latency"):
                for c in range(settings.chains):
                    wf = chain(f"latency-{c}", settings.chain_length)
                    run_id = (await side.run(wf)).run_id
                    names = list(wf.steps)
                    pairs += [(step_task_id(run_id, a), step_task_id(run_id, b)) for a, b in itertools.pairwise(names)]
            parents = [parent for parent, _ in pairs]
            done_ns, saved_ns = await completed_ns(side.client, parents), await stored_ns(side.client, parents)
            starts = side.read_starts()
            totals = [ms(starts[child] - done_ns[parent]) for parent, child in pairs]
            breakdown = spans.breakdown(pairs, done_ns, saved_ns, starts)
            e2e: list[float] = []
            for r in range(settings.chain_runs):
                e2e.append((await side.run(chain(f"chain-{r}", settings.chain_steps))).seconds * 1000)
    p50, p99 = percentile(totals, 50), percentile(totals, 99)
    log.info("release latency over %d pairs: p50 %.2f ms, p99 %.2f ms", len(totals), p50, p99)
    report.add(
        "release_p50",
        f"release latency p50 (parent completed -> child handler entered), {len(totals)} pairs",
        f"{p50:,.2f} ms",
        f"target < {TARGETS_MS['release_p50']:.0f} ms",
        p50,
    )
    report.add(
        "release_p99",
        "release latency p99",
        f"{p99:,.2f} ms",
        f"max {max(totals):,.2f} ms; target < {TARGETS_MS['release_p99']:.0f} ms",
        p99,
    )
    report.notes.append("Where the release latency goes (median of each part over the pairs, ms):")
    report.notes.append("")
    report.notes += [f"- {part}: {value:,.2f}" for part, value in breakdown]
    median = statistics.median(e2e)
    report.add(
        "chain",
        f"{settings.chain_steps}-step chain end to end (submit -> run complete), median of {len(e2e)}",
        f"{median:,.0f} ms",
        f"runs {', '.join(f'{v:,.0f}' for v in e2e)} ms; target < {TARGETS_MS['chain']:,.0f} ms",
        median,
    )


async def bench_submit(settings: Settings, folder: Path, report: Report) -> None:
    async with deployment(folder, worker=False) as side:
        await side.flows.submit(fan_out_in("warm-up", 10))
        await side.client.enqueue_many([asyncjobs.Task(TASK_TYPE, None) for _ in range(10)])
        for size in settings.submit_sizes:
            seconds, flat = [], []
            for r in range(settings.submit_runs):
                wf = fan_out_in(f"submit-{size}-{r}", size)
                started = time.perf_counter()
                await side.flows.submit(wf)
                seconds.append(time.perf_counter() - started)
                tasks = [asyncjobs.Task(TASK_TYPE, None) for _ in range(size)]
                started = time.perf_counter()
                await side.client.enqueue_many(tasks)
                flat.append(time.perf_counter() - started)
                log.info(
                    "submit of %d steps: %.2f s, enqueue_many of as many tasks %.2f s", size, seconds[-1], flat[-1]
                )
            median, reference = statistics.median(seconds), statistics.median(flat)
            report.add(
                f"submit_{size}",
                f"`submit` of a {size:,}-step fan-out/fan-in, median of {len(seconds)}",
                f"{median * 1000:,.0f} ms",
                f"{size / median:,.0f} steps/s; runs {', '.join(f'{s * 1000:,.0f}' for s in seconds)} ms; "
                f"`enqueue_many` of {size:,} tasks: {reference * 1000:,.0f} ms",
                median * 1000,
            )


async def bench_fanout(settings: Settings, folder: Path, report: Report, profile: Path | None) -> None:
    size = settings.fanout_steps
    flat_s: list[float] = []
    wf_s: list[float] = []
    reads: list[int] = []
    fan_out_ms: list[float] = []
    fan_in_lag_ms: list[float] = []
    spans = Spans()
    with spans.tracing():
        async with deployment(folder, spans=spans) as side:
            await side.flat(min(size, 100))
            await side.run(fan_out_in("warm-up", min(size, 100)))
            for r in range(settings.fanout_runs):
                flat_s.append(await side.flat(size))
                wf = fan_out_in(f"fanout-{r}", size)
                before = spans.reads
                with profiled(profile, f"fanout-{r}"):
                    ran = await side.run(wf)
                wf_s.append(ran.seconds)
                reads.append(spans.reads - before)
                middle = [step_task_id(ran.run_id, name) for name in wf.steps["fan_in"].after]
                done = await completed_ns(side.client, [step_task_id(ran.run_id, "root"), *middle])
                root_done = done.pop(step_task_id(ran.run_id, "root"))
                fan_out_ms.append(ms(max(spans.released[task_id] for task_id in middle) - root_done))
                fan_in_lag_ms.append(ms(spans.released[step_task_id(ran.run_id, "fan_in")] - max(done.values())))
                log.info(
                    "round %d: flat %.2f s, workflow %.2f s (%d task reads)", r + 1, flat_s[-1], wf_s[-1], reads[-1]
                )
    flat, flow = statistics.median(flat_s), statistics.median(wf_s)
    report.add(
        "fanout_wf",
        f"{size:,}-step fan-out/fan-in (root -> {size - 2:,} -> fan-in) end to end, median of {len(wf_s)}",
        f"{flow * 1000:,.0f} ms",
        f"{size / flow:,.0f} steps/s; runs {', '.join(f'{s * 1000:,.0f}' for s in wf_s)} ms",
        flow * 1000,
    )
    report.add(
        "fanout_flat",
        f"the same {size:,} no-op tasks flat (`enqueue_many`), end to end",
        f"{flat * 1000:,.0f} ms",
        f"{size / flat:,.0f} tasks/s; runs {', '.join(f'{s * 1000:,.0f}' for s in flat_s)} ms",
        flat * 1000,
    )
    report.add("fanout_ratio", "ratio workflow / flat", f"{flow / flat:,.2f} x", "", flow / flat)
    report.add(
        "fanout_release",
        f"the {size - 2:,} middle steps released (the last item published) after the root completed, median",
        f"{statistics.median(fan_out_ms):,.0f} ms",
        f"runs {', '.join(f'{v:,.0f}' for v in fan_out_ms)} ms",
        statistics.median(fan_out_ms),
    )
    report.add(
        "fanout_fan_in_lag",
        "fan-in released after its last parent completed (`completed_at`), median",
        f"{statistics.median(fan_in_lag_ms):,.0f} ms",
        f"runs {', '.join(f'{v:,.0f}' for v in fan_in_lag_ms)} ms",
        statistics.median(fan_in_lag_ms),
    )
    report.add(
        "fanout_reads",
        "tasks the releaser loaded during a fan-out/fan-in run, median",
        f"{statistics.median(reads):,.0f}",
        f"{statistics.median(reads) / size:,.1f} per step; runs {', '.join(f'{v:,}' for v in reads)}",
        statistics.median(reads),
    )


# ---- report and command line ------------------------------------------------------------------------------------


def verdicts(report: Report) -> list[str]:
    lines = []
    for key, label in (("release_p50", "release p50"), ("release_p99", "release p99"), ("chain", "chain end to end")):
        value = report.figures.get(key)
        if value is not None:
            met = "met" if value < TARGETS_MS[key] else "**MISSED**"
            lines.append(f"- {label}: {value:,.2f} ms, target < {TARGETS_MS[key]:,.0f} ms: {met}")
    return lines


def markdown(report: Report, settings: Settings, seconds: float) -> str:
    machine = Machine.describe()
    lines = [
        "## Workflows",
        "",
        "Generated by `python -m bench.workflows --write-docs` (`bench/workflows.py`, also `./dev bench --workflows`)"
        "; the lines between the markers are rewritten on every run.",
        "",
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, whole run {seconds:.0f} s",
        f"- Machine: {machine.cores} cores, {machine.cpu}, {machine.platform}; Python {machine.python}, "
        f"nats-py {machine.nats_py}, {machine.nats_server}",
        f"- Worker: a separate process, concurrency {WORKER_CONCURRENCY}; releaser: `Workflows(client).run()` in the "
        "benchmark process (default concurrency); nats-server, worker and releaser share the machine",
        "",
        "| Figure | Value | Detail |",
        "|---|---:|---|",
        *(f"| {name} | **{value}** | {detail} |" for name, value, detail in report.rows),
        "",
        *(["Targets:", "", *verdicts(report), ""] if verdicts(report) else []),
        *report.notes,
        "",
        "What each figure measures:",
        "",
        (__doc__ or "").split("\n\n", 2)[2].strip().replace("``", "`"),
        "",
        "Reproduce: `./dev bench --workflows` (under a minute; `python -m bench.workflows --only latency fanout`, "
        "`--quick`). Profile the releaser: `--profile /tmp/wf.prof`.",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.workflows", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run with tiny sizes (seconds)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SCENARIOS,
        default=list(SCENARIOS),
        metavar="NAME",
        help=f"scenario groups to run, default all: {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--markdown", type=Path, help="also write the section as Markdown here")
    parser.add_argument("--write-docs", action="store_true", help=f"rewrite the Workflows section of {DOCS.name}")
    parser.add_argument("--profile", type=Path, help="cProfile this process in the latency and fan-out windows")
    parser.add_argument("-v", "--verbose", action="store_true", help="show asyncjobs warnings")
    return parser.parse_args(argv)


async def run_all(args: argparse.Namespace) -> Report:
    settings = Settings.of(args.quick)
    report = Report()
    with tempfile.TemporaryDirectory(prefix="bench-wf-") as tmp:
        for name in SCENARIOS:
            if name not in args.only:
                continue
            started = time.perf_counter()
            folder = Path(tmp) / name
            folder.mkdir()
            async with asyncio.timeout(20 * STEP_TIMEOUT_S):
                if name == "reference":
                    await bench_reference(settings, folder, report)
                elif name == "latency":
                    await bench_latency(settings, folder, report, args.profile)
                elif name == "submit":
                    await bench_submit(settings, folder, report)
                else:
                    await bench_fanout(settings, folder, report, args.profile)
            log.info("%s: %.1f s on a fresh nats-server", name, time.perf_counter() - started)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("asyncjobs").setLevel(logging.WARNING if args.verbose else logging.ERROR)
    started = time.perf_counter()
    report = asyncio.run(run_all(args))
    section = markdown(report, Settings.of(args.quick), time.perf_counter() - started)
    print(section)
    if args.markdown is not None:
        args.markdown.write_text(section + "\n")
    if args.write_docs:
        write_section(DOCS, section, BEGIN, END)
        print(f"\nwrote the Workflows section of {DOCS}")
    return 0 if all("MISSED" not in line for line in verdicts(report)) else 1


if __name__ == "__main__":
    sys.exit(main())
