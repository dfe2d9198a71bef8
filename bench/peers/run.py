"""Benchmark asyncjobs against other Python job queues: ``./dev bench --peers [--quick] [--systems a,b]``.

Each system (asyncjobs, Dramatiq, RQ, Celery, arq, SAQ, taskiq-nats) is installed into its own virtualenv and
driven through its adapter, ``bench/peers/adapters/peer_<name>.py``, which implements one command-line contract:

- ``enqueue --n N`` and ``enqueue-batch --n N`` (the bulk API, or ``{"unsupported": true}``): print
  ``{"enqueued": N, "seconds": S}``, the wall time of the enqueue loop;
- ``worker --processes P --concurrency C`` (0: the system's default): start the system's own worker command,
  print ``{"ready": true, "concurrency": ...}``, run until SIGTERM;
- ``latency --rate R --seconds S``: enqueue at R tasks/s, payload ``{"i": i, "t": time.time_ns()}``; print
  ``{"sent": n}``.

Every command also takes ``--redis URL --nats URL --queue NAME --counter KEY``; the handler INCRs the counter in
Redis and, for a payload with ``"t"``, RPUSHes its latency in ns to ``<counter>:lat``. The figures are printed,
saved to ``.bench/peers-results.json`` and, after a full run, written to the peers section of
``docs/performance.md`` with the sweep plotted to ``docs/peers-throughput.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from asyncjobs.server import NatsServer
from bench.common import percentile
from bench.peers import env, report
from bench.peers.env import EnvError, RedisServer, Resp, WorkerProcess
from bench.peers.report import Results, SystemResults

log = logging.getLogger("bench.peers")

SYSTEMS: Final = ("asyncjobs", "dramatiq", "rq", "celery", "arq", "saq", "taskiq_nats")
NATS_SYSTEMS: Final = frozenset({"asyncjobs", "taskiq_nats"})
PROCESSES: Final = 2
HIGH_CONCURRENCY: Final = 100
"""asyncjobs is drained at its default concurrency and at this one."""
WARMUP: Final = 50
"""Tasks run before a latency or steady-state measurement, so the workers are consuming."""
SETTLE_S: Final = 1.0
POLL_S: Final = 0.005
RSS_EVERY_S: Final = 0.25
RESULTS: Final = env.ROOT / ".bench" / "peers-results.json"
LOGS: Final = env.ROOT / ".bench" / "logs"


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What one run measures."""

    tasks: int
    runs: int
    latency_rate: float
    latency_seconds: float
    sweep: tuple[int, ...]
    sweep_tasks: int

    def timeout_s(self, tasks: int) -> float:
        """A bound on one enqueue or drain of ``tasks``: generous (50 tasks/s), but a stall cannot hang the run."""
        return 60.0 + tasks / 50


@dataclass(frozen=True)
class Span:
    """A stretch of processing seen by polling the counter: from the first task done to the target."""

    start: float
    first_count: int
    end: float
    target: int
    peak: env.Memory
    """The worker command's memory at its highest sample."""
    worker_cpu_s: float
    """CPU time of the worker command's processes over the span."""
    server_cpu_s: float
    """CPU time of the servers (Redis, and nats-server for a NATS system) over the span."""

    @property
    def rate(self) -> float:
        done, seconds = self.target - self.first_count, self.end - self.start
        return done / seconds if done > 0 and seconds > 0 else float("nan")

    @property
    def worker_us_per_task(self) -> float:
        return self._per_task_us(self.worker_cpu_s)

    @property
    def server_us_per_task(self) -> float:
        return self._per_task_us(self.server_cpu_s)

    def _per_task_us(self, cpu_s: float) -> float:
        done = self.target - self.first_count
        return cpu_s / done * 1e6 if done > 0 else float("nan")


class Bench:
    """One system's measurements on a Redis server and (for NATS systems) a nats-server."""

    def __init__(self, name: str, python: Path, redis: RedisServer, resp: Resp, plan: Plan) -> None:
        self.name = name
        self.python = python
        self.redis = redis
        self.resp = resp
        self.plan = plan
        self.nats_url = "nats://127.0.0.1:4222"
        self._nats: NatsServer | None = None
        self._env = env.clean_env(python)
        self._serial = 0

    async def fresh(self, label: str) -> tuple[str, str]:
        """A new queue name and counter key, on an empty Redis (and a new nats-server for a NATS system, as a
        flushed Redis for the others: no step runs on the tasks an earlier one left in the store)."""
        await self.resp.command("FLUSHALL")
        if self.name in NATS_SYSTEMS:
            await self.close()
            self._nats = NatsServer()
            await self._nats.start()
            self.nats_url = self._nats.url
        self._serial += 1
        queue = f"pb_{label}_{self._serial}"
        return queue, f"pb:{queue}"

    def server_cpu_seconds(self) -> float:
        """CPU time used so far by Redis and, for a NATS system, by its nats-server."""
        pids = [self.redis.pid] + ([self._nats.pid] if self._nats is not None and self._nats.pid else [])
        return sum(env.cpu_seconds(pid) for pid in pids)

    async def close(self) -> None:
        if self._nats is not None:
            await self._nats.stop()
            self._nats = None

    def _argv(self, command: str, queue: str, counter: str, **options: float) -> list[str]:
        argv = [str(self.python), str(env.adapter_path(self.name)), command, "--redis", self.redis.url]
        argv += ["--nats", self.nats_url, "--queue", queue, "--counter", counter]
        for key, value in options.items():
            argv += [f"--{key}", f"{value:g}" if isinstance(value, float) else str(value)]
        return argv

    async def command(self, command: str, queue: str, counter: str, timeout_s: float, **options: float) -> Any:
        return await env.run_json(self._argv(command, queue, counter, **options), env=self._env, timeout_s=timeout_s)

    async def enqueue(self, queue: str, counter: str, n: int, *, batch: bool = False) -> float | None:
        """Enqueue ``n`` tasks; the rate, or None when the bulk API is unsupported."""
        out = await self.command("enqueue-batch" if batch else "enqueue", queue, counter, self.plan.timeout_s(n), n=n)
        return None if out.get("unsupported") else float(out["enqueued"]) / float(out["seconds"])

    def worker(self, queue: str, counter: str, concurrency: int) -> WorkerProcess:
        LOGS.mkdir(parents=True, exist_ok=True)
        argv = self._argv("worker", queue, counter, processes=PROCESSES, concurrency=concurrency)
        return WorkerProcess(argv, self._env, LOGS / f"{self.name}.log")

    async def until(self, counter: str, target: int, worker: WorkerProcess, *, base: int = 0) -> Span:
        """Poll the counter until it reaches ``target``, sampling the worker's RSS on the way, and the CPU time of
        the workers and servers from the first task done to the last.

        Raises:
            EnvError: the worker exited, or the count stalled past the plan's bound.
        """
        deadline = time.monotonic() + self.plan.timeout_s(target - base)
        first: tuple[float, int] | None = None
        peak, next_rss = env.Memory(0, 0), 0.0
        cpu = (0.0, 0.0)
        while True:
            now = time.perf_counter()
            count = await self.resp.count(counter)
            if first is None and count > base:
                first, cpu = (now, count), (worker.cpu_seconds(), self.server_cpu_seconds())
            if count >= target and first is not None:
                worker_cpu, server_cpu = worker.cpu_seconds() - cpu[0], self.server_cpu_seconds() - cpu[1]
                return Span(first[0], first[1], now, target, peak, worker_cpu, server_cpu)
            if worker.returncode is not None:
                raise EnvError(f"the worker exited ({worker.returncode}) at {count} of {target} tasks")
            if time.monotonic() > deadline:
                raise EnvError(f"stalled at {count} of {target} tasks")
            if now >= next_rss:
                memory = worker.memory()
                peak = env.Memory(max(peak.rss, memory.rss), max(peak.pss, memory.pss))
                next_rss = now + RSS_EVERY_S
            await asyncio.sleep(POLL_S)

    async def drain(self, queue: str, counter: str, n: int, concurrency: int) -> tuple[Span, str]:
        """Start the workers on a filled queue and time them until ``n`` tasks are done."""
        async with self.worker(queue, counter, concurrency) as worker:
            return await self.until(counter, n, worker), str(worker.ready.get("concurrency", ""))

    async def warm(self, queue: str, counter: str, worker: WorkerProcess) -> None:
        await self.enqueue(queue, counter, WARMUP)
        await self.until(counter, WARMUP, worker)

    async def latency(self, queue: str, counter: str) -> tuple[float, float]:
        """Enqueue at the plan's rate while the workers run; p50 and p99 of enqueue-to-start in ms."""
        plan, key = self.plan, counter + ":lat"
        out = await self.command(
            "latency", queue, counter, plan.latency_seconds + 60, rate=plan.latency_rate, seconds=plan.latency_seconds
        )
        deadline = time.monotonic() + 30
        while await self.resp.command("LLEN", key) < out["sent"]:
            if time.monotonic() > deadline:
                raise EnvError(f"only {await self.resp.command('LLEN', key)} of {out['sent']} latency samples came")
            await asyncio.sleep(0.05)
        samples = [int(raw) / 1e6 for raw in await self.resp.command("LRANGE", key, 0, -1)]
        return percentile(samples, 50), percentile(samples, 99)

    async def steady(self, queue: str, counter: str, worker: WorkerProcess) -> Span:
        """Two producers enqueue the plan's tasks while the (warmed-up) workers run."""
        n, base = self.plan.tasks, await self.resp.count(counter)
        async with asyncio.TaskGroup() as group:  # a failing producer cancels the wait, and the other way round
            span = group.create_task(self.until(counter, base + n, worker, base=base))
            group.create_task(self.enqueue(queue, counter, n // 2))
            group.create_task(self.enqueue(queue, counter, n - n // 2))
        return span.result()


async def step(system: SystemResults, what: str, work: Any) -> Any:
    """Await one measurement; a failure becomes a note on the system instead of ending the run."""
    try:
        return await work
    except Exception as exc:  # a peer failing one step must not cost the other figures: note it, go on
        log.warning("%s failed: %s", what, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        while isinstance(exc, ExceptionGroup):
            exc = exc.exceptions[0]
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        note = f"{what} failed: {lines[0] if len(lines) == 1 else f'{lines[0]} ... {lines[-1]}'}"
        if note not in system.notes:  # the same failure in every repetition is told once
            system.notes.append(note)
        return None


async def one_round(bench: Bench, system: SystemResults) -> None:
    """Every figure of one repetition, for one system."""
    n, peaks = bench.plan.tasks, list[env.Memory]()
    queue, counter = await bench.fresh("drain")
    rate = await step(system, "enqueue", bench.enqueue(queue, counter, n))
    if rate is not None:
        system.add("enqueue", rate)
        drained = await step(system, "drain", bench.drain(queue, counter, n, 0))
        if drained is not None:
            span = drained[0]
            system.add("drain", span.rate)
            system.add("cpu_worker", span.worker_us_per_task)
            system.add("cpu_server", span.server_us_per_task)
            peaks.append(span.peak)
            system.default_concurrency = drained[1]
    queue, counter = await bench.fresh("batch")
    rate = await step(system, "bulk enqueue", bench.enqueue(queue, counter, n, batch=True))
    if rate is not None:
        system.add("enqueue_batch", rate)
    if bench.name == "asyncjobs":
        if rate is None:
            await step(system, "enqueue", bench.enqueue(queue, counter, n))
        drained = await step(system, "drain at 100", bench.drain(queue, counter, n, HIGH_CONCURRENCY))
        if drained is not None:
            system.add("drain_c100", drained[0].rate)
    queue, counter = await bench.fresh("steady")
    steady_peak = await step(system, "idle, latency and steady state", steady_stage(bench, system, queue, counter))
    if steady_peak is not None:
        peaks.append(steady_peak)
    if peaks:
        system.add("rss_load", max(peak.rss for peak in peaks) / 2**20)
        system.add("pss_load", max(peak.pss for peak in peaks) / 2**20)


async def steady_stage(bench: Bench, system: SystemResults, queue: str, counter: str) -> env.Memory | None:
    """Idle memory, latency and steady state on one running worker; returns the memory peak under load."""
    async with bench.worker(queue, counter, 0) as worker:
        await bench.warm(queue, counter, worker)
        await asyncio.sleep(SETTLE_S)
        idle = worker.memory()
        system.add("rss_idle", idle.rss / 2**20)
        system.add("pss_idle", idle.pss / 2**20)
        latency = await step(system, "latency", bench.latency(queue, counter))
        if latency is not None:
            system.add("lat_p50", latency[0])
            system.add("lat_p99", latency[1])
        span: Span | None = await step(system, "steady state", bench.steady(queue, counter, worker))
        if span is None:
            return None
        system.add("steady", span.rate)
        return span.peak


async def sweep(bench: Bench, system: SystemResults) -> None:
    """Drain rate at each concurrency level of the plan (one level only for a system without the knob)."""
    n, batch = bench.plan.sweep_tasks, "enqueue_batch" in system.figures
    for level in bench.plan.sweep:
        queue, counter = await bench.fresh("sweep")
        filled = await step(system, f"sweep fill {level}", bench.enqueue(queue, counter, n, batch=batch))
        drained = (
            None if filled is None else await step(system, f"sweep {level}", bench.drain(queue, counter, n, level))
        )
        if drained is None:
            continue
        span, concurrency = drained
        if concurrency == "n/a":
            system.sweep["n/a"] = span.rate
            return
        system.sweep[str(level)] = span.rate
        log.info("%s sweep: concurrency %d, %.0f tasks/s", bench.name, level, span.rate)


async def run_all(
    pythons: dict[str, Path],
    plan: Plan,
    results: Results,
    redis_binary: str,
    with_sweep: bool,
    save: Callable[[], None],
) -> None:
    """Every repetition of every system, then the sweep; ``save`` is called after each, so a run cut short keeps
    what it measured (``--report-only`` writes it)."""
    async with RedisServer(redis_binary) as redis:
        resp = await Resp.connect(redis.port)
        try:
            benches = {name: Bench(name, python, redis, resp, plan) for name, python in pythons.items()}
            for run in range(1, plan.runs + 1):  # repetitions interleave the systems, so drift hits all alike
                for name, bench in benches.items():
                    started = time.perf_counter()
                    try:
                        await step(results.system(name), f"run {run}", one_round(bench, results.system(name)))
                    finally:
                        await bench.close()
                    save()
                    log.info("run %d/%d, %s: %.0fs", run, plan.runs, name, time.perf_counter() - started)
            for name, bench in benches.items() if with_sweep else ():
                try:
                    await step(results.system(name), "sweep", sweep(bench, results.system(name)))
                finally:
                    await bench.close()
                save()
        finally:
            await resp.close()


def prepare(names: list[str], current: set[str], results: Results) -> dict[str, Path]:
    """Each system's Python, its virtualenv made first; a system that cannot be set up gets a note instead."""
    pythons: dict[str, Path] = {}
    for name in names:
        system, path = results.system(name), env.adapter_path(name)
        if not path.exists():
            system.notes.append(f"skipped: no adapter {path.relative_to(env.ROOT)}")
            continue
        try:
            system.requirements = env.read_requirements(path)
            if name in current:
                pythons[name] = Path(sys.executable)
            else:
                log.info("%s: virtualenv %s", name, env.VENVS / name)
                pythons[name] = env.ensure_venv(name, system.requirements)
        except EnvError as exc:
            system.notes.append(f"skipped: {str(exc).splitlines()[0]}")
            log.warning("%s skipped: %s", name, exc)
    return pythons


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py --peers", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 tasks, one repetition, short runs; no docs")
    parser.add_argument("--tasks", type=int, help="tasks per measured run (default 20000, quick 500)")
    parser.add_argument("--runs", type=int, help="repetitions (default 3, quick 1)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated systems (default: all)")
    parser.add_argument("--no-sweep", action="store_true", help="skip the concurrency sweep and its plot")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite the docs section and plot")
    parser.add_argument("--no-install", action="store_true", help="never apt-get install redis-server")
    parser.add_argument(
        "--current-python",
        default="",
        metavar="SYSTEMS",
        help="run these systems with this Python instead of a virtualenv (the smoke test: asyncjobs)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to save the figures as JSON")
    parser.add_argument("--report-only", action="store_true", help="rewrite the docs from --results, measure nothing")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    args.systems = [name.strip() for name in args.systems.split(",") if name.strip()]
    args.current_python = {name.strip() for name in args.current_python.split(",") if name.strip()}
    unknown = [name for name in [*args.systems, *args.current_python] if name not in SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}: choose from {', '.join(SYSTEMS)}")
    for option in ("tasks", "runs"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            parser.error(f"--{option} must be at least 1")
    return args


def plan_from(args: argparse.Namespace) -> Plan:
    tasks = args.tasks or (500 if args.quick else 20_000)
    return Plan(
        tasks=tasks,
        runs=args.runs or (1 if args.quick else 3),
        latency_rate=100.0,
        latency_seconds=2.0 if args.quick else 10.0,
        sweep=(10, 100) if args.quick else (1, 10, 50, 100, 200),
        sweep_tasks=max(100, tasks // 4),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    if not args.verbose:
        logging.getLogger("asyncjobs").setLevel(logging.WARNING)
    if args.report_only:
        results = Results.load(args.results)
        print(report.console(results))
        report.write_docs(results, with_plot=True)
        return 0
    plan = plan_from(args)
    shutil.rmtree(LOGS, ignore_errors=True)  # the workers' logs of this run only
    results = Results(plan=asdict(plan))
    started = time.perf_counter()
    try:
        redis_binary = env.ensure_redis_server(install=not args.no_install)
    except EnvError as exc:
        print(f"bench --peers: every system needs Redis (the counter): {exc}", file=sys.stderr)
        return 1
    pythons = prepare(args.systems, args.current_python, results)
    results.machine = report.machine()

    def save() -> None:
        results.seconds = time.perf_counter() - started
        results.save(args.results)

    asyncio.run(run_all(pythons, plan, results, redis_binary, with_sweep=not args.no_sweep, save=save))
    save()
    print(report.console(results))
    print(f"\nsaved {args.results}")
    if not (args.quick or args.no_write):
        report.write_docs(results, with_plot=not args.no_sweep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
