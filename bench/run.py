"""Benchmark asyncjobs against the raw JetStream limit and a hand-made task cycle: ``./dev bench [--quick]``.

Each scenario group runs on its own fresh nats-server (loopback, temporary file store). The figures are printed and,
after a full run, written to ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

if __package__ in (None, ""):  # run as a script (`python bench/run.py`): make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asyncjobs.server import NatsServer
from bench.common import Results, Settings
from bench.handmade import bench_handmade
from bench.library import bench_latency, bench_library
from bench.raw import bench_publish, bench_pull
from bench.report import Machine, console, write_markdown

log = logging.getLogger("bench")

DOCS: Final = Path(__file__).resolve().parent.parent / "docs" / "performance.md"

Scenario = Callable[[str, Settings, Results], Awaitable[None]]
SCENARIOS: Final[dict[str, Scenario]] = {
    "publish": bench_publish,
    "pull": bench_pull,
    "handmade": bench_handmade,
    "library": bench_library,
    "latency": bench_latency,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=None, help="tasks per measured run (default 5000, quick 500)")
    parser.add_argument("--runs", type=int, default=None, help="measured runs per scenario (default 5, quick 1)")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run: 500 tasks, one run each")
    parser.add_argument("--no-write", action="store_true", help=f"do not rewrite {DOCS.relative_to(DOCS.parents[1])}")
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated scenario groups to run ({', '.join(SCENARIOS)}); implies --no-write",
    )
    parser.add_argument(
        "--scheduler",
        action="store_true",
        help="run the scheduler benchmark instead (python -m bench.scheduler, about 5 minutes); rewrites only its "
        "section of the report unless --no-write",
    )
    parser.add_argument(
        "--workflows",
        action="store_true",
        help="run the workflows benchmark instead (python -m bench.workflows, under a minute); rewrites only its "
        "section of the report unless --no-write or --quick",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="run the peer benchmark instead (bench/peers/run.py: asyncjobs against Celery, Dramatiq, RQ, arq, SAQ, "
        "taskiq-nats; about 30 minutes); the other arguments go to it, see --peers --help",
    )
    parser.add_argument(
        "--sizing",
        action="store_true",
        help="run the sizing benchmark instead (python -m bench.sizing: tasks/s by processes and concurrency for "
        "I/O- and CPU-bound handlers, a few minutes); the other arguments go to it, see --sizing --help",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log asyncjobs debug output too")
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in only if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}: choose from {', '.join(SCENARIOS)}")
    args.only = only
    if args.tasks is not None and args.tasks < 1:
        parser.error("--tasks must be at least 1")
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    tasks = args.tasks if args.tasks is not None else (500 if args.quick else 5000)
    runs = args.runs if args.runs is not None else (1 if args.quick else 5)
    return Settings(
        tasks=tasks,
        runs=runs,
        warmup=min(500, max(50, tasks // 10)),
        sequential_tasks=min(tasks, 2000),
        latency_rate=500.0,
        latency_seconds=1.0 if args.quick else 3.0,
    )


async def run_all(names: list[str], settings: Settings) -> Results:
    """Run every scenario once per round, each time on a fresh server; rounds interleave the scenarios so that a
    slow drift of the machine (other processes, thermal limits) affects all of them alike."""
    results = Results()
    for run in range(1, settings.runs + 1):
        for name in names:
            started = time.perf_counter()
            # Every step has its own bound too; this one catches a stall in set-up or warm-up.
            async with NatsServer() as server, asyncio.timeout(3 * settings.scenario_timeout_s):
                await SCENARIOS[name](server.url, settings, results)
            log.info(
                "run %d/%d, %s: %.1fs on a fresh nats-server", run, settings.runs, name, time.perf_counter() - started
            )
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--peers" in argv:  # its own options (--systems, --no-sweep, ...): hand them over before parsing ours
        from bench.peers import run as peers

        return peers.main([arg for arg in argv if arg != "--peers"])
    if "--sizing" in argv:  # its own options (--io-ms, --cpu-processes, ...) likewise
        from bench import sizing

        return sizing.main([arg for arg in argv if arg != "--sizing"])
    args = parse_args(argv)
    if args.scheduler:
        from bench import scheduler  # imports asyncjobs_scheduler, which the other scenarios do not need

        return scheduler.main([*([] if args.no_write else ["--write-docs"]), *(["-v"] if args.verbose else [])])
    if args.workflows:
        from bench import workflows  # imports asyncjobs_workflows, which the other scenarios do not need

        write = [] if args.no_write or args.quick else ["--write-docs"]
        return workflows.main([*write, *(["--quick"] if args.quick else []), *(["-v"] if args.verbose else [])])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    if not args.verbose:
        logging.getLogger("asyncjobs").setLevel(logging.WARNING)
    settings = settings_from(args)
    names = args.only or list(SCENARIOS)
    started = time.perf_counter()
    results = asyncio.run(run_all(names, settings))
    seconds = time.perf_counter() - started
    machine = Machine.describe()
    print(console(results, machine, settings, seconds))
    if args.no_write or args.only:
        return 0
    write_markdown(DOCS, results, machine, settings, seconds)
    print(f"\nwrote {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
